"""The Pale Transformer as a dense-prediction backbone: what the PaddleSeg and
PaddleDetection adapters share. Imports neither library."""
from ..models import pale
from ..models.registry import model_defaults
from ..utils.io import load_weights

__all__ = ["DenseBackbone"]

# arguments a dense backbone fixes itself: it never owns a classifier
_RESERVED = ("with_classifier", "num_classes")


class DenseBackbone(pale.PaleTransformer):
    """The classification model without its classifier, returning a feature pyramid.

    A subclass, not a copy, so parameter names are those of a classification checkpoint:
    one loads with only the classifier (``norm.*``, ``head.*``) left over.

    Args:
        arch: variant whose sizes to use, one of ``paddle_pale.list_models()``.
        in_channels: image channels.
        out_indices: stages whose NCHW maps are returned, increasing, 0-3 (strides 4, 8,
            16, 32); the stages after the last one are not built into the forward.
        drop_path_rate: stochastic depth of the deepest block (Swin-T's 0.2 by default;
            the shipped seg/det configs set each variant's).
        frozen_stages: leading stages (patch merging and blocks) kept frozen, as in
            PaddleDetection's SwinTransformer; -1 or 0 trains everything.
        grad_checkpointing: recompute each block's activations in the backward pass
            (:meth:`~paddle_pale.models.pale.PaleTransformer.set_grad_checkpointing`):
            less memory for the same gradients, at more step time (1.4x measured
            for UPerNet-Pale-T on CPU).
        pretrained: classification checkpoint (``.pdparams`` or prefix) or exported
            backbone weights (``.pdparams``, ``.safetensors``); the classifier is left
            out, any other missing, unexpected or differently shaped tensor raises.
        strict: False loads the tensors of ``pretrained`` that fit and warns about the
            others.
        **overrides: any other :class:`~paddle_pale.models.pale.PaleTransformer`
            argument, replacing the variant's value (e.g. ``depths``, ``pale_size``).
    """

    def __init__(self, arch="pale_t", in_channels=3, out_indices=(0, 1, 2, 3),
                 drop_path_rate=0.2, frozen_stages=-1, grad_checkpointing=False,
                 pretrained=None, strict=True, **overrides):
        reserved = sorted(set(overrides) & set(_RESERVED))
        if reserved:
            raise ValueError(f"a PaleTransformer backbone builds no classifier; remove "
                             f"{', '.join(reserved)} from the backbone config")
        super().__init__(**dict(model_defaults(arch), in_channels=in_channels,
                                drop_path_rate=drop_path_rate, with_classifier=False,
                                grad_checkpointing=grad_checkpointing, **overrides))
        num_stages = len(self.stages)
        self.out_indices = tuple(self.check_out_indices(out_indices))
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in [-1, {num_stages}], got "
                             f"{frozen_stages}")
        self.arch = arch
        self.frozen_stages = max(frozen_stages, 0)
        self.pretrained = pretrained
        # stages after the last returned one, and norms of stages not returned, get no
        # gradient; frozen, they cannot stall data-parallel gradient syncing
        unused = [self.stage_norms[i] for i in range(num_stages) if i not in self.out_indices]
        unused += [layer for i in range(self.out_indices[-1] + 1, num_stages)
                   for layer in (self.patch_embeds[i], self.stages[i])]
        for layer in self._frozen_layers() + unused:
            for param in layer.parameters():
                param.stop_gradient = True
        if pretrained:
            load_weights(self, pretrained, strict=strict, what=f"the {arch} backbone")

    @property
    def feat_channels(self):
        """Channels of the maps :meth:`pyramid` returns, in the same order."""
        return [self.embed_dims[i] for i in self.out_indices]

    def _frozen_layers(self):
        return [layer for stage in range(self.frozen_stages)
                for layer in (self.patch_embeds[stage], self.stages[stage])]

    def pyramid(self, x):
        """NCHW maps of ``out_indices`` for images ``x``."""
        if self.training:
            # ``model.train()`` re-enables drop path everywhere; frozen stages must give
            # the features they were trained to give (the flags are set directly:
            # ``Layer.eval()`` would also flip the global tracer)
            for layer in self._frozen_layers():
                for sublayer in [layer] + layer.sublayers():
                    sublayer.training = False
        return self.forward_pyramid(x, self.out_indices)
