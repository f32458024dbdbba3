"""Parameter and FLOP counting.

FLOPs are multiply-accumulates (the convention of the paper's tables) of convolutions,
linear layers and the two attention matmuls of every PS-Attention module, measured by
running one forward pass with hooks, so they follow the real input size and padding.
``paddle.flops`` misses the attention matmuls, which are functional calls.
"""
from collections import OrderedDict

import paddle
import paddle.nn as nn

from ..models.attention import pale_attention_macs
from ..models.pale import PaleAttention, QKVProjection

__all__ = ["count_params", "count_flops"]


def count_params(model, trainable_only=False):
    """Number of parameter elements (stage norms frozen in classification included)."""
    return sum(int(p.numel()) for p in model.parameters()
               if not (trainable_only and p.stop_gradient))


# count_flops feeds ONE image, so a layer's whole output belongs to it: the leading
# axis is not always the image axis (Swin's window attention batches windows there)
def _conv_macs(layer, inputs, output):
    kernel = layer.weight.shape  # [out, in / groups, kh, kw]
    per_output = kernel[1] * kernel[2] * kernel[3]
    return int(output.numel()) * per_output


def _linear_macs(layer, inputs, output):
    in_features, out_features = layer.weight.shape
    return int(output.numel()) // out_features * in_features * out_features


def _attention_macs(layer, inputs, output):
    _, height, width, channels = inputs[0].shape
    return pale_attention_macs(height, width, channels, layer.pale_size)


def _qkv_macs(layer, inputs, output):
    # functional: the 3x3 depth-wise conv with 3 filters per channel (27 hwc) and the
    # three C x C maps (3 hwc^2) as one batched matmul
    _, height, width, channels = inputs[0].shape
    return 3 * height * width * channels * channels + 27 * height * width * channels


def _group_of(name):
    """'stages.2.5.attn.query' -> 'stage3'; classifier and others by their first name."""
    parts = name.split(".")
    if not name:
        return "total"
    if parts[0] in ("patch_embeds", "stages", "stage_norms") and len(parts) > 1:
        return f"stage{int(parts[1]) + 1}"
    return parts[0]


def count_flops(model, input_size, forward=None, extra_counters=()):
    """MACs of one image of ``input_size = (C, H, W)`` (or ``(H, W)``).

    Args:
        model: a Layer; ``forward(model, x)`` runs it (default ``model(x)``).
        extra_counters: ``(LayerClass, macs(layer, inputs, output))`` pairs for layers
            that do functional work the built-in counters miss (checked first).

    Returns:
        ``(total, breakdown)``: an int, and an OrderedDict group -> MACs where groups
        are ``stage1..stage4`` and the remaining top-level layers (e.g. ``head``).
    """
    if len(input_size) == 2:
        input_size = (getattr(model, "in_channels", 3), *input_size)
    counters = (*extra_counters, (PaleAttention, _attention_macs),
                (QKVProjection, _qkv_macs), (nn.Conv2D, _conv_macs), (nn.Linear, _linear_macs))
    breakdown = OrderedDict()
    hooks = []
    for name, layer in model.named_sublayers(include_self=True):
        for kind, macs in counters:
            if isinstance(layer, kind):
                group = _group_of(name)
                breakdown.setdefault(group, 0)

                def hook(layer, inputs, output, macs=macs, group=group):
                    breakdown[group] += macs(layer, inputs, output)
                hooks.append(layer.register_forward_post_hook(hook))
                break
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            x = paddle.zeros([1, *input_size])
            (forward or (lambda m, t: m(t)))(model, x)
    finally:
        for handle in hooks:
            handle.remove()
        model.train() if was_training else model.eval()
    return sum(breakdown.values()), breakdown


def format_flops_report(name, size, **model_args):
    """Text table of params and MACs per stage for variant ``name`` at ``size=(H, W)``."""
    from ..models.registry import create_model

    model = create_model(name, **model_args)
    total, breakdown = count_flops(model, size)
    lines = [f"model {name}  input {size[0]}x{size[1]}",
             f"params: {count_params(model) / 1e6:.2f}M",
             f"FLOPs (MACs): {total / 1e9:.3f}G"]
    for group, macs in breakdown.items():
        lines.append(f"  {group:<8} {macs / 1e9:8.3f}G  {100.0 * macs / total:5.1f}%")
    return "\n".join(lines)
