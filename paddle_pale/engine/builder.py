"""Model, optimizer, learning-rate schedule and loss from the config."""
import logging

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..models.registry import create_model

__all__ = ["build_model", "arch_record", "scaled_learning_rate", "build_lr_scheduler",
           "build_optimizer", "soft_target_cross_entropy"]

logger = logging.getLogger("paddle_pale")


def build_model(arch):
    """``Arch: {name: pale_t, **kwargs}`` -> model."""
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    return create_model(arch["name"], **kwargs)


def arch_record(arch, model):
    """The Arch dict written into checkpoints: name, kwargs, and the real num_classes."""
    record = dict(arch)
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


def build_optimizer(opt_cfg, model, lr_scheduler):
    """AdamW over the trainable parameters; no weight decay on norm scales and biases
    when ``no_decay_norm_and_bias``, as in Swin/DeiT. Biases are told by name, not by
    shape: the fused Q/K/V bias is ``[3, 1, C]``; norm scales are the other 1-D ones."""
    named = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    params = [p for _, p in named]
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
