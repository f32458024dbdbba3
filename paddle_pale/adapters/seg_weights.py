"""Weights into a PaddleSeg model: the package's one loader, read without running code."""


from ..utils.io import load_weights

__all__ = ["load_segmentation_weights"]


def load_segmentation_weights(model, path, allow_mismatch=False):
    """Load a segmentation checkpoint (``model.pdparams`` written by training) into
    ``model``; any missing, unexpected or differently shaped key raises ValueError,
    since evaluating a half-loaded model would give a meaningless mIoU.
    ``allow_mismatch`` loads what fits instead and logs a warning."""
    load_weights(model, path, strict=not allow_mismatch, exact=True,
                 what="this model (wrong config or variant?)", owner_prefixes=("backbone.",),
                 hint="they look like classification or backbone weights: pass them as "
                      "model.backbone.pretrained instead")
