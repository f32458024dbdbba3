"""Train and evaluate PaddleSeg configs with the Pale backbone through PaddleSeg's own
engine (``paddleseg.core.train`` / ``paddleseg.core.evaluate``).

``tools/train_seg.py``, ``tools/val_seg.py`` and ``tools/export_seg.py`` are thin
wrappers around :func:`train_main`, :func:`val_main` and :func:`export_main`; their
options follow PaddleSeg's ``tools/train.py``, ``tools/val.py`` and ``tools/export.py``.
Multi-GPU: start training under ``python -m paddle.distributed.launch``, as with PaddleSeg.
"""
import argparse
import os

import paddle
import yaml
from paddleseg import core
from paddleseg.cvlibs import Config, SegBuilder
from paddleseg.deploy.export import WrappedModel
from paddleseg.utils import logger as seg_logger

from ..utils.io import add_mismatch_flag, load_weights, refuse_code
from . import paddleseg as _registration  # noqa: F401  registers PaleTransformer

__all__ = ["load_config", "check_datasets", "load_segmentation_weights", "train_parser",
           "val_parser", "train_main", "val_main", "test_config_from_args", "export_parser",
           "export_model", "export_main"]

# sub-folders PaddleSeg's ADE20K reads, per mode
_ADE20K_FOLDERS = {"train": ("images/training", "annotations/training"),
                   "val": ("images/validation", "annotations/validation")}


