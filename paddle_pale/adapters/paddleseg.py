"""Pale Transformer as a PaddleSeg backbone.

Importing this module registers ``PaleTransformer`` with
``paddleseg.cvlibs.manager.BACKBONES``, so a PaddleSeg config can say::

    model:
      type: UPerNet
      backbone: {type: PaleTransformer, arch: pale_t, pretrained: best.pdparams}

It also applies the Paddle 3.x compatibility fixes of :mod:`.paddleseg_compat`, which
PaddleSeg 2.8.0 needs to train and evaluate.
"""
try:
    from paddleseg.cvlibs import manager
except ImportError as error:
    raise ImportError("paddle_pale.adapters.paddleseg needs paddleseg==2.8.0: "
                      "pip install 'paddle-pale[seg]'") from error

from ..models import pale
from ..models.registry import model_defaults
from ..utils.io import load_pretrained
from . import paddleseg_compat

__all__ = ["PaleTransformer"]

paddleseg_compat.apply()


@manager.BACKBONES.add_component
class PaleTransformer(pale.PaleTransformer):
    """The classification model without its classifier, returning a feature pyramid.

    A subclass, not a copy, so parameter names are those of a classification checkpoint.

    Args:
        arch: variant whose sizes to use, one of ``paddle_pale.list_models()``.
        in_channels: image channels (PaddleSeg's builder fills it from the dataset).
        out_indices: stages to return, 0..3 (strides 4, 8, 16, 32).
        pretrained: classification checkpoint (``.pdparams`` or prefix) or exported
            backbone weights; the classifier is dropped, a backbone shape mismatch raises.
        drop_path_rate: stochastic depth of the deepest block.
        **overrides: any other ``paddle_pale.models.pale.PaleTransformer`` argument,
            replacing the variant's value (e.g. ``depths`` for a small test model).
    """

    def __init__(self, arch="pale_t", in_channels=3, out_indices=(0, 1, 2, 3),
                 pretrained=None, drop_path_rate=0.0, **overrides):
        for forbidden in ("num_classes", "with_classifier"):
            if forbidden in overrides:
                raise ValueError(f"a PaddleSeg backbone has no classifier; remove "
                                 f"{forbidden}={overrides[forbidden]!r} from the config")
        args = dict(model_defaults(arch), **overrides)
        super().__init__(in_channels=in_channels, num_classes=0,
                         drop_path_rate=drop_path_rate, with_classifier=False, **args)
        self.arch = arch
        self.out_indices = tuple(self.check_out_indices(out_indices))
        self.pretrained = pretrained
        if pretrained:
            load_pretrained(self, pretrained)

    @property
    def feat_channels(self):
        """Channels of the maps ``forward`` returns, in the same order."""
        return [self.embed_dims[i] for i in self.out_indices]

    def forward(self, x):
        return self.forward_pyramid(x, self.out_indices)
