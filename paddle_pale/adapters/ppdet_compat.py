"""Paddle 3.x compatibility fixes for paddledet 2.6.0, applied by our detection
integration only (``ppdet_engine.load_config``), never on import of ``paddle_pale``.

paddledet 2.6.0 predates Paddle's 0-D tensors (Paddle >= 2.5): ``paddle.shape(x)[0]``
and reductions now give 0-D tensors, and ``paddle.concat`` refuses them ("axis is
expected to be in range of [0, 0)"); before, they were 1-element vectors. Each fix
below rebinds exactly one ppdet function to a ``paddle`` whose ``concat`` treats a 0-D
tensor as the 1-element vector it used to be. The function's code is not touched or
copied, and ``paddle.concat`` stays as it is for everyone else.
"""
import importlib
import sys
import types

import paddle

__all__ = ["FIXES", "apply", "concat_0d_as_1d"]

# (module, "Class.method" or "function"): the ppdet functions that concatenate
# 0-D tensors on Paddle 3.x during Mask R-CNN training or evaluation
FIXES = (
    ("ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal"),
    ("ppdet.modeling.proposal_generator.target", "generate_proposal_target"),
    ("ppdet.modeling.proposal_generator.target", "generate_mask_target"),
    ("ppdet.modeling.post_process", "BBoxPostProcess.get_pred"),
)

_PATCHED = "__paddle_pale_compat__"


def concat_0d_as_1d(x, axis=0, name=None):
    """``paddle.concat`` with Paddle 2.4's reading of 0-D tensors as shape ``[1]``."""
    if isinstance(x, (list, tuple)):
        x = [t.reshape([1]) if isinstance(t, paddle.Tensor) and t.ndim == 0 else t
             for t in x]
    return paddle.concat(x, axis=axis, name=name)


class _PaddleWith0DConcat(types.ModuleType):
    """The ``paddle`` module as one patched function sees it."""

    def __init__(self):
        super().__init__("paddle")

    def __getattr__(self, name):
        return getattr(paddle, name)

    concat = staticmethod(concat_0d_as_1d)


def _rebind(function):
    """``function`` with the same code, defaults and closure, reading ``paddle``
    from a globals dict in which ``paddle.concat`` accepts 0-D tensors."""
    scope = dict(function.__globals__, paddle=_PaddleWith0DConcat())
    fixed = types.FunctionType(function.__code__, scope, function.__name__,
                               function.__defaults__, function.__closure__)
    fixed.__kwdefaults__ = function.__kwdefaults__
    fixed.__doc__ = function.__doc__
    fixed.__qualname__ = function.__qualname__
    fixed.__wrapped__ = function
    setattr(fixed, _PATCHED, True)
    return fixed


def _resolve(module_name, qualname):
    owner = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def apply():
    """Install every fix in :data:`FIXES` (idempotent)."""
    for module_name, qualname in FIXES:
        owner, name = _resolve(module_name, qualname)
        function = owner.__dict__[name]
        if isinstance(function, staticmethod):
            raise TypeError(f"{module_name}.{qualname}: static methods are not handled")
        if getattr(function, _PATCHED, False):
            continue
        fixed = _rebind(function)
        setattr(owner, name, fixed)
        if isinstance(owner, types.ModuleType):
            # ``from .target import generate_proposal_target`` copied the name
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("ppdet.") and \
                        getattr(module, name, None) is function:
                    setattr(module, name, fixed)