def load_config(path, opts=None, iters=None, batch_size=None, learning_rate=None):
    """Read a PaddleSeg YAML config; ``opts`` are ``key.sub=value`` overrides."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file at {path!r}")
    if not path.endswith((".yml", ".yaml")):
        raise ValueError(f"PaddleSeg configs are YAML files ending in .yml/.yaml, got {path!r}")
    return Config(path, opts=opts, iters=iters, batch_size=batch_size,
                  learning_rate=learning_rate)


def check_datasets(config, keys):
    """Fail before PaddleSeg builds a data set whose files are not there: ADE20K, VOC
    and other PaddleSeg data sets download themselves into a ``dataset_root`` that does
    not exist (or the default one when it is unset) instead of failing.

    ``keys``: ``"train_dataset"`` and/or ``"val_dataset"``; FileNotFoundError naming the
    config key and what is missing."""
    for key in keys:
        dataset = getattr(config, f"{key}_cfg", None) or {}
        if not dataset:
            continue  # PaddleSeg reports a missing section itself
        root = dataset.get("dataset_root")
        option = f"--opts {key}.dataset_root=PATH"
        if not root:
            raise FileNotFoundError(f"{key}.dataset_root is not set (PaddleSeg would download "
                                    f"{dataset.get('type', 'the data set')} to its cache); "
                                    f"set it in the config or with {option}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{key}.dataset_root {root!r} is not a directory (PaddleSeg "
                                    f"would try to download {dataset.get('type', 'the data')} "
                                    f"there); set {option}")
        if dataset.get("type") == "ADE20K":
            mode = str(dataset.get("mode", "train")).lower()
            for folder in _ADE20K_FOLDERS.get(mode, ()):
                if not os.path.isdir(os.path.join(root, folder)):
                    raise FileNotFoundError(
                        f"{key}.dataset_root {root!r} has no {folder}/ (the ADE20K layout: "
                        f"ADEChallengeData2016/images/{{training,validation}}, "
                        f"annotations/{{training,validation}})")


def load_segmentation_weights(model, path, allow_mismatch=False):
    """Load a segmentation checkpoint (``model.pdparams`` written by training) into
    ``model``; any missing, unexpected or differently shaped key raises ValueError,
    since evaluating a half-loaded model would give a meaningless mIoU.
    ``allow_mismatch`` loads what fits instead and logs a warning."""
    load_weights(model, path, strict=not allow_mismatch, exact=True,
                 what="this model (wrong config or variant?)", owner_prefixes=("backbone.",),
                 hint="they look like classification or backbone weights: pass them as "
                      "model.backbone.pretrained instead")


def _common_args(parser):
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config")
    parser.add_argument("--device", choices=("cpu", "gpu"),
                        default="gpu" if paddle.is_compiled_with_cuda() else "cpu")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--amp_level", choices=("O1", "O2"), default="O1")
    parser.add_argument("--opts", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config overrides, e.g. model.backbone.pretrained=best.pdparams")


def _test_args(parser):
    parser.add_argument("--aug_eval", action="store_true",
                        help="multi-scale and/or flip evaluation")
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="scales for --aug_eval, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    parser.add_argument("--flip_horizontal", action="store_true")
    parser.add_argument("--flip_vertical", action="store_true")
    parser.add_argument("--is_slide", action="store_true", help="sliding-window inference")
    parser.add_argument("--crop_size", type=int, nargs=2, default=None, metavar=("W", "H"))
    parser.add_argument("--stride", type=int, nargs=2, default=None, metavar=("W", "H"))


def train_parser():
    parser = argparse.ArgumentParser(description="Train a PaddleSeg model with a Pale backbone")
    _common_args(parser)
    parser.add_argument("--save_dir", default="output")
    parser.add_argument("--iters", type=int, default=None, help="override the config's iters")
    parser.add_argument("--batch_size", type=int, default=None, help="per-device batch size")
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--save_interval", type=int, default=1000)
    parser.add_argument("--log_iters", type=int, default=10)
    parser.add_argument("--keep_checkpoint_max", type=int, default=5)
    parser.add_argument("--do_eval", action="store_true",
                        help="evaluate at every save_interval, keep best_model/")
    parser.add_argument("--use_vdl", action="store_true", help="log to VisualDL")
    parser.add_argument("--resume_model", default=None, help="an iter_N directory to resume")
    parser.add_argument("--seed", type=int, default=None)
    return parser


def val_parser():
    parser = argparse.ArgumentParser(description="Evaluate a PaddleSeg model with a Pale backbone")
    _common_args(parser)
    parser.add_argument("--model_path", required=True,
                        help="segmentation weights, e.g. output/best_model/model.pdparams")
    add_mismatch_flag(parser, "--model_path")
    _test_args(parser)
    return parser


def test_config_from_args(config_test, args):
    """The config's ``test_config`` with the command line's choices on top."""
    test_config = dict(config_test or {})
    if args.aug_eval:
        test_config["aug_eval"] = True
        test_config["flip_horizontal"] = args.flip_horizontal
        test_config["flip_vertical"] = args.flip_vertical
        if args.scales is not None:
            test_config["scales"] = args.scales if len(args.scales) > 1 else args.scales[0]
    elif args.scales or args.flip_horizontal or args.flip_vertical:
        raise ValueError("--scales/--flip_horizontal/--flip_vertical need --aug_eval")
    if args.is_slide:
        if args.crop_size is None or args.stride is None:
            raise ValueError("--is_slide needs --crop_size W H and --stride W H")
        test_config.update(is_slide=True, crop_size=args.crop_size, stride=args.stride)
    return test_config


def _setup(args):
    paddle.set_device(args.device)
    config = load_config(args.config, opts=args.opts, iters=getattr(args, "iters", None),
                         batch_size=getattr(args, "batch_size", None),
                         learning_rate=getattr(args, "learning_rate", None))
    pretrained = (config.model_cfg or {}).get("pretrained")
    refuse_code(pretrained, "model.pretrained")  # PaddleSeg reads it with paddle.load
    builder = SegBuilder(config)
    model = builder.model
    if args.device == "gpu" and paddle.distributed.ParallelEnv().nranks > 1:
        # batch statistics over all GPUs, as PaddleSeg's own tools do
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return config, builder, model


def train_main(argv=None):
    """Build the config's model, data, optimizer and losses and run PaddleSeg training."""
    args = train_parser().parse_args(argv)
    if args.seed is not None:
        paddle.seed(args.seed)
    config, builder, model = _setup(args)
    check_datasets(config, ["train_dataset"] + (["val_dataset"] if args.do_eval else []))
    for name in ("model.pdparams", "model.pdopt"):  # PaddleSeg resumes with paddle.load
        if args.resume_model:
            refuse_code(os.path.join(args.resume_model, name), "--resume_model file")
    core.train(model, builder.train_dataset,
               val_dataset=builder.val_dataset if args.do_eval else None,
               optimizer=builder.optimizer, losses=builder.loss, save_dir=args.save_dir,
               iters=config.iters, batch_size=config.batch_size,
               resume_model=args.resume_model, save_interval=args.save_interval,
               log_iters=args.log_iters, num_workers=args.num_workers, use_vdl=args.use_vdl,
               keep_checkpoint_max=args.keep_checkpoint_max, test_config=config.test_config,
               precision=args.precision, amp_level=args.amp_level)


