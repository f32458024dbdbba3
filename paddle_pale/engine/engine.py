"""One engine for training and evaluation (PaddleClas style): builds everything from a
config, trains with fleet data parallelism, evaluates, checkpoints and resumes."""
import copy
import datetime
import errno
import logging
import math
import os
import random
import shutil
import time
import uuid

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from paddle.distributed import fleet

from ..data.builder import batch_bytes, build_dataloader, build_dataset, make_loader
from ..data.datasets import IGNORE_LABEL
from ..data.mixup import Mixup, one_hot_smoothed
from ..data.token_labels import MixToken
from ..data.train_transforms import BatchNormalize
from ..kernels import use_cpu_kernels
from ..utils.config import dump_config
from ..utils.io import (load_checkpoint, load_weights, read_states,
                        remove_stale_files, save_checkpoint, strip_suffix)
from ..utils.log import VisualDLWriter, format_eta, setup_logging
from .builder import (arch_record, build_lr_scheduler, build_model, build_optimizer,
                      scaled_learning_rate, soft_target_cross_entropy, token_label_loss)
from .checkpoint import (capture_rng_state, optimizer_state_by_param_name,
                         optimizer_state_by_structured_name, restore_rng_state)
from .config import ConfigError
from .ema import ModelEMA

__all__ = ["Engine", "NonFiniteLossError", "CheckpointSaveError", "topk_correct",
           "RUN_CONFIG_FILE"]

# the resolved config of the run, written into its output folder: what the printed
# follow-up commands pass to -c
RUN_CONFIG_FILE = "config.yaml"

logger = logging.getLogger("paddle_pale")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written for lack of space or permission."""


# a save failing with one of these is the machine's state, not a bug: say so in a line
_SAVE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def _free_space(folder):
    """Free space of the file system holding ``folder`` (or its nearest parent), in words."""
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder or ".").free
    except OSError:
        return "free space unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if free < 1024 or unit == "GB":
            return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
        free /= 1024


def _world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def _init_distributed():
    if _world_size() > 1 and not getattr(_init_distributed, "done", False):
        fleet.init(is_collective=True)
        _init_distributed.done = True
    return dist.get_rank(), dist.get_world_size()


def _set_device(device):
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ConfigError("Global.device is 'gpu' but this Paddle build sees no GPU; use "
                          "Global.device=cpu (or auto)")
    if device == "auto":
        device = "gpu" if has_gpu else "cpu"
    if device == "gpu":
        paddle.set_device(f"gpu:{os.environ.get('FLAGS_selected_gpus', '0').split(',')[0]}")
    else:
        paddle.set_device("cpu")
    return device


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def _describe_run(states):
    """``run ID (pale_t, attention_mode pale, 12 of 12 epochs, best top-1 0.9889)``."""
    arch = states.get("arch") or {}
    details = [str(arch.get("name", "unknown model"))]
    if arch.get("attention_mode"):
        details.append(f"attention_mode {arch['attention_mode']}")
    if states.get("epoch") is not None:
        total = states.get("epochs")
        details.append(f"{states['epoch']} of {total} epochs" if total
                       else f"{states['epoch']} epoch(s)")
    if states.get("best_top1") is not None:
        details.append(f"best top-1 {float(states['best_top1']):.4f}")
    return f"run {states.get('run_id') or 'of unknown id'} ({', '.join(details)})"


def topk_correct(logits, labels, topk):
    """Number of samples whose label is among the top-k logits, per k; samples with
    label ``IGNORE_LABEL`` (unreadable images) are left out. -> (list of ints, count)."""
    valid = labels != IGNORE_LABEL
    count = int(valid.astype("int64").sum())
    if count == 0:
        return [0 for _ in topk], 0
    logits, labels = logits[valid], labels[valid]
    num_classes = logits.shape[-1]
    _, ranked = paddle.topk(logits, k=min(max(topk), num_classes), axis=-1)
    hits = ranked == labels.unsqueeze(-1)
    return [int(hits[:, :min(k, num_classes)].any(axis=-1).astype("int64").sum())
            for k in topk], count


class _TrainForward(paddle.nn.Layer):
    """The model's training forward: what ``Global.to_static`` converts (see
    Engine._to_static) and, for token labeling, ``forward_tokens`` (class and token
    logits) as a layer's forward, so data parallelism and to_static wrap it alike."""

    def __init__(self, model, tokens=False):
        super().__init__()
        self.model = model
        self.tokens = tokens

    def forward(self, images):
        return self.model.forward_tokens(images) if self.tokens else self.model(images)


