"""Train, evaluate and export PaddleDetection configs that use the Pale backbone.

Everything here hands off to ``ppdet.engine.Trainer``; this module only makes sure
that the backbone is registered (and the Paddle 3.x fixes the installed ppdet needs are
in place) before the config is read, that checkpoints are looked for where the
installed ppdet writes them, and that bad settings fail with a clear message
before a long run starts.
"""
import argparse
import logging
import os
import types

import paddle
import yaml
from ppdet.core import workspace
from ppdet.core.config.schema import SchemaDict
from ppdet.engine import Trainer, init_parallel_env
from ppdet.engine.callbacks import Callback, Checkpointer
from ppdet.utils.checkpoint import is_url
from ppdet.utils.download import get_weights_path

from ..utils.config import ConfigError, parse_override
from ..utils.io import (add_mismatch_flag, load_weights, refuse_code, resolve_weights_path,
                        strip_suffix)
from . import ppdet as _registers_backbone  # noqa: F401  (registers, installs fixes)

__all__ = ["parse_overrides", "load_config", "check_datasets", "load_detector_weights",
           "build_trainer", "checkpoint_prefix", "train", "evaluate", "export",
           "EXPORTED_FILES", "train_main", "eval_main", "export_main"]

# what ``Trainer.export`` writes into ``output_dir/<config name>/``
EXPORTED_FILES = ("model.json", "model.pdiparams", "infer_cfg.yml")

logger = logging.getLogger("paddle_pale")


def parse_overrides(options):
    """``["A.b=1", "c=[2, 3]"]`` (the ``-o`` options of PaddleDetection's tools) ->
    ``{"A": {"b": 1}, "c": [2, 3]}``; values are read as YAML."""
    overrides = {}
    for option in options or ():
        try:
            keys, value = parse_override(option)
        except ConfigError as error:
            raise ValueError(f"override {option!r} is not KEY=VALUE (e.g. epoch=24): "
                             f"{error}") from error
        *parents, leaf = keys
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {option!r} conflicts with an earlier one")
        node[leaf] = value
    return overrides


def _merge(target, overrides, where=""):
    """Merge nested ``overrides`` into ``target``; unlike ppdet's ``merge_config``
    it sets attributes of objects built from ``!Tags`` (datasets) instead of
    replacing the object with a dict, so ``TrainDataset.dataset_dir=...`` works."""
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        current = target.get(key) if isinstance(target, dict) else getattr(target, key, None)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value, path)
        elif isinstance(value, dict) and hasattr(current, "__dict__"):
            for attr in value:
                if not hasattr(current, attr):
                    raise KeyError(f"{path} ({type(current).__name__}) has no setting "
                                   f"{attr!r}")
            _merge(current, value, path)
        elif isinstance(target, dict):
            target[key] = value
        else:
            setattr(target, key, value)


def _reset_workspace():
    """Forget the values of a previously loaded config: ppdet merges every config
    into one process-wide dict, so a second load would inherit keys the first one
    set and the second does not (``PaleTransformer.depths``, say)."""
    for key in list(workspace.global_config):
        value = workspace.global_config[key]
        if isinstance(value, SchemaDict):
            dict.clear(value)  # registered module: keep its schema, drop set values
        else:
            del workspace.global_config[key]


