"""The one mechanism behind the Paddle 3.x fixes of PaddleSeg (:mod:`.paddleseg_compat`)
and PaddleDetection (:mod:`.ppdet_compat`).

A fix replaces exactly one library function, named by its module and qualified name,
with a function made from the original (a wrapper, or the same code reading some of its
globals from replacements, :func:`rebind_globals`). The original stays reachable under
:data:`ORIGINAL` on the fixed function; installing twice changes nothing; a module-level
function is also replaced where other modules of the library imported it by name. Only
our seg/det integration installs fixes, never ``import paddle_pale``.
"""
import importlib
import sys
import types

__all__ = ["ORIGINAL", "Proxy", "locate", "original", "install", "rebind_globals"]

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


def install(fixes):
    """Install each ``(module, "Class.method" or "function", make_fixed)`` of ``fixes``:
    ``make_fixed(original) -> fixed function`` (idempotent)."""
    for module_name, qualname, make_fixed in fixes:
        owner, name = locate(module_name, qualname)
        function = owner.__dict__[name]
        if isinstance(function, (staticmethod, classmethod)):
            raise TypeError(f"{module_name}.{qualname}: static and class methods are not "
                            f"handled")
        if hasattr(function, ORIGINAL):
            continue
        fixed = make_fixed(function)
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
