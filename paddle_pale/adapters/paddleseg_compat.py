"""Fixes that let PaddleSeg 2.8.0 train and evaluate on Paddle 3.x.

PaddleSeg 2.8.0 predates Paddle's 0-D tensors (reductions return shape ``[]``) and the
end of implicit int/float promotion. Three functions break on Paddle 3.3.1; each fix
below replaces exactly that one function, keeping its contract:

* ``CrossEntropyLoss._post_process_loss``: ``mask * coef`` multiplies float32 by the
  int64 ``ones_like(label)`` (TypeError) -> the unweighted coefficient is made float;
* ``paddleseg.core.train.loss_computation``: ``train`` logs ``loss[0]`` of each loss,
  an IndexError on 0-D losses -> each loss is returned with shape ``[1]``;
* ``paddleseg.utils.metrics.calculate_area``: ``paddle.concat`` of 0-D per-class sums
  fails -> the areas are counted with ``bincount``.

:func:`apply` is called by ``paddle_pale.adapters.paddleseg`` (our seg integration)
only; importing ``paddle_pale`` patches nothing.
"""
import functools

import paddle

from . import compat

__all__ = ["FIXES", "apply", "original", "calculate_area"]


def original(qualname):
    """The unpatched PaddleSeg function ``qualname`` (as named in :data:`FIXES`)."""
    module_name = next(module for module, name, _ in FIXES if name == qualname)
    return compat.original(module_name, qualname)


def _float_coefficient_post_process(unpatched):
    @functools.wraps(unpatched)
    def post_process_loss(self, logit, label, semantic_weights, loss):
        if self.weight is None:
            # without class weights the per-pixel coefficient is ones_like(label); a
            # float label makes it float, which Paddle 3 needs to multiply the mask
            label = label.astype(loss.dtype)
        return unpatched(self, logit, label, semantic_weights, loss)
    return post_process_loss


def _one_element_losses(unpatched):
    @functools.wraps(unpatched)
    def loss_computation(*args, **kwargs):
        # paddleseg.core.train logs `loss[0]`, which needs a 1-element loss, not 0-D
        return [loss.reshape([1]) for loss in unpatched(*args, **kwargs)]
    return loss_computation


def _count(values, num_classes):
    """How often each of 0..num_classes-1 occurs in ``values`` (others not counted)."""
    values = values.flatten()
    in_range = paddle.logical_and(values >= 0, values < num_classes)
    values = paddle.masked_select(values, in_range)
    if values.shape[0] == 0:
        return paddle.zeros([num_classes], dtype="int64")
    return paddle.bincount(values, minlength=num_classes).astype("int64")


def calculate_area(pred, label, num_classes, ignore_index=255):
    """Per-class intersection, prediction and label pixel counts, each ``[num_classes]``
    int64, with the contract of ``paddleseg.utils.metrics.calculate_area``: predictions
    on ``ignore_index`` pixels are not counted.
    """
    if len(pred.shape) == 4:
        pred = pred.squeeze(axis=1)
    if len(label.shape) == 4:
        label = label.squeeze(axis=1)
    if pred.shape != label.shape:
        raise ValueError(f"prediction and label shapes differ: {pred.shape} vs {label.shape}")
    pred = pred.astype("int64")
    label = label.astype("int64")
    labelled = label != ignore_index
    pred_area = _count(paddle.masked_select(pred, labelled), num_classes)
    label_area = _count(paddle.masked_select(label, labelled), num_classes)
    agree = paddle.logical_and(labelled, pred == label)
    intersect_area = _count(paddle.masked_select(label, agree), num_classes)
    return intersect_area, pred_area, label_area


# (module, "Class.method" or "function", make_fixed(unpatched)) for compat.install
FIXES = (
    ("paddleseg.models.losses.cross_entropy_loss", "CrossEntropyLoss._post_process_loss",
     _float_coefficient_post_process),
    ("paddleseg.core.train", "loss_computation", _one_element_losses),
    ("paddleseg.utils.metrics", "calculate_area", lambda unpatched: calculate_area),
)


def apply():
    """Install every fix in :data:`FIXES` (idempotent)."""
    compat.install(FIXES)