class Engine:
    """Train or evaluate one model from a validated config (see engine.config).

    Class map: the class names of the training split (sorted class folders, hidden and
    empty ones left out) are written into every checkpoint; validation maps its folders
    through them, so a split lacking a class still scores each image against its own
    class, and a folder unknown to training is an error. In ``eval`` mode the map comes
    from the ``.pdstates`` beside ``Global.pretrained``.

    Args:
        config: the dict returned by :func:`paddle_pale.engine.config.load_config`.
        mode: ``"train"`` or ``"eval"``.
        allow_mismatched_weights: load ``Global.pretrained`` even when tensors are
            missing, unexpected or differently shaped (``strict=False``); by default
            that is an error (in ``eval`` mode the classifier must fit too, as the
            numbers of a partly random model mean nothing).
        notes: ``(level, message)`` pairs of the caller, logged once logging is set up.
    """

    def __init__(self, config, mode="train", allow_mismatched_weights=False, notes=()):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.config = config
        self.mode = mode
        global_cfg = config["Global"]
        self.rank, self.world_size = _init_distributed()
        self.output_dir = global_cfg["output_dir"]
        # eval logs beside the checkpoint it evaluates, not into another run's folder
        log_dir = (self.output_dir if mode == "train" or not global_cfg["pretrained"]
                   else os.path.dirname(os.path.abspath(global_cfg["pretrained"])))
        setup_logging(self.rank, os.path.join(log_dir, f"{mode}.log"))
        for level, message in notes:
            logger.log(level, "%s", message)
        self.device = _set_device(global_cfg["device"])
        self._check_amp()
        # identical initial weights on every rank, then rank-specific augmentation
        _seed_everything(global_cfg["seed"])
        self.model = build_model(config["Arch"])
        self.arch = arch_record(config["Arch"], self.model)
        if self.device == "cpu":
            use_cpu_kernels(self.model)  # same parameters, faster eager CPU layers
        _seed_everything(global_cfg["seed"] + self.rank)
        # class names (index = label) and where the labels come from: "folders" or
        # "list_file" (which names no classes); None when unknown
        self.classes, self.label_source = None, None
        self.last_saved = None  # (prefix, epoch) of this run's latest checkpoint
        self.token_labeling = False  # training on label maps (see _check_token_labeling)
        if global_cfg["pretrained"]:
            if mode == "eval":
                self._load_eval_weights(global_cfg["pretrained"], allow_mismatched_weights)
            else:
                # a classifier of another num_classes is left out, and the log says so
                load_weights(self.model, global_cfg["pretrained"],
                             strict=not allow_mismatched_weights,
                             what=f"the configured model {self.arch}")
        self.run_id = None
        if mode == "train":
            self.run_id = self._claim_output_dir()
            if self.rank == 0:
                remove_stale_files(self.output_dir)
            self._build_train_set()
        self.eval_loader = None
        if config["DataLoader"]["Eval"]["dataset"].get("root"):
            self.eval_loader = self._build_eval_loader()
        elif mode == "eval":
            build_dataset(config["DataLoader"]["Eval"], "Eval")  # raises: root not set
        self.best_top1 = 0.0
        self.start_epoch = 0
        if mode == "train":
            self._build_training()

    # ----------------------------------------------------------------- building
    def _claim_output_dir(self):
        """The run id of this training; refuses an output folder whose checkpoints belong
        to another run unless ``Global.overwrite``. A resumed run keeps its id where it
        continues in the folder it was resumed from."""
        global_cfg = self.config["Global"]
        resume = global_cfg["resume"]
        resumed_id, resumed_dir = None, None
        if resume:
            prefix = strip_suffix(resume)
            resumed_dir = os.path.realpath(os.path.dirname(os.path.abspath(prefix)))
            states = read_states(prefix)  # None: _resume names the missing file
            resumed_id = (states or {}).get("run_id")
        here = os.path.realpath(os.path.abspath(self.output_dir))
        continuing = resumed_dir == here
        if not global_cfg["overwrite"]:
            others = []
            for name in ("latest", "best"):
                prefix = os.path.join(self.output_dir, name)
                if not os.path.exists(prefix + ".pdparams"):
                    continue
                states = read_states(prefix) or {}
                run_id = states.get("run_id")
                # a checkpoint of the run being resumed here (or of one from before run
                # ids, resumed from this very folder) is this run's own
                if continuing and (run_id == resumed_id or run_id is None):
                    continue
                if _describe_run(states) not in others:
                    others.append(_describe_run(states))
            if others:
                raise ConfigError(
                    f"Global.output_dir {self.output_dir!r} holds the checkpoints of another "
                    f"run ({'; '.join(others)}); training would replace them. Continue that "
                    f"run with -o Global.resume={os.path.join(self.output_dir, 'latest')}, "
                    f"train into another folder with -o Global.output_dir=..., or replace "
                    f"it with -o Global.overwrite=True")
        if continuing and resumed_id:
            return resumed_id
        return (datetime.datetime.now().strftime("%Y%m%d-%H%M%S-")
                + uuid.uuid4().hex[:6])

    def write_run_config(self):
        """Write the resolved config of this run to ``output_dir/config.yaml`` (rank 0):
        ``-c`` of the follow-up commands, so that they act on this run's model and
        folder. Resume and overwrite are left out (each command says its own)."""
        if self.rank != 0:
            return None
        config = copy.deepcopy(self.config)
        config["Global"].update(resume=None, overwrite=False)
        path = os.path.join(self.output_dir, RUN_CONFIG_FILE)
        os.makedirs(self.output_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"# resolved config of run {self.run_id}, written by tools/train.py; "
                    f"its checkpoints are in this folder\n")
            f.write(dump_config(config))
        return path

    def _check_amp(self):
        amp = self.config["AMP"]
        self.amp_enabled = bool(amp["enable"])
        if self.amp_enabled and self.device == "cpu":
            raise ConfigError(
                f"AMP.enable=True ({amp['dtype']}, {amp['level']}) needs a GPU: Paddle's "
                f"autocast does nothing on CPU, which has no half-precision matmul "
                f"kernels; set AMP.enable=False to train in float32 here")

    def _load_eval_weights(self, path, allow_mismatched_weights):
        """Weights to evaluate, and the class map of their checkpoint."""
        states = read_states(strip_suffix(path))
        if states is not None:
            self.classes = states.get("classes")
            self.label_source = states.get("label_source")
        load_weights(self.model, path, strict=not allow_mismatched_weights, exact=True,
                     what=f"the configured model {self.arch} (evaluating them would score a "
                          f"partly random model; check Arch, e.g. -o Arch.num_classes=...)")

    def _build_train_set(self):
        """The training split; it defines the class map."""
        train_cfg = self.config["DataLoader"]["Train"]
        self.train_set = build_dataset(train_cfg, "Train")
        self.classes = self.train_set.classes
        self.label_source = ("list_file" if train_cfg["dataset"]["name"] == "ImageList"
                             else "folders")
        num_classes = self.arch["num_classes"]
        if self.classes is not None:
            if len(self.classes) > num_classes:
                raise ConfigError(
                    f"DataLoader.Train.dataset has {len(self.classes)} classes "
                    f"({', '.join(self.classes[:5])}{', ...' if len(self.classes) > 5 else ''})"
                    f" but the model has Arch.num_classes={num_classes}; set -o "
                    f"Arch.num_classes={len(self.classes)}")
            if len(self.classes) < num_classes:
                logger.warning("Arch.num_classes=%d but the training split has %d classes: "
                               "outputs %d..%d are never trained", num_classes,
                               len(self.classes), len(self.classes), num_classes - 1)
        self._check_labels(self.train_set, "Train")
        self._check_token_labeling()

    def _check_token_labeling(self):
        """Token labeling (``dataset.label_maps``) needs the token head, and maps of the
        model's classes; a token head without maps would never be trained."""
        label_maps = getattr(self.train_set, "label_maps", None)
        self.token_labeling = label_maps is not None
        if self.arch.get("token_head") and not self.token_labeling:
            raise ConfigError("Arch.token_head=True trains the auxiliary token head on label "
                              "maps: set -o DataLoader.Train.dataset.label_maps=FOLDER (made by "
                              "tools/token_labels.py), or train without the head")
        if self.token_labeling and label_maps.num_classes != self.arch["num_classes"]:
            raise ConfigError(f"label maps {label_maps.folder!r} score {label_maps.num_classes} "
                              f"classes, the model has Arch.num_classes="
                              f"{self.arch['num_classes']}")

    def _build_eval_loader(self):
        loader_cfg = self.config["DataLoader"]["Eval"]
        if loader_cfg["dataset"]["name"] == "ImageFolder":
            if self.label_source == "list_file":
                raise ConfigError(
                    "the model's labels come from a list file (DataLoader.Train.dataset.name="
                    "ImageList), which names no classes, so the class folders of "
                    "DataLoader.Eval cannot be matched to them; evaluate with a list file "
                    "too (-o DataLoader.Eval.dataset.name=ImageList -o "
                    "DataLoader.Eval.dataset.list_file=...)")
            if self.classes is None:
                logger.warning(
                    "the weights carry no class names (a checkpoint from before class maps, "
                    "or bare weights): the folders of %s are numbered in sorted order and "
                    "assumed to match training's", loader_cfg["dataset"]["root"])
        dataset = build_dataset(loader_cfg, "Eval", classes=self.classes)
        self._check_labels(dataset, "Eval")
        # every rank takes a disjoint slice (no padding), so no image is counted twice
        shard = paddle.io.Subset(dataset, list(range(self.rank, len(dataset), self.world_size)))
        return make_loader(shard, "Eval", loader_cfg["num_workers"],
                           batch_bytes(loader_cfg, "Eval"),
                           batch_size=loader_cfg["batch_size"], shuffle=False)

    def _check_labels(self, dataset, mode):
        num_classes = self.arch["num_classes"]
        largest = max(label for _, label in dataset.samples)
        if largest >= num_classes:
            raise ValueError(f"DataLoader.{mode} has label {largest} but the model has "
                             f"Arch.num_classes={num_classes} outputs (labels 0.."
                             f"{num_classes - 1}); the data has more classes than the model")

    def _build_training(self):
        config = self.config
        global_cfg, train_cfg = config["Global"], config["DataLoader"]["Train"]
        train_set = self.train_set
        self.train_loader = build_dataloader(train_cfg, "Train", dataset=train_set)
        # uint8 batches from the workers, normalized and erased here, on the device
        self.batch_normalize = BatchNormalize.from_config(train_cfg["transforms"],
                                                          global_cfg["seed"] + self.rank)
        self.accum_steps = global_cfg["accum_steps"]
        self.steps_per_epoch = len(self.train_loader) // self.accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"an epoch has no optimizer step: {len(train_set)} training images, "
                f"{self.world_size} process(es) x batch_size {train_cfg['batch_size']} x "
                f"accum_steps {self.accum_steps}; lower the batch size")
        self.epochs = global_cfg["epochs"]
        self.global_batch = train_cfg["batch_size"] * self.world_size * self.accum_steps
        lr_cfg = config["Optimizer"]["lr"]
        self.peak_lr = scaled_learning_rate(lr_cfg, self.global_batch)
        for key in ("min_lr", "warmup_start_lr"):
            if lr_cfg[key] > self.peak_lr:
                raise ConfigError(
                    f"Optimizer.lr.{key} must be in [0, peak lr = {self.peak_lr:.3e}] (base_lr "
                    f"{lr_cfg['base_lr']:.3e} x global batch {self.global_batch} / "
                    f"reference_batch {lr_cfg['reference_batch']}), got {lr_cfg[key]:.3e}")
        self.lr_scheduler = build_lr_scheduler(lr_cfg, self.peak_lr, self.steps_per_epoch,
                                               self.epochs)
        self.optimizer = build_optimizer(config["Optimizer"], self.model, self.lr_scheduler)
        amp = config["AMP"]
        if self.amp_enabled and amp["level"] == "O2":
            self.model, self.optimizer = paddle.amp.decorate(
                self.model, self.optimizer, level="O2", dtype=amp["dtype"])
        # loss scaling guards float16 gradients from underflow; bfloat16 needs none
        self.scaler = paddle.amp.GradScaler(
            enable=self.amp_enabled and amp["dtype"] == "float16",
            init_loss_scaling=amp["init_loss_scaling"])
        self.ema = (ModelEMA(self.model, config["EMA"]["decay"])
                    if config["EMA"] and config["EMA"]["enable"] else None)
        mixup_cfg = train_cfg["mixup"]
        smoothing = config["Loss"]["label_smoothing"]
        self.mixup = (Mixup(self.arch["num_classes"], label_smoothing=smoothing,
                            seed=global_cfg["seed"] + self.rank, **mixup_cfg)
                      if mixup_cfg else None)
        mix_token_cfg = train_cfg["mix_token"]
        self.mix_token = (MixToken(mix_token_cfg["alpha"], mix_token_cfg["prob"],
                                   seed=global_cfg["seed"] + self.rank + 7919)
                          if mix_token_cfg["enable"] else None)
        # the training forward: the model, or a wrapper of it where it is converted to a
        # static graph or returns the token outputs too; data parallelism wraps that
        self.train_model = (_TrainForward(self.model, tokens=self.token_labeling)
                            if self.token_labeling or global_cfg["to_static"] else self.model)
        if global_cfg["to_static"]:
            self.train_model = self._to_static(self.train_model,
                                               train_cfg["transforms"]["input_size"])
        if self.world_size > 1:
            self.train_model = fleet.distributed_model(self.train_model)
            self.optimizer = fleet.distributed_optimizer(self.optimizer)
        if global_cfg["resume"]:
            self._resume(global_cfg["resume"])
        self.vdl = VisualDLWriter(os.path.join(self.output_dir, "vdl"),
                                  enabled=global_cfg["use_visualdl"] and self.rank == 0)

    def _to_static(self, forward, size):
        """``Global.to_static`` (PaddleClas's): the training forward ``forward`` (a
        :class:`_TrainForward`) as a static graph (``paddle.jit.to_static``, SOT capture,
        input spec ``[None, 3, size, size]``); the backward runs on that graph. The
        wrapper is converted, not the model, so evaluation (any size) and the state dict
        stay those of the eager model."""
        spec = [paddle.static.InputSpec([None, 3, size, size], "float32", name="images")]
        logger.info("Global.to_static: the training forward runs as a static graph, input "
                    "[None, 3, %d, %d] float32", size, size)
        return paddle.jit.to_static(forward, input_spec=spec)

    # -------------------------------------------------------------- checkpoints
    def _states(self, epoch, rng_states):
        eval_tf = self.config["DataLoader"]["Eval"]["transforms"]
        return {
            "epoch": epoch, "best_top1": float(self.best_top1), "arch": dict(self.arch),
            "input_size": int(eval_tf["input_size"]), "crop_pct": float(eval_tf["crop_pct"]),
            "mean": list(eval_tf["mean"]), "std": list(eval_tf["std"]),
            "interpolation": eval_tf["interpolation"],
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "world_size": self.world_size,
            "rng_states": rng_states, "config": dump_config(self.config),
            "classes": None if self.classes is None else list(self.classes),
            "label_source": self.label_source, "run_id": self.run_id,
            "epochs": int(self.epochs),
        }

    def save(self, name, epoch):
        """Write checkpoint ``OUTPUT_DIR/name``; a collective call, rank 0 writes."""
        rng_state = capture_rng_state(self._generators())
        if self.world_size > 1:
            rng_states = []
            dist.all_gather_object(rng_states, rng_state)
        else:
            rng_states = [rng_state]
        if self.rank != 0:
            return None
        prefix = os.path.join(self.output_dir, name)
        optimizer_state = optimizer_state_by_structured_name(self.optimizer.state_dict(),
                                                             self.model)
        try:
            save_checkpoint(prefix, self.model.state_dict(), optimizer_state,
                            self._states(epoch, rng_states),
                            self.ema.state_dict() if self.ema else None)
        except OSError as error:
            if error.errno not in _SAVE_ERRNOS:
                raise
            folder = os.path.dirname(os.path.abspath(prefix))
            raise CheckpointSaveError(
                error.errno, f"cannot save checkpoint {name} of epoch {epoch} in {folder}: "
                f"{error.strerror} ({_free_space(folder)}); training stopped, nothing of "
                f"this save was left behind. {self._kept()}") from None
        if name == "latest":
            self.last_saved = (prefix, epoch)
        return prefix

    def _kept(self):
        """Which checkpoint survives a failure, and how to go on from it."""
        if self.last_saved is None:
            return "No checkpoint of this run was written yet, so there is none to resume from"
        return (f"The last good checkpoint is kept: {self.last_saved[0]} (epoch "
                f"{self.last_saved[1]}); resume with -o Global.resume={self.last_saved[0]}")

    def _generators(self):
        generators = {"erasing": self.batch_normalize.rng}
        if self.mixup is not None:
            generators["mixup"] = self.mixup.rng
        if self.mix_token is not None:
            generators["mix_token"] = self.mix_token.rng
        return generators

    def _resume(self, prefix):
        prefix = strip_suffix(prefix)  # output/latest.pdparams names the same checkpoint
        loaded = load_checkpoint(prefix)
        states = loaded["states"]
        if states.get("arch") != self.arch:
            raise ValueError(f"cannot resume from {prefix!r}: it was trained with Arch "
                             f"{states.get('arch')}, the config has {self.arch}")
        if states.get("classes") is not None and states["classes"] != self.classes:
            old, new = states["classes"], self.classes or []
            raise ValueError(
                f"cannot resume from {prefix!r}: it was trained on {len(old)} classes, "
                f"DataLoader.Train now has {len(new)}; only in the checkpoint: "
                f"{sorted(set(old) - set(new)) or 'none'}, only in the data: "
                f"{sorted(set(new) - set(old)) or 'none'}"
                + ("" if set(old) != set(new) else " (same names, other order)"))
        self.model.set_state_dict(loaded["model"])
        self.optimizer.set_state_dict(optimizer_state_by_param_name(loaded["optimizer"],
                                                                    self.model))
        self.lr_scheduler.set_state_dict(states["lr_scheduler"])
        self.scaler.load_state_dict(states["scaler"])
        if self.ema is not None:
            if loaded["ema"] is None:
                logger.warning("%s has no EMA weights; EMA restarts from the model", prefix)
                self.ema = ModelEMA(self.model, self.ema.decay)
            else:
                self.ema.set_state_dict(loaded["ema"])
        self.start_epoch = int(states["epoch"])
        self.best_top1 = float(states["best_top1"])
        self.last_saved = (prefix, self.start_epoch)
        rng_states = states.get("rng_states") or []
        if len(rng_states) != self.world_size:
            why = (f"checkpoint was written by {len(rng_states)} process(es), this run has "
                   f"{self.world_size}")
        elif not restore_rng_state(rng_states[self.rank], self._generators()):
            why = ("checkpoint stores its random states in the old pickled form, which is "
                   "not unpickled")
        else:
            why = None
        if why:
            logger.warning("%s: random streams restart from the seed", why)
            _seed_everything(self.config["Global"]["seed"] + self.rank + self.start_epoch)
        logger.info("resumed from %s: %d epoch(s) done, best top-1 %.4f", prefix,
                    self.start_epoch, self.best_top1)

    # --------------------------------------------------------------- evaluation
    @paddle.no_grad()
    def evaluate(self, model=None):
        """Top-k accuracy and loss over the validation set (all ranks together).
        -> dict ``top1``, ``top5`` (per Metric.topk), ``loss``, ``count``, ``skipped``."""
        if self.eval_loader is None:
            raise ValueError("DataLoader.Eval.dataset.root is not set: nothing to evaluate")
        model = model or self.model
        was_training = model.training
        model.eval()
        topk = list(self.config["Metric"]["topk"])
        totals = np.zeros(len(topk) + 3, "float64")  # corrects..., count, loss sum, skipped
        for images, labels, skipped in self.eval_loader:
            with self._autocast():
                logits = model(images)
            logits = logits.astype("float32")
            corrects, count = topk_correct(logits, labels, topk)
            if count:
                loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_LABEL,
                                       reduction="sum")
                totals[len(topk) + 1] += float(loss)
            totals[:len(topk)] += corrects
            totals[len(topk)] += count
            totals[len(topk) + 2] += int(skipped.sum())
        if self.world_size > 1:
            summed = paddle.to_tensor(totals)
            dist.all_reduce(summed)
            totals = summed.numpy()
        if was_training:
            model.train()
        count = max(totals[len(topk)], 1.0)
        metrics = {f"top{k}": totals[i] / count for i, k in enumerate(topk)}
        metrics.update(loss=totals[len(topk) + 1] / count, count=int(totals[len(topk)]),
                       skipped=int(totals[len(topk) + 2]))
        return metrics

    def _autocast(self):
        amp = self.config["AMP"]
        return paddle.amp.auto_cast(enable=self.amp_enabled, level=amp["level"],
                                    dtype=amp["dtype"])

    # ----------------------------------------------------------------- training
    def _train_one_epoch(self, epoch):
        config = self.config
        print_interval = config["Global"]["print_interval"]
        smoothing = config["Loss"]["label_smoothing"]
        num_classes = self.arch["num_classes"]
        self.train_model.train()
        self.train_loader.batch_sampler.set_epoch(epoch)
        iters = self.steps_per_epoch * self.accum_steps
        loss_sum, loss_count, skipped_total, images_seen = 0.0, 0, 0, 0
        # PaddleClas's reader_cost (waiting for the loader) and batch_cost (the whole
        # iteration), averaged since the last log line: reader_cost near batch_cost
        # means the loader starves the device
        reader_cost, batch_cost, timed = 0.0, 0.0, 0
        tic = last = time.time()
        for it, batch in enumerate(self.train_loader):
            if it >= iters:
                break  # a trailing partial accumulation would not reach the optimizer
            reader_cost += time.time() - last
            if self.token_labeling:  # token targets [B, K, h, w] of the label maps
                images, token_targets, labels, skipped = batch
            else:
                (images, labels, skipped), token_targets = batch, None
            skipped_total += int(skipped.sum())
            images = self.batch_normalize(images)
            if self.mixup is not None:
                mixed = self.mixup(images, labels, token_targets)
                images, targets = mixed[:2]
                token_targets = mixed[2] if self.token_labeling else None
            else:
                targets = one_hot_smoothed(labels, num_classes, smoothing)
            if self.mix_token is not None:
                images, targets, token_targets, _ = self.mix_token(images, targets,
                                                                   token_targets)
            with self._autocast():
                outputs = self.train_model(images)
            if self.token_labeling:
                loss = token_label_loss(outputs[0], outputs[1].astype("float32"), targets,
                                        token_targets, config["Loss"]["token_beta"])
            else:
                loss = soft_target_cross_entropy(outputs, targets)
            loss_value = self._mean_across_ranks(loss)
            if not math.isfinite(loss_value):
                kept = self._kept()
                raise NonFiniteLossError(
                    f"loss is {loss_value} at epoch {epoch + 1}, iteration {it + 1}; training "
                    f"stopped. {kept} (lower Optimizer.lr.base_lr, set Optimizer.grad_clip, "
                    "or check the data)")
            self.scaler.scale(loss / self.accum_steps).backward()
            if (it + 1) % self.accum_steps == 0:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.clear_grad()
                self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.update(self.model)
            loss_sum += loss_value
            loss_count += 1
            images_seen += images.shape[0] * self.world_size
            now = time.time()
            batch_cost += now - last
            timed += 1
            last = now
            if (it + 1) % print_interval == 0 or it + 1 == iters:
                elapsed = now - tic
                step = epoch * iters + it + 1
                remaining = (self.epochs - epoch) * iters - (it + 1)
                lr = self.optimizer.get_lr()
                logger.info("epoch %d/%d iter %d/%d loss %.4f (avg %.4f) lr %.3e "
                            "reader_cost %.4f s batch_cost %.4f s %.1f images/s eta %s",
                            epoch + 1, self.epochs, it + 1, iters, loss_value,
                            loss_sum / loss_count, lr, reader_cost / timed, batch_cost / timed,
                            images_seen / elapsed, format_eta(elapsed / (it + 1) * remaining))
                self.vdl.add_scalar("train/loss", loss_value, step)
                self.vdl.add_scalar("train/lr", lr, step)
                self.vdl.add_scalar("train/reader_cost", reader_cost / timed, step)
                self.vdl.add_scalar("train/batch_cost", batch_cost / timed, step)
                reader_cost, batch_cost, timed = 0.0, 0.0, 0
        if self.world_size > 1:
            count = paddle.to_tensor([skipped_total], dtype="int64")
            dist.all_reduce(count)
            skipped_total = int(count.item())
        return {"loss": loss_sum / max(loss_count, 1), "skipped": skipped_total,
                "seconds": time.time() - tic, "images": images_seen}

    def _mean_across_ranks(self, loss):
        """Loss value, averaged over ranks so that all ranks agree on a NaN stop."""
        value = loss.detach().astype("float32")
        if self.world_size > 1:
            value = value.clone()
            dist.all_reduce(value)
            value = value / self.world_size
        return float(value)

    def train(self):
        """Train from ``start_epoch`` to ``Global.epochs``; -> dict of final figures
        (``already_trained``: True when a resumed run had nothing left to train)."""
        global_cfg = self.config["Global"]
        train_cfg = self.config["DataLoader"]["Train"]
        done = dict(best_top1=self.best_top1, latest=os.path.join(self.output_dir, "latest"),
                    best=os.path.join(self.output_dir, "best"), already_trained=False)
        if self.start_epoch >= self.epochs:
            logger.info("already trained %d of %d epochs: nothing to do (train longer with "
                        "-o Global.epochs=N, N > %d)", self.start_epoch, self.epochs,
                        self.epochs)
            return dict(done, already_trained=True, epochs_done=self.start_epoch)
        self.write_run_config()
        logger.info("run %s in %s", self.run_id, self.output_dir)
        logger.info("config:\n%s", dump_config(self.config))
        logger.info("training %s on %s: %d process(es) x batch %d x accum %d = global batch "
                    "%d; lr %.3e = base_lr %.3e x %d / %d (linear scaling)", self.arch["name"],
                    self.device, self.world_size, train_cfg["batch_size"], self.accum_steps,
                    self.global_batch, self.peak_lr, self.config["Optimizer"]["lr"]["base_lr"],
                    self.global_batch, self.config["Optimizer"]["lr"]["reference_batch"])
        logger.info("%d training images, %d optimizer steps per epoch, epochs %d..%d",
                    len(self.train_loader.dataset), self.steps_per_epoch,
                    self.start_epoch + 1, self.epochs)
        metrics = {}
        for epoch in range(self.start_epoch, self.epochs):
            summary = self._train_one_epoch(epoch)
            logger.info("epoch %d/%d done: loss %.4f, %.1f s, %.1f images/s, %d unreadable "
                        "image(s) skipped", epoch + 1, self.epochs, summary["loss"],
                        summary["seconds"], summary["images"] / summary["seconds"],
                        summary["skipped"])
            self.vdl.add_scalar("train/epoch_loss", summary["loss"], epoch + 1)
            last = epoch + 1 == self.epochs
            if self.eval_loader is not None and ((epoch + 1) % global_cfg["eval_interval"] == 0
                                                 or last):
                metrics = self._evaluate_and_report(epoch)
                if metrics["top1"] > self.best_top1:
                    self.best_top1 = metrics["top1"]
                    self.save("best", epoch + 1)
                    logger.info("new best top-1 %.4f: saved %s", self.best_top1,
                                os.path.join(self.output_dir, "best"))
            if (epoch + 1) % global_cfg["save_interval"] == 0 or last:
                self.save("latest", epoch + 1)
        self.vdl.close()
        return dict(metrics, **dict(done, best_top1=self.best_top1))

    def _evaluate_and_report(self, epoch):
        metrics = self.evaluate()
        text = ", ".join(f"top{k} {metrics[f'top{k}']:.4f}" for k in self.config["Metric"]["topk"])
        logger.info("epoch %d/%d val: %s, loss %.4f on %d images (%d unreadable skipped)",
                    epoch + 1, self.epochs, text, metrics["loss"], metrics["count"],
                    metrics["skipped"])
        for key in ("top1", "loss"):
            self.vdl.add_scalar(f"val/{key}", metrics[key], epoch + 1)
        if self.ema is not None:
            with self.ema.applied_to(self.model):
                ema_metrics = self.evaluate()
            metrics["ema_top1"] = ema_metrics["top1"]
            logger.info("epoch %d/%d val (EMA weights): top1 %.4f", epoch + 1, self.epochs,
                        ema_metrics["top1"])
            self.vdl.add_scalar("val/ema_top1", ema_metrics["top1"], epoch + 1)
        return metrics