def val_main(argv=None):
    """Evaluate ``--model_path`` on the config's val_dataset; returns (mIoU, accuracy)."""
    parser = val_parser()
    args = parser.parse_args(argv)
    try:
        test_config_from_args({}, args)  # reject bad flag combinations before building
    except ValueError as error:
        parser.error(str(error))
    config, builder, model = _setup(args)
    check_datasets(config, ["val_dataset"])
    test_config = test_config_from_args(config.test_config, args)
    load_segmentation_weights(model, args.model_path, args.allow_mismatched_weights)
    miou, acc, *_ = core.evaluate(model, builder.val_dataset, num_workers=args.num_workers,
                                  precision=args.precision, amp_level=args.amp_level,
                                  **test_config)
    return miou, acc


def export_parser():
    parser = argparse.ArgumentParser(
        description="Export a PaddleSeg model with a Pale backbone for Paddle Inference, "
                    "as PaddleSeg's tools/export.py does")
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config")
    parser.add_argument("--model_path", default=None,
                        help="segmentation weights, e.g. output/best_model/model.pdparams")
    parser.add_argument("--random_weights", action="store_true",
                        help="export without --model_path: the model's initial weights "
                             "(a test of the export, no trained model)")
    parser.add_argument("--save_dir", default="output/inference_model")
    parser.add_argument("--input_shape", type=int, nargs=4, default=None,
                        metavar=("N", "C", "H", "W"),
                        help="fix the input shape (default: any batch and image size)")
    parser.add_argument("--output_op", choices=("argmax", "softmax", "none"),
                        default="argmax", help="op appended to the logits")
    parser.add_argument("--opts", nargs="+", default=None, metavar="KEY=VALUE")
    return parser


def export_model(config_path, save_dir, model_path=None, input_shape=None,
                 output_op="argmax", opts=None):
    """Export the config's model the way PaddleSeg 2.8.0's ``tools/export.py`` does:
    ``WrappedModel(model, output_op)`` (unless ``"none"``), ``paddle.jit.to_static``
    with ``InputSpec([None, 3, None, None])`` (or ``input_shape``) and ``paddle.jit.save``
    to ``save_dir/model.json`` + ``model.pdiparams``, then ``deploy.yaml`` (the val
    transforms, input shape and output op) beside them.

    ``model_path`` weights must fit the model exactly (see
    :func:`load_segmentation_weights`). Returns the paths written.
    """
    if output_op not in ("argmax", "softmax", "none"):
        raise ValueError(f"output_op must be argmax, softmax or none, got {output_op!r}")
    config = load_config(config_path, opts=opts)
    val_dataset = config.val_dataset_cfg
    if not val_dataset:
        raise ValueError(f"{config_path!r} has no val_dataset: its transforms are the "
                         f"deployed preprocessing")
    model = SegBuilder(config).model
    if model_path is not None:
        load_segmentation_weights(model, model_path)
    os.environ["PADDLESEG_EXPORT_STAGE"] = "True"  # PaddleSeg models read it
    if output_op != "none":
        model = WrappedModel(model, output_op)
    model.eval()
    spec = paddle.static.InputSpec([None, 3, None, None] if input_shape is None
                                   else list(input_shape), "float32")
    static = paddle.jit.to_static(model, input_spec=[spec])
    os.makedirs(save_dir, exist_ok=True)
    prefix = os.path.join(save_dir, "model")
    paddle.jit.save(static, prefix)
    deploy = {"Deploy": {"model": "model.json", "params": "model.pdiparams",
                         "transforms": val_dataset.get("transforms"),
                         "input_shape": list(spec.shape),  # -1: any size
                         "output_op": output_op,
                         "output_dtype": "int32" if output_op == "argmax" else "float32"}}
    deploy_path = os.path.join(save_dir, "deploy.yaml")
    with open(deploy_path, "w") as handle:
        yaml.safe_dump(deploy, handle, sort_keys=False)
    seg_logger.info(f"exported {config_path} to {save_dir}")
    return [prefix + ".json", prefix + ".pdiparams", deploy_path]


