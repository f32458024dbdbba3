"""Fixes for PaddleSeg versions that predate Paddle 3's 0-D tensors and the end of
implicit int/float promotion, installed on import of ``paddle_pale.adapters.paddleseg``
where their probe shows the bug (:mod:`.compat`). paddleseg 2.8.0 needs all three;
PaddleSeg's develop branch (2024-10-18) fixed each upstream (named per fix below) and
runs its own code.
"""
import functools
import importlib
import inspect
import tempfile
import types
import warnings

import numpy as np
import paddle

from . import compat

__all__ = ["FIXES", "apply", "original", "needed"]


def _post_process_with_float_label(unpatched):
    @functools.wraps(unpatched)
    def post_process_loss(self, logit, label, *args, **kwargs):
        # without class weights the coefficient is ones_like(label): float, not int64
        label = label.astype("float32") if self.weight is None else label
        return unpatched(self, logit, label, *args, **kwargs)
    return post_process_loss


def _post_process_fails(unpatched):  # float32 mask * int64 coef -> TypeError
    from paddleseg.models.losses import CrossEntropyLoss
    return compat.fails(TypeError, lambda: unpatched(
        CrossEntropyLoss(), paddle.zeros([1, 1, 2, 2]), paddle.zeros([1, 1, 2], "int64"),
        None, paddle.zeros([1, 1, 2])), "int64")


def _one_element_losses(unpatched):
    @functools.wraps(unpatched)
    def loss_computation(*args, **kwargs):
        return [loss.reshape([1]) for loss in unpatched(*args, **kwargs)]
    return loss_computation


def _training_log_fails(_unpatched):
    """One silent, single-process iteration of ``paddleseg.core.train.train`` that
    logs: 2.8.0 logs ``loss.numpy()[0]``, an IndexError on 0-D losses."""
    def quiet(*args, **kwargs):
        return None
    silent = types.SimpleNamespace(info=quiet, warning=quiet, debug=quiet)
    train = compat.rebind_globals(
        paddle=lambda p: compat.Proxy(p, flops=quiet, distributed=compat.Proxy(
            p.distributed, ParallelEnv=lambda: types.SimpleNamespace(nranks=1, local_rank=0))),
        logger=lambda _: silent)(importlib.import_module("paddleseg.core.train").train)
    # later versions take the logger as an argument
    logger = {"logger": silent} if "logger" in inspect.signature(train).parameters else {}
    model = paddle.nn.Conv2D(3, 2, 1)
    data = [{"img": np.zeros([3, 2, 2], "float32"), "label": np.zeros([2, 2], "int64")}]
    with tempfile.TemporaryDirectory() as save_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compat.fails(IndexError, lambda: train(
            model, data, optimizer=paddle.optimizer.SGD(0.0, model.parameters()),
            save_dir=save_dir, iters=1, batch_size=1, log_iters=1,
            losses={"types": [lambda logit, label: logit.mean()], "coef": [1.0]}, **logger))


def _area_fails(unpatched):  # paddle.concat of 0-D per-class sums -> ValueError
    zeros = paddle.zeros([1, 2, 2], "int64")
    return compat.fails(ValueError, lambda: unpatched(zeros, zeros, 2), "axis is expected")


FIXES = (
    # upstream: `mask * coef.astype(mask.dtype)`
    compat.Fix("paddleseg.models.losses.cross_entropy_loss",
               "CrossEntropyLoss._post_process_loss", _post_process_with_float_label,
               _post_process_fails),
    # the losses come out with shape [1]; upstream: train() logs `float(loss)`
    compat.Fix("paddleseg.core.train", "loss_computation", _one_element_losses,
               _training_log_fails),
    # its code reads a concat taking 0-D sums as [1]; upstream: `paddle.stack`
    compat.Fix("paddleseg.utils.metrics", "calculate_area", compat.rebind_globals(
        paddle=lambda p: compat.Proxy(p, concat=compat.concat_0d_as_1d)), _area_fails),
)


def original(qualname):
    """The unpatched PaddleSeg function ``qualname`` (as named in :data:`FIXES`)."""
    return compat.original(compat.find(FIXES, qualname).module, qualname)


def needed(qualname):
    """Whether the installed PaddleSeg shows the bug the fix of ``qualname`` fixes."""
    return compat.needed(*compat.find(FIXES, qualname).key)


def apply():
    """Install the fixes of :data:`FIXES` the installed PaddleSeg needs (idempotent)."""
    compat.install(FIXES)