def load_config(path, overrides=None):
    """Read a ppdet config naming ``PaleTransformer`` and merge ``overrides``: a nested
    dict (as ppdet's ``-o A.b=c`` parser gives) or a list of ``"A.b=c"`` strings (the
    tools' ``-o`` options, read by :func:`parse_overrides`).

    Returns ppdet's global config (ppdet keeps one per process).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no detection config at {path!r}")
    _reset_workspace()
    cfg = workspace.load_config(path)
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    elif overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict or a list of 'KEY=VALUE' strings, got "
                        f"{type(overrides).__name__}")
    _merge(cfg, overrides or {})
    for key in ("architecture", "num_classes"):
        if key not in cfg:
            raise KeyError(f"{path!r} sets no {key!r}")
    return cfg


def _check_device(cfg):
    if cfg.get("use_gpu", False) and not paddle.is_compiled_with_cuda():
        raise RuntimeError("the config says use_gpu: true but this Paddle is a CPU build; "
                           "install paddlepaddle-gpu or pass -o use_gpu=false")
    paddle.set_device("gpu" if cfg.get("use_gpu", False) else "cpu")


def check_datasets(cfg, names):
    """Fail before training if a dataset's annotation file or image folder is
    missing: ppdet would otherwise try to download COCO in its place."""
    for name in names:
        dataset = cfg[name]
        root = dataset.dataset_dir or ""
        anno = os.path.join(root, dataset.anno_path or "")
        images = os.path.join(root, dataset.image_dir or "")
        if not os.path.isfile(anno):
            raise FileNotFoundError(f"{name}: no annotation file at {anno!r}; set "
                                    f"-o {name}.dataset_dir=... / {name}.anno_path=...")
        if not os.path.isdir(images):
            raise FileNotFoundError(f"{name}: no image folder at {images!r}; set "
                                    f"-o {name}.image_dir=...")


def build_trainer(cfg, mode):
    """``ppdet.engine.Trainer`` for ``mode`` ('train' or 'eval') on the configured
    device; multi-card runs come from ``python -m paddle.distributed.launch``."""
    _check_device(cfg)
    check_datasets(cfg, ["TrainDataset"] if mode == "train" else ["EvalDataset"])
    if mode == "train" and not cfg.get("pretrain_weights") and \
            not cfg.get("PaleTransformer", {}).get("pretrained"):
        logger.warning("neither PaleTransformer.pretrained nor pretrain_weights is set: "
                       "the backbone starts from random weights")
    init_parallel_env()
    return Trainer(cfg, mode=mode)


def checkpoint_prefix(cfg, name="model_final"):
    """Where the installed ppdet writes checkpoint ``name`` (``NAME.pdparams`` /
    ``.pdopt``) of a training run of ``cfg``, as its ``Checkpointer`` places it:
    paddledet 2.6.0 ``save_dir/<config name>/NAME``, PaddleDetection's develop branch
    ``save_dir/NAME`` (``save_dir/NAME/NAME`` with ``uniform_output_enabled``)."""
    saver = Checkpointer(types.SimpleNamespace(cfg=cfg, model=types.SimpleNamespace()))
    folder = saver.save_dir
    if getattr(saver, "uniform_output_enabled", False):
        folder = os.path.join(folder, name)
    return os.path.join(folder, name)


def _weights(cfg, weights, what):
    """``weights``, else the config's, else the final checkpoint of training ``cfg``
    where it exists."""
    weights = weights or cfg.get("weights")
    if weights:
        return weights
    trained = checkpoint_prefix(cfg)
    if os.path.isfile(trained + ".pdparams"):
        return trained
    raise ValueError(f"no weights to {what}: pass -o weights=PATH (training this config "
                     f"writes {trained}.pdparams, which is not there)")


def train(cfg, validate=False, resume=None):
    """Train as PaddleDetection's ``tools/train.py`` does; ``validate`` runs COCO
    evaluation after every snapshot, ``resume`` continues from a checkpoint."""
    if validate:
        check_datasets(cfg, ["EvalDataset"])
    trainer = build_trainer(cfg, "train")
    if resume:
        for suffix in (".pdparams", ".pdopt"):  # ppdet resumes with paddle.load
            refuse_code(strip_suffix(resume) + suffix, "checkpoint file")
        trainer.resume_weights(resume)
    elif cfg.get("pretrain_weights"):
        if not is_url(cfg.pretrain_weights):
            refuse_code(strip_suffix(cfg.pretrain_weights) + ".pdparams", "checkpoint file")
        trainer.load_weights(cfg.pretrain_weights)
    trainer.train(validate)
    return trainer


class _KeepEvalResults(Callback):
    """Copies the metrics' results at the end of an evaluation, before the Trainer
    resets its metrics."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.results = {}

    def on_epoch_end(self, status):
        if status.get("mode") == "eval":
            self.results = {}
            for metric in self.model._metrics:
                self.results.update(metric.get_results())


def load_detector_weights(model, weights, strict=True):
    """Load the detector checkpoint ``weights`` (a ``.pdparams`` file or its prefix),
    which must hold exactly ``model``'s tensors (unless ``strict=False``): ppdet's own
    loader matches keys by suffix and only logs what it leaves out, so a checkpoint of
    another config, variant or num_classes would be evaluated or exported
    half-initialised; and it unpickles with ``paddle.load``."""
    load_weights(model, resolve_weights_path(weights), strict=strict, exact=True,
                 what="the detector of this config (another config, variant or "
                      "num_classes?)", owner_prefixes=("backbone.", "neck."),
                 hint="they look like classification or backbone weights: pass them as "
                      "PaleTransformer.pretrained when training instead")


