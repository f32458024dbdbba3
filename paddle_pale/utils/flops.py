"""Parameter and FLOP counting.

FLOPs are multiply-accumulates (the convention of the paper's tables) of convolutions,
linear layers and the functional matmuls a layer declares through a
``functional_macs(inputs, output)`` method (PS-Attention's QK^T and AV), measured by
running one forward pass with hooks, so they follow the real input size and padding.
``paddle.flops`` misses the attention matmuls, which are functional calls. Count on a
model in its plain form: the CPU kernels of :mod:`paddle_pale.kernels` fuse layers.
"""
from collections import OrderedDict

import paddle
import paddle.nn as nn


__all__ = ["count_params", "count_flops", "attention_macs", "format_flops_report",
           "mode_flops_rows", "format_mode_flops_table", "format_macs"]


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


def _functional_macs(layer, inputs, output):
    return layer.functional_macs(inputs, output)


def _counter_of(layer, counters):
    """The MAC counter of ``layer``: the first matching ``(class, counter)`` pair, else
    its own ``functional_macs``; None for a layer that computes nothing counted."""
    for kind, macs in counters:
        if isinstance(layer, kind):
            return macs
    return _functional_macs if hasattr(layer, "functional_macs") else None


def _group_of(name):
    """'stages.2.5.attn.query' -> 'stage3'; classifier and others by their first name."""
    parts = name.split(".")
    if not name:
        return "total"
    if parts[0] in ("patch_embeds", "stages", "stage_norms") and len(parts) > 1:
        return f"stage{int(parts[1]) + 1}"
    return parts[0]


def count_flops(model, input_size, forward=None, extra_counters=(), group_of=None):
    """MACs of one image of ``input_size = (C, H, W)`` (or ``(H, W)``).

    Args:
        model: a Layer; ``forward(model, x)`` runs it (default ``model(x)``).
        extra_counters: ``(LayerClass, macs(layer, inputs, output))`` pairs for layers
            that do functional work the built-in counters miss (checked first).
        group_of: ``group_of(name, layer) -> str``, the breakdown group of a counted
            layer (default: its stage, or its top-level name).

    Returns:
        ``(total, breakdown)``: an int, and an OrderedDict group -> MACs where groups
        are ``stage1..stage4`` and the remaining top-level layers (e.g. ``head``).
    """
    if len(input_size) == 2:
        input_size = (getattr(model, "in_channels", 3), *input_size)
    counters = (*extra_counters, (nn.Conv2D, _conv_macs), (nn.Linear, _linear_macs))
    breakdown = OrderedDict()
    hooks = []
    for name, layer in model.named_sublayers(include_self=True):
        macs = _counter_of(layer, counters)
        if macs is None:
            continue
        group = group_of(name, layer) if group_of else _group_of(name)
        breakdown.setdefault(group, 0)

        def hook(layer, inputs, output, macs=macs, group=group):
            breakdown[group] += macs(layer, inputs, output)
        hooks.append(layer.register_forward_post_hook(hook))
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


def format_flops_report(model, name, size):
    """Text table of params and MACs per stage of ``model`` (called ``name``) at
    ``size=(H, W)``."""
    total, breakdown = count_flops(model, size)
    lines = [f"model {name}  input {size[0]}x{size[1]}",
             f"params: {count_params(model) / 1e6:.2f}M",
             f"FLOPs (MACs): {format_macs(total)}"]
    for group, macs in breakdown.items():  # G, or M below 0.1G (a small model's stages)
        lines.append(f"  {group:<8} {format_macs(macs):>9}  {100.0 * macs / total:5.1f}%")
    return "\n".join(lines)


def attention_macs(model, input_size):
    """``(total, attention)``: MACs of one image, and those of the attention matmuls
    alone (the layers' ``functional_macs``: QK^T and AV over each mode's region)."""
    total, breakdown = count_flops(
        model, input_size,
        group_of=lambda name, layer: "attention" if hasattr(layer, "functional_macs")
        else "other")
    return total, breakdown.get("attention", 0)


def mode_flops_rows(models, size):
    """One dict per ``(mode, model)`` of ``models`` at ``size=(H, W)``: ``mode``,
    ``params``, ``macs`` (whole model) and ``attention_macs``."""
    rows = []
    for mode, model in models:
        total, attention = attention_macs(model, size)
        rows.append({"mode": mode, "params": count_params(model), "macs": total,
                     "attention_macs": attention})
    return rows


def format_mode_flops_table(models, name, size):
    """Markdown table of params and MACs per attention mode (see :func:`mode_flops_rows`)
    of variant ``name``."""
    lines = [f"model {name}  input {size[0]}x{size[1]}",
             "| attention mode | params | FLOPs (MACs) | attention MACs |",
             "|---|---|---|---|"]
    for row in mode_flops_rows(models, size):
        lines.append(f"| {row['mode']} | {row['params'] / 1e6:.2f}M | "
                     f"{format_macs(row['macs'])} | {format_macs(row['attention_macs'])} |")
    return "\n".join(lines)


def format_macs(macs):
    """``4.203G``, or ``12.34M`` below 0.1G (small models keep their digits)."""
    return f"{macs / 1e9:.3f}G" if macs >= 1e8 else f"{macs / 1e6:.2f}M"
