"""The one mechanism behind the Paddle 3.x fixes of PaddleSeg (:mod:`.paddleseg_compat`)
and PaddleDetection (:mod:`.ppdet_compat`), installed by importing the adapter module
(``paddle_pale.adapters.paddleseg`` / ``.ppdet``), never by ``import paddle_pale``.

A :class:`Fix` replaces one library function by ``make_fixed(original)`` (a wrapper, or
the same code reading some globals from replacements, :func:`rebind_globals`) only where
``probe(original)``, a tiny call, shows the bug: a version fixed upstream runs its own
code, and no version string is read. The original stays under :data:`ORIGINAL` on the
fixed function; installing twice changes nothing; a module-level function is replaced
also where other modules of the library imported it by name.
"""
import importlib
import sys
import types
from typing import Callable, NamedTuple

import paddle

__all__ = ["ORIGINAL", "Fix", "Proxy", "locate", "original", "find", "needed", "install",
           "rebind_globals", "fails", "concat_0d_as_1d"]

# the unpatched function, on the patched one; not ``__wrapped__``, which
# ``paddle.jit.to_static`` unwraps (``inspect.unwrap``) before converting a function,
# so that a static graph would be built from the unpatched one
ORIGINAL = "__paddle_pale_original__"


class Proxy(types.ModuleType):
    """A module that forwards every attribute to ``module`` but those set on it."""

    def __init__(self, module, **replaced):
        super().__init__(module.__name__)
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name):  # only called for names not set on the proxy
        return getattr(self._module, name)


def locate(module_name, qualname):
    """``(owner, name)``: the module or class holding ``module_name.qualname``."""
    owner = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def original(module_name, qualname):
    """The unpatched function ``module_name.qualname`` (installed or not)."""
    owner, name = locate(module_name, qualname)
    function = owner.__dict__[name]
    return getattr(function, ORIGINAL, function)


class Fix(NamedTuple):
    """``module.qualname`` becomes ``make_fixed(original)`` where ``probe(original)``."""
    module: str
    qualname: str
    make_fixed: Callable
    probe: Callable
    name: str = ""  # tells two fixes of one function apart (default: the qualname)

    @property
    def key(self):
        return self.module, self.name or self.qualname


_NEEDED = {}  # Fix.key -> what the probe said, once installed


def find(fixes, name):
    """The fix among ``fixes`` named (or else of the qualname) ``name``."""
    return next(fix for fix in fixes if (fix.name or fix.qualname) == name)


def fails(error, call, match=""):
    """True if ``call()`` raises ``error`` with ``match`` in its message, False if it
    returns; any other exception propagates (a change the fix does not know)."""
    try:
        call()
    except error as raised:
        if match in str(raised):
            return True
        raise
    return False


def needed(module_name, name):
    """What the probe of the fix ``name`` (its qualname unless named) of ``module_name``
    said at :func:`install`: True where the installed library needs it (and has it)."""
    if (module_name, name) not in _NEEDED:
        raise KeyError(f"{module_name}.{name}: not installed yet (call apply())")
    return _NEEDED[module_name, name]


def install(fixes):
    """Install each :class:`Fix` of ``fixes`` whose probe shows the bug (idempotent)."""
    for fix in fixes:
        module_name, qualname = fix.module, fix.qualname
        owner, name = locate(module_name, qualname)
        function = owner.__dict__[name]
        if isinstance(function, (staticmethod, classmethod)):
            raise TypeError(f"{module_name}.{qualname}: static and class methods are not "
                            f"handled")
        if fix.key in _NEEDED:
            continue
        _NEEDED[fix.key] = needs = bool(fix.probe(function))
        if not needs:
            continue
        fixed = fix.make_fixed(function)
        fixed.__dict__.pop("__wrapped__", None)  # see ORIGINAL
        setattr(fixed, ORIGINAL, function)
        setattr(owner, name, fixed)
        if isinstance(owner, types.ModuleType):
            # ``from .target import generate_proposal_target`` copied the name
            library = module_name.split(".")[0] + "."
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith(library) and \
                        getattr(module, name, None) is function:
                    setattr(module, name, fixed)


def rebind_globals(**replacements):
    """``make_fixed`` for :func:`install`: the function with the same code, defaults
    and closure, reading its globals from a copy of its module's in which each name
    ``NAME=replace`` is ``replace(original value)``."""
    def make_fixed(function):
        scope = dict(function.__globals__)
        for name, replace in replacements.items():
            if name not in scope:
                raise KeyError(f"{function.__module__}.{function.__qualname__} reads no "
                               f"global {name!r}: another version of the library?")
            scope[name] = replace(scope[name])
        fixed = types.FunctionType(function.__code__, scope, function.__name__,
                                   function.__defaults__, function.__closure__)
        fixed.__kwdefaults__ = function.__kwdefaults__
        fixed.__doc__ = function.__doc__
        fixed.__qualname__ = function.__qualname__
        fixed.__module__ = function.__module__
        if scope.get(function.__name__) is function:
            # a module-level function finds itself under its name, as ``to_static``
            # checks before converting it (one not in its own globals runs unconverted)
            scope[function.__name__] = fixed
        return fixed
    return make_fixed


@paddle.jit.not_to_static  # runs as it is inside ``paddle.jit.to_static``
def concat_0d_as_1d(x, axis=0, name=None):
    """``paddle.concat`` with Paddle 2.4's reading of 0-D tensors as shape ``[1]``:
    a list of them gives the vector of their values, and so does a static-graph
    tensor array of them (where ``paddle.concat`` would give a 0-D value)."""
    if isinstance(x, (list, tuple)):
        x = [t.reshape([1]) if isinstance(t, (paddle.Tensor, paddle.pir.Value)) and
             t.ndim == 0 else t for t in x]
    elif _is_array_of_0d(x) and axis == 0:
        return paddle.stack(x, axis=0, name=name)  # [len(x)]
    return paddle.concat(x, axis=axis, name=name)


def _is_array_of_0d(x):
    """A static-graph tensor array (a list appended to in a graph loop) whose
    elements are 0-D; its ``shape`` is the shape of one element."""
    return isinstance(x, paddle.pir.Value) and x.is_dense_tensor_array_type() and \
        list(x.shape) == []
