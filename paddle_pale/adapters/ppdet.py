"""PaddleDetection backbone: ``backbone: PaleTransformer`` in a ppdet config.

Importing this module registers :class:`PaleTransformer` in ppdet's workspace, so it
must be imported before ``ppdet.core.workspace.load_config`` reads a config that names
it (``tools/train_det.py`` and ``tools/eval_det.py`` do so). It also installs the Paddle
3.x fixes of :mod:`.ppdet_compat` that the installed ppdet needs: registering and fixing
are what importing this module is for.
"""
from ppdet.core.workspace import register, serializable
from ppdet.modeling.shape_spec import ShapeSpec

from . import ppdet_compat
from .backbone import DenseBackbone

__all__ = ["PaleTransformer"]

ppdet_compat.apply()


@register
@serializable
class PaleTransformer(DenseBackbone):
    """Pale Transformer as a PaddleDetection backbone; arguments as
    :class:`~paddle_pale.adapters.backbone.DenseBackbone` (``arch``, ``out_indices``,
    ``drop_path_rate``, ``frozen_stages``, ``pretrained`` and any model argument).
    ``forward`` reads ``inputs["image"]``; ``out_shape`` gives one ``ShapeSpec`` per
    returned map."""

    def forward(self, inputs):
        return self.pyramid(inputs["image"])

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.feature_info[i]["num_chs"],
                          stride=self.feature_info[i]["reduction"])
                for i in self.out_indices]
