"""Model, optimizer, learning-rate schedule and loss from the config."""
import logging

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..models.registry import create_model

__all__ = ["build_model", "arch_record", "scaled_learning_rate", "build_lr_scheduler",
           "build_optimizer", "layer_ids", "layer_decay_scales", "soft_target_cross_entropy",
           "token_label_loss"]

logger = logging.getLogger("paddle_pale")


def build_model(arch):
    """``Arch: {name: pale_t, **kwargs}`` -> model."""
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return create_model(arch["name"], **kwargs)


# Arch keys that change how a model trains, not what it is: left out of the record, so
# a run may resume, evaluate or export with them switched
TRAINING_ONLY_ARCH_KEYS = ("grad_checkpointing",)


def arch_record(arch, model):
    """The Arch dict written into checkpoints: name, kwargs, and the real num_classes;
    training-only switches (:data:`TRAINING_ONLY_ARCH_KEYS`) left out."""
    record = {k: v for k, v in arch.items() if k not in TRAINING_ONLY_ARCH_KEYS}
    record.setdefault("num_classes", model.num_classes)
    return record


def scaled_learning_rate(lr_cfg, global_batch):
    """Linear scaling rule (Goyal et al. 2017): ``base_lr * global_batch / reference``."""
    return lr_cfg["base_lr"] * global_batch / lr_cfg["reference_batch"]


def build_lr_scheduler(lr_cfg, peak_lr, steps_per_epoch, epochs):
    """Per-optimizer-step schedule: linear warm-up then cosine decay to ``min_lr``."""
    total = steps_per_epoch * epochs
    warmup = min(int(round(lr_cfg["warmup_epochs"] * steps_per_epoch)), total)
    if lr_cfg["name"] == "Cosine":
        schedule = paddle.optimizer.lr.CosineAnnealingDecay(
            peak_lr, T_max=max(1, total - warmup), eta_min=lr_cfg["min_lr"])
    else:
        schedule = paddle.optimizer.lr.LambdaDecay(peak_lr, lambda step: 1.0)
    if warmup == 0:
        return schedule
    return paddle.optimizer.lr.LinearWarmup(schedule, warmup_steps=warmup,
                                            start_lr=lr_cfg["warmup_start_lr"], end_lr=peak_lr)


def layer_ids(model):
    """Depth of every parameter for layer-wise lr decay, as timm's
    ``param_groups_layer_decay`` (BEiT, ConvNeXt): ``{name: id}`` with the stem
    (``patch_embeds.0``) 0, block ``i`` of all blocks in order ``i + 1``, a stage's patch
    merging with the first block it feeds, a stage's norm with its last block, and the
    classifier (``norm``, ``head``) ``num_blocks + 1``. -> ``(ids, num_blocks + 1)``."""
    depths = [len(stage) for stage in model.stages]
    first = [1 + sum(depths[:s]) for s in range(len(depths))]  # id of each stage's 1st block
    top = sum(depths) + 1
    ids = {}
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "patch_embeds":
            ids[name] = 0 if parts[1] == "0" else first[int(parts[1])]
        elif parts[0] == "stages":
            ids[name] = first[int(parts[1])] + int(parts[2])
        elif parts[0] == "stage_norms":
            stage = int(parts[1])
            ids[name] = first[stage] + depths[stage] - 1
        else:  # norm, head: the classifier
            ids[name] = top
    return ids, top


def layer_decay_scales(model, decay):
    """``{name: decay ** (top - id)}`` (see :func:`layer_ids`): the classifier trains at
    the full lr, each block below it at ``decay`` times the lr of the one above."""
    ids, top = layer_ids(model)
    return {name: decay ** (top - layer) for name, layer in ids.items()}


def build_optimizer(opt_cfg, model, lr_scheduler):
    """AdamW over the trainable parameters; no weight decay on norm scales and biases
    when ``no_decay_norm_and_bias``, as in Swin/DeiT. Biases are told by name, not by
    shape: the fused Q/K/V bias is ``[3, 1, C]``; norm scales are the other 1-D ones.
    ``layer_decay`` (fine-tuning, timm/BEiT): one parameter group per depth, whose
    ``learning_rate`` (Paddle's per-parameter multiplier of the schedule's lr) is
    :func:`layer_decay_scales`."""
    named = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    params = [p for _, p in named]
    if opt_cfg.get("layer_decay") is not None:
        scales = layer_decay_scales(model, opt_cfg["layer_decay"])
        groups = {}
        for name, param in named:
            groups.setdefault(scales[name], []).append(param)
        params = [{"params": group, "learning_rate": scale}
                  for scale, group in sorted(groups.items())]
    if opt_cfg["no_decay_norm_and_bias"]:
        decayed = {p.name for n, p in named
                   if len(p.shape) > 1 and not n.endswith(".bias")}
        apply_decay = lambda name: name in decayed  # noqa: E731
    else:
        apply_decay = None
    clip = opt_cfg["grad_clip"]
    return paddle.optimizer.AdamW(
        learning_rate=lr_scheduler, beta1=opt_cfg["beta1"], beta2=opt_cfg["beta2"],
        epsilon=opt_cfg["epsilon"], parameters=params, weight_decay=opt_cfg["weight_decay"],
        apply_decay_param_fun=apply_decay,
        grad_clip=nn.ClipGradByGlobalNorm(float(clip)) if clip else None)


def soft_target_cross_entropy(logits, targets):
    """Mean over the batch of ``-sum(targets * log_softmax(logits))``."""
    return (-targets * F.log_softmax(logits.astype("float32"), axis=-1)).sum(axis=-1).mean()


def token_label_loss(logits, token_logits, targets, token_targets, beta=0.5):
    """Token-labeling loss (LV-ViT's ``TokenLabelCrossEntropy``): the image-level soft
    cross-entropy of ``logits [B, K]`` against ``targets [B, K]``, plus ``beta`` times the
    mean over every token of the batch of the soft cross-entropy of ``token_logits
    [B, h, w, K]`` against ``token_targets [B, K, h, w]`` (channels first, as the loader
    ships them)."""
    num_classes = logits.shape[-1]
    dense_logits = token_logits.reshape([-1, num_classes])
    dense_targets = token_targets.transpose([0, 2, 3, 1]).reshape([-1, num_classes])
    return (soft_target_cross_entropy(logits, targets)
            + beta * soft_target_cross_entropy(dense_logits, dense_targets))