def export_main(argv=None):
    """``tools/export_seg.py``: arguments as PaddleSeg's ``tools/export.py``."""
    parser = export_parser()
    args = parser.parse_args(argv)
    if args.model_path is None and not args.random_weights:
        raise ValueError("no --model_path: the export would hold the untrained initial "
                         "weights; pass --model_path output/.../model.pdparams (or "
                         "--random_weights to export them on purpose)")
    paths = export_model(args.config, args.save_dir, args.model_path, args.input_shape,
                         args.output_op, args.opts)
    for path in paths:
        print(path)
    return paths


def _unused_parameters(model, input_shape):
    """Names of leaf layers with parameters that one forward pass never calls."""
    called, hooks = set(), []
    for name, layer in model.named_sublayers():
        if not layer.sublayers() and layer.parameters():
            hooks.append(layer.register_forward_pre_hook(
                lambda layer, inputs, name=name: called.add(name)))
    try:
        with paddle.no_grad():
            model.eval()
            model(paddle.zeros(input_shape))
    finally:
        for handle in hooks:
            handle.remove()
    return {name: layer for name, layer in model.named_sublayers()
            if not layer.sublayers() and layer.parameters() and name not in called}


def seg_model_report(config_path, size, opts=None):
    """Params and FLOPs (multiply-accumulates of convolutions, linear layers and
    PS-Attention) of the config's model for one ``size = (H, W)`` image.

    FLOPs leave out the auxiliary head (training only), as is usual for Table 4-style
    numbers; params are given with and without it, and without layers that PaddleSeg
    builds but the forward never uses.
    """
    from ..utils.flops import count_flops, count_params

    model = SegBuilder(load_config(config_path, opts=opts)).model
    head = getattr(model, "head", None)
    aux = getattr(head, "aux_head", None)
    unused = _unused_parameters(model, [1, 3, 64, 64])
    total = count_params(model)
    aux_params = count_params(aux) if aux is not None else 0
    unused_params = sum(count_params(layer) for layer in unused.values())
    if aux is not None:
        head.enable_auxiliary_loss = False  # UPerNetHead runs the aux head only if set
    try:
        flops, breakdown = count_flops(model, (3, *size))
    finally:
        if aux is not None:
            head.enable_auxiliary_loss = True
    used = total - unused_params
    lines = [f"config {config_path}  input {size[0]}x{size[1]}",
             f"params: {total / 1e6:.2f}M all, {(total - aux_params) / 1e6:.2f}M without the "
             f"auxiliary head ({aux_params / 1e6:.2f}M)",
             f"params used by the forward: {used / 1e6:.2f}M, {(used - aux_params) / 1e6:.2f}M "
             f"without the auxiliary head (never used: "
             f"{', '.join(sorted(unused)) or 'none'}, {unused_params / 1e6:.2f}M)",
             f"FLOPs (MACs, no auxiliary head): {flops / 1e9:.1f}G"]
    lines += [f"  {group:<10} {macs / 1e9:8.1f}G" for group, macs in breakdown.items()]
    return dict(params=total, params_without_aux=total - aux_params,
                params_unused=unused_params, flops=flops, breakdown=breakdown,
                text="\n".join(lines))
