"""Model registry: variants hold only their size arguments; callers override any."""
import inspect

from ..utils.constants import IMAGENET_MEAN, IMAGENET_STD
from ..utils.io import load_weights
from .pale import PaleTransformer

__all__ = ["register_model", "create_model", "list_models", "model_defaults", "model_default",
           "model_arguments", "pretrained_cfg"]

_FACTORIES = {}
_PRETRAINED_CFGS = {}

# evaluation preprocessing of the ImageNet models (224 input, 0.875 crop as in Swin/CSWin)
IMAGENET_CFG = dict(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, num_classes=1000)


def register_model(fn=None, *, pretrained_cfg=None):
    """Register a factory ``fn(**kwargs) -> Layer`` under its function name."""
    def wrap(factory):
        _FACTORIES[factory.__name__] = factory
        _PRETRAINED_CFGS[factory.__name__] = dict(pretrained_cfg or IMAGENET_CFG)
        return factory
    return wrap(fn) if fn is not None else wrap


def list_models():
    """Sorted names of the registered variants."""
    return sorted(_FACTORIES)


def _factory(name):
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _FACTORIES[name]


def pretrained_cfg(name):
    """Input size, crop, mean/std and number of classes a variant is evaluated with."""
    _factory(name)
    return dict(_PRETRAINED_CFGS[name])


def model_defaults(name):
    """The size arguments a variant passes to its model class."""
    return dict(_factory(name).model_args)


def model_arguments():
    """``{argument: default}`` of :class:`PaleTransformer` (the keys an ``Arch`` may set
    besides ``name``)."""
    parameters = inspect.signature(PaleTransformer.__init__).parameters
    return {key: p.default for key, p in parameters.items() if key != "self"}


def model_default(name, key):
    """What variant ``name`` builds for argument ``key`` when the caller omits it: the
    variant's own value, else the model class's default (None for an unknown key)."""
    defaults = model_defaults(name)
    return defaults[key] if key in defaults else model_arguments().get(key)


def create_model(name, pretrained=None, strict=True, **overrides):
    """Build variant ``name``; ``overrides`` replace the variant's defaults.

    Args:
        name: one of :func:`list_models`.
        pretrained: optional weights to load: a ``.pdparams`` or ``.safetensors`` file,
            or a checkpoint prefix; every tensor but the classifier must fit.
        strict: False loads the tensors of ``pretrained`` that fit and warns about the
            others (see :func:`paddle_pale.utils.io.load_weights`).
        **overrides: model arguments, e.g. ``num_classes``, ``drop_path_rate``,
            ``pale_size``, ``in_channels``.
    """
    model = _factory(name)(**overrides)
    if pretrained:
        load_weights(model, pretrained, strict=strict, what=f"{name}")
    return model


def _variant(model_args):
    """Turn a dict of size arguments into a registered factory's body."""
    def decorate(fn):
        def factory(**kwargs):
            return PaleTransformer(**dict(model_args, **kwargs))
        factory.__name__ = fn.__name__
        factory.__doc__ = fn.__doc__
        factory.model_args = dict(model_args)
        return register_model(factory)
    return decorate


# Table 1 of the paper: depths [2, 2, 16, 2], S_i = 7, R_i = 4 for every variant.
@_variant(dict(embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16)))
def pale_t():
    """Pale-T: 22M params, 4.2G FLOPs at 224x224 (Table 2)."""


@_variant(dict(embed_dims=(96, 192, 384, 768), num_heads=(2, 4, 8, 16)))
def pale_s():
    """Pale-S: 48M params, 9.0G FLOPs at 224x224 (Table 2)."""


@_variant(dict(embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32)))
def pale_b():
    """Pale-B: 85M params, 15.6G FLOPs at 224x224 (Table 2)."""
