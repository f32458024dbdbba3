"""PaddleDetection backbone: ``backbone: PaleTransformer`` in a ppdet config.

Importing this module registers :class:`PaleTransformer` in ppdet's workspace, so it
must be imported before ``ppdet.core.workspace.load_config`` reads a config that names
it (``tools/train_det.py`` and ``tools/eval_det.py`` do so).
"""
from ppdet.core.workspace import register, serializable
from ppdet.modeling.shape_spec import ShapeSpec

from ..models import pale
from ..models.registry import model_defaults
from ..utils.io import load_pretrained

__all__ = ["PaleTransformer"]

# arguments the detection backbone fixes itself: it never owns a classifier
_RESERVED = ("with_classifier", "num_classes")


@register
@serializable
class PaleTransformer(pale.PaleTransformer):
    """Pale Transformer as a PaddleDetection backbone (same parameters, same names
    as the classification model, so an ImageNet checkpoint loads with only the
    classifier left over).

    Args:
        arch: variant whose sizes are used (``pale_t``, ``pale_s``, ``pale_b``).
        out_indices: stages whose NCHW maps are returned (0-3: strides 4/8/16/32).
        drop_path_rate: stochastic depth of the last block.
        frozen_stages: number of leading stages (patch embedding and blocks) kept
            frozen, as in ppdet's SwinTransformer; -1 or 0 trains everything.
        pretrained: path of a classification checkpoint (``.pdparams`` or prefix).
        overrides: any other ``paddle_pale.models.pale.PaleTransformer`` argument,
            e.g. ``depths`` or ``pale_size``; they replace the variant's values.
    """

    def __init__(self, arch="pale_t", out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
                 frozen_stages=-1, pretrained=None, **overrides):
        reserved = sorted(set(overrides) & set(_RESERVED))
        if reserved:
            raise ValueError(f"PaleTransformer (ppdet) builds no classifier; remove "
                             f"{', '.join(reserved)} from the backbone config")
        super().__init__(**dict(model_defaults(arch), drop_path_rate=drop_path_rate,
                                with_classifier=False, **overrides))
        num_stages = len(self.stages)
        out_indices = self.check_out_indices(out_indices)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in [-1, {num_stages}], got "
                             f"{frozen_stages}")
        self.arch = arch
        self.out_indices = out_indices
        self.frozen_stages = max(frozen_stages, 0)
        # stages after the last returned one, and norms of stages not returned, get
        # no gradient; frozen, they cannot stall data-parallel gradient syncing
        unused = [self.stage_norms[i] for i in range(num_stages) if i not in out_indices]
        unused += [self.stages[i] for i in range(out_indices[-1] + 1, num_stages)]
        unused += [self.patch_embeds[i] for i in range(out_indices[-1] + 1, num_stages)]
        for layer in self._frozen_layers() + unused:
            for param in layer.parameters():
                param.stop_gradient = True
        if pretrained:
            load_pretrained(self, pretrained)

    def _frozen_layers(self):
        return [layer for stage in range(self.frozen_stages)
                for layer in (self.patch_embeds[stage], self.stages[stage])]

    def forward(self, inputs):
        if self.training:
            # ``model.train()`` re-enables drop path everywhere; frozen stages must
            # give the features they were trained to give
            # (set the flags directly: ``Layer.eval()`` also flips the global tracer)
            for layer in self._frozen_layers():
                for sublayer in [layer] + layer.sublayers():
                    sublayer.training = False
        return self.forward_pyramid(inputs["image"], self.out_indices)

    @property
    def out_shape(self):
        return [ShapeSpec(channels=self.feature_info[i]["num_chs"],
                          stride=self.feature_info[i]["reduction"])
                for i in self.out_indices]
