"""Fixes that let PaddleSeg train and evaluate on Paddle 3.x where it predates Paddle's
0-D tensors (reductions return shape ``[]``) and the end of implicit int/float
promotion; each is installed only where its probe shows the bug (:mod:`.compat`).

Seen in paddleseg 2.8.0 (PyPI), all fixed upstream on PaddleSeg's ``develop`` branch
(2024-10-18), where no probe fires and PaddleSeg runs its own code:

* ``CrossEntropyLoss._post_process_loss``: ``mask * coef`` multiplies float32 by the
  int64 ``ones_like(label)`` (TypeError) -> the label it reads is made float when there
  are no class weights. Upstream: ``coef.astype(mask.dtype)``.
* ``paddleseg.core.train.loss_computation``: ``train`` logs ``loss.numpy()[0]`` of each
  loss, an IndexError on 0-D losses -> each loss is returned with shape ``[1]``.
  Upstream: ``train`` logs ``float(loss)``.
* ``paddleseg.utils.metrics.calculate_area``: ``paddle.concat`` of the 0-D per-class
  sums fails -> the same code reads a ``paddle`` whose ``concat`` takes 0-D tensors as
  1-element vectors. Upstream: ``paddle.stack`` (and a new ``use_multilabel``
  argument, which the unfixed function keeps).

:func:`apply` runs on import of ``paddle_pale.adapters.paddleseg``.
"""
import functools
import importlib
import tempfile
import types
import warnings

import numpy as np
import paddle

from . import compat

__all__ = ["FIXES", "apply", "original", "needed"]


def _fix(qualname):
    return next(fix for fix in FIXES if fix.qualname == qualname)


def original(qualname):
    """The unpatched PaddleSeg function ``qualname`` (as named in :data:`FIXES`)."""
    return compat.original(_fix(qualname).module, qualname)


def needed(qualname):
    """Whether the installed PaddleSeg shows the bug the fix of ``qualname`` fixes."""
    return compat.needed(_fix(qualname).module, qualname)


def _float_coefficient_post_process(unpatched):
    @functools.wraps(unpatched)
    def post_process_loss(self, logit, label, *args, **kwargs):
        if self.weight is None:
            # without class weights the per-pixel coefficient is ones_like(label); a
            # float label makes it float, which Paddle 3 needs to multiply the mask
            label = label.astype("float32")
        return unpatched(self, logit, label, *args, **kwargs)
    return post_process_loss


def _one_element_losses(unpatched):
    @functools.wraps(unpatched)
    def loss_computation(*args, **kwargs):
        # paddleseg.core.train logs `loss.numpy()[0]`, which needs a 1-element loss
        return [loss.reshape([1]) for loss in unpatched(*args, **kwargs)]
    return loss_computation


def _paddle_concat_0d(_paddle):
    return compat.Proxy(paddle, concat=compat.concat_0d_as_1d)


# probes: the unpatched function on a tiny input; True where it shows the bug
def _post_process_fails(unpatched):
    from paddleseg.models.losses import CrossEntropyLoss
    label = paddle.zeros([1, 1, 2], "int64")
    # what forward hands over: NHWC logits, the int64 label, the per-pixel loss
    return compat.fails(TypeError, lambda: unpatched(
        CrossEntropyLoss(), paddle.zeros([1, 1, 2, 2]), label, None,
        paddle.zeros([1, 1, 2])), match="int64")


class _OnePixel(paddle.io.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        return {"img": np.zeros([3, 2, 2], "float32"), "label": np.zeros([2, 2], "int64")}


class _Conv(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 2, 1)

    def forward(self, x):
        return [self.conv(x)]


def _training_log_fails(_unpatched):
    """One iteration of ``paddleseg.core.train.train`` logging its losses, run single-
    process (also under ``paddle.distributed.launch``) and silent."""
    def quiet(*args, **kwargs):
        pass

    def single():
        return types.SimpleNamespace(nranks=1, local_rank=0)

    train = importlib.import_module("paddleseg.core.train").train
    train = compat.rebind_globals(
        paddle=lambda p: compat.Proxy(p, flops=quiet,
                                      distributed=compat.Proxy(p.distributed,
                                                               ParallelEnv=single)),
        logger=lambda log: compat.Proxy(log, info=quiet, warning=quiet, debug=quiet))(train)
    model = _Conv()
    with tempfile.TemporaryDirectory() as save_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty optimizer state saved
        return compat.fails(IndexError, lambda: train(
            model, _OnePixel(), optimizer=paddle.optimizer.SGD(0.0, model.parameters()),
            save_dir=save_dir, iters=1, batch_size=1, log_iters=1,
            losses={"types": [lambda logit, label: logit.mean()], "coef": [1.0]}))


def _area_fails(unpatched):
    return compat.fails(ValueError, lambda: unpatched(
        paddle.zeros([1, 2, 2], "int64"), paddle.zeros([1, 2, 2], "int64"), 2),
        match="axis is expected to be in range")


FIXES = (
    compat.Fix("paddleseg.models.losses.cross_entropy_loss",
               "CrossEntropyLoss._post_process_loss", _float_coefficient_post_process,
               _post_process_fails),
    compat.Fix("paddleseg.core.train", "loss_computation", _one_element_losses,
               _training_log_fails),
    compat.Fix("paddleseg.utils.metrics", "calculate_area",
               compat.rebind_globals(paddle=_paddle_concat_0d), _area_fails),
)


def apply():
    """Install the fixes of :data:`FIXES` the installed PaddleSeg needs (idempotent)."""
    compat.install(FIXES)