def evaluate(cfg, weights=None, allow_mismatched_weights=False):
    """COCO bbox + segm evaluation of ``weights`` (default: the config's
    ``weights``, else :func:`checkpoint_prefix`, the final weights of training it).
    Returns ``{"bbox": stats, "mask": stats}``, the 12 COCO AP/AR numbers of each, as
    pycocotools' ``COCOeval.stats``.

    Weights that do not fit the model are refused (ValueError) unless
    ``allow_mismatched_weights``."""
    weights = _weights(cfg, weights, "evaluate")
    if is_url(weights):  # fetched as ppdet's loader would, then checked like a file
        weights = get_weights_path(weights)
    trainer = build_trainer(cfg, "eval")
    load_detector_weights(trainer.model, weights, strict=not allow_mismatched_weights)
    keep = _KeepEvalResults(trainer)
    trainer.register_callbacks([keep])
    trainer.evaluate()
    return keep.results


def export(cfg, output_dir="output_inference", weights=None):
    """Export the detector for Paddle Inference as PaddleDetection's
    ``tools/export_model.py`` does: ``Trainer(cfg, mode="test")``, ``load_weights``,
    ``Trainer.export``. Writes :data:`EXPORTED_FILES` into ``output_dir/<config
    name>/``: the PIR program (inputs ``image`` [N, 3, H, W] of any size, ``im_shape``
    and ``scale_factor`` [N, 2]), its weights, and ppdet's ``infer_cfg.yml``
    (preprocessing, label list).

    ``weights`` (default: as :func:`evaluate`) must fit the model exactly (see
    :func:`load_detector_weights`). Returns the paths written.
    """
    weights = _weights(cfg, weights, "export")
    paddle.set_device("cpu")  # as tools/export_model.py: tracing needs no GPU
    trainer = Trainer(cfg, mode="test")
    load_detector_weights(trainer.model, weights)
    trainer.export(output_dir)
    name = os.path.splitext(os.path.basename(cfg.filename))[0]
    paths = [os.path.join(output_dir, name, file) for file in EXPORTED_FILES]
    absent = [path for path in paths if not os.path.isfile(path)]
    if absent:
        raise RuntimeError(f"Trainer.export wrote no {', '.join(absent)}")
    labels = len(_read_yaml(paths[2]).get("label_list", []))
    if labels != cfg.num_classes:
        logger.warning(
            "infer_cfg.yml lists %d labels for a detector of %d classes: ppdet reads them "
            "from TestDataset's annotation file (%s), or uses COCO's 80 when it is "
            "missing; set -o TestDataset.dataset_dir=... TestDataset.anno_path=...",
            labels, cfg.num_classes, cfg.TestDataset.get_anno())
    return paths


def _read_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


def _config_args(description, override_help):
    """``-c`` / ``-o`` parser shared by the training and evaluation tools."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="ppdet config (.yml)")
    parser.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE",
                        help=override_help)
    return parser


def train_main(argv=None, description=None):
    """``tools/train_det.py``: ``-c CONFIG [-o KEY=VALUE ...] [--eval] [-r PREFIX]``."""
    parser = _config_args(description,
                          "config overrides, e.g. use_gpu=false TrainReader.batch_size=1")
    parser.add_argument("--eval", action="store_true",
                        help="evaluate on EvalDataset after every snapshot")
    parser.add_argument("-r", "--resume", default=None,
                        help="checkpoint prefix to resume from (weights + optimizer)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, parse_overrides(args.opt))
    train(cfg, validate=args.eval, resume=args.resume)


def eval_main(argv=None, description=None):
    """``tools/eval_det.py``: ``-c CONFIG [-o weights=PATH ...]``; returns the metrics.
    Without ``weights`` it evaluates the final checkpoint of training the config."""
    parser = _config_args(description,
                          "config overrides; weights=PATH picks the checkpoint "
                          "(default: the final one of training this config)")
    add_mismatch_flag(parser, "weights=PATH")
    args = parser.parse_args(argv)
    return evaluate(load_config(args.config, parse_overrides(args.opt)),
                    allow_mismatched_weights=args.allow_mismatched_weights)


def export_main(argv=None, description=None):
    """``tools/export_det.py``: ``-c CONFIG [-o weights=PATH ...] [--output_dir DIR]``,
    as PaddleDetection's ``tools/export_model.py``; prints and returns the paths
    written."""
    parser = _config_args(description,
                          "config overrides; weights=PATH picks the checkpoint")
    parser.add_argument("--output_dir", default="output_inference",
                        help="the model goes to OUTPUT_DIR/<config name>/")
    args = parser.parse_args(argv)
    paths = export(load_config(args.config, parse_overrides(args.opt)), args.output_dir)
    for path in paths:
        print(path)
    return paths
