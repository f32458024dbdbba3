"""Pale Transformer as a PaddleSeg backbone.

Importing this module registers ``PaleTransformer`` with
``paddleseg.cvlibs.manager.BACKBONES``, so a PaddleSeg config can say::

    model:
      type: UPerNet
      backbone: {type: PaleTransformer, arch: pale_t, pretrained: best.pdparams}

It also installs the Paddle 3.x fixes of :mod:`.paddleseg_compat` that the installed
PaddleSeg needs (paddleseg 2.8.0 all three, PaddleSeg's ``develop`` none): registering
and fixing are what importing this module is for.
"""
try:
    from paddleseg.cvlibs import manager
except ImportError as error:
    raise ImportError("paddle_pale.adapters.paddleseg needs paddleseg (2.8.0 or a "
                      "develop checkout): pip install 'paddle-pale[seg]'") from error

from . import paddleseg_compat
from .backbone import DenseBackbone

__all__ = ["PaleTransformer"]

paddleseg_compat.apply()


@manager.BACKBONES.add_component
class PaleTransformer(DenseBackbone):
    """Pale Transformer as a PaddleSeg backbone; arguments as
    :class:`~paddle_pale.adapters.backbone.DenseBackbone` (``arch``, ``in_channels``,
    which PaddleSeg's builder fills from the data set, ``out_indices``,
    ``drop_path_rate``, ``frozen_stages``, ``pretrained`` and any model argument).
    ``forward(x)`` returns the NCHW maps of ``out_indices``, ``feat_channels`` their
    channels."""

    def forward(self, x):
        return self.pyramid(x)
