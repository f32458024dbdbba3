"""Params and FLOPs of a PaddleSeg config's model (``tools/flops_seg.py``, Table 4)."""
import paddle
from paddleseg.cvlibs import SegBuilder

from .seg_config import load_config

__all__ = ["seg_model_report"]


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
