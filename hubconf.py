"""paddle.hub entry points of the Pale Transformer variants (Paddle's ``hubconf.py``
convention):

    import paddle
    paddle.hub.list("path/to/paddle-pale", source="local")            # ['pale_b', ...]
    print(paddle.hub.help("path/to/paddle-pale", "pale_t", source="local"))
    model = paddle.hub.load("path/to/paddle-pale", "pale_t", source="local",
                            pretrained="pale_t.safetensors", num_classes=10)

``pretrained`` goes through the project's one loader: ``.safetensors`` or ``.pdparams``
read without running code from the file, strict unless ``strict=False``.
"""
from paddle_pale.models.registry import create_model as _create_model
from paddle_pale.models.registry import list_models as _list_models
from paddle_pale.models.registry import pretrained_cfg as _pretrained_cfg

dependencies = ["paddle", "numpy", "yaml"]


def _entry_point(name):
    def entry(pretrained=None, strict=True, **kwargs):
        return _create_model(name, pretrained=pretrained, strict=strict, **kwargs)
    entry.__name__ = entry.__qualname__ = name
    cfg = _pretrained_cfg(name)
    entry.__doc__ = (
        f"{name}: the {name.replace('_', '-').title()} Pale Transformer (ImageNet eval "
        f"input {cfg['input_size'][-1]}, crop_pct {cfg['crop_pct']}).\n\n"
        f"Args:\n"
        f"    pretrained: weights (.safetensors, .pdparams or a checkpoint prefix); the\n"
        f"        classifier is left out when num_classes differs.\n"
        f"    strict: False loads only the tensors that fit (warned about).\n"
        f"    **kwargs: model arguments, e.g. num_classes, drop_path_rate,\n"
        f"        attention_mode, with_classifier.\n")
    return entry


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
