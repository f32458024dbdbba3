"""Reading ``paddle.save`` files without running code from them.

``paddle.load`` is ``pickle.load``: a ``.pdparams`` (or ``.pdopt``, ``.pdstates``,
``.pdema``) from someone else can name any importable callable and have it called while
loading (``os.system`` through ``__reduce__``). Paddle 3.3 has no restricted mode, so
:func:`load` unpickles with an allow-list of the globals that ``paddle.save`` itself
writes, read with ``pickletools`` from the files it produces:

* a state dict (``_legacy_save``): numpy arrays, i.e. ``numpy.core.multiarray._reconstruct``
  (``numpy._core.multiarray`` with numpy 2), ``numpy.ndarray``, ``numpy.dtype``;
* any other object (``_pickle_save``): tensors as ``builtins.tuple`` of (name, array);
  numbers, strings and containers need no global; numpy scalars use
  ``numpy.core.multiarray.scalar``; an ``OrderedDict`` ``collections.OrderedDict``;
* with ``protocol=2`` (Paddle's default is 4), bytes as ``_codecs.encode(text,
  "latin1")`` (admitted with that encoding only).

Anything else raises :class:`UnsafePickleError` naming the file and the global when the
unpickler meets it, before the global is looked up, let alone called. Arrays of Python
objects (dtype ``object``) are refused too, however they were built (their elements can
only be allowed objects, but ``paddle.save`` never writes them and a tensor cannot hold
them). The result is converted as ``paddle.load`` converts it (arrays become tensors).

Ground layer: imports nothing of the package.
"""
import _compat_pickle
import collections
import pickle

import numpy as np
import paddle

try:  # numpy 2
    from numpy._core import multiarray as _multiarray
except ImportError:
    from numpy.core import multiarray as _multiarray

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "load"]

ALLOWED_GLOBALS = (
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("builtins", "tuple"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol 2 (paddle.save(..., protocol=2))
)
# keys paddle.save adds to a state dict (names of tensors; parts of >4 GB tensors)
_NAME_TABLE = "StructuredToParameterName@@"
_BIG_PARTS = "UnpackBigParamInfor@@"  # typos: disable-line (Paddle's spelling)


class UnsafePickleError(ValueError):
    """A pickle names a global that ``paddle.save`` never writes."""


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError(f"an array of Python objects (dtype {dtype})")
    return dtype


def _reconstruct(subtype, *args):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"an array of type {subtype!r}")
    return _multiarray._reconstruct(subtype, *args)


def _scalar(dtype, *args):
    return _multiarray.scalar(_dtype(dtype), *args)


def _encode(text, encoding):
    if encoding not in ("latin1", "latin-1"):  # what pickle writes for bytes
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_RESOLVED = {"_reconstruct": _reconstruct, "scalar": _scalar, "ndarray": np.ndarray,
             "dtype": _dtype, "tuple": tuple, "OrderedDict": collections.OrderedDict,
             "encode": _encode}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python 2 names, as pickle.Unpickler maps them (protocol < 3: __builtin__.tuple)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"a call of {module}.{name}")
        return _RESOLVED[name]


def _to_tensors(obj, named):
    """``paddle.load``'s conversion: ``(name, array)`` pairs become named tensors when
    the file has any (``named``), else every array becomes a tensor."""
    if named and isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) \
            and isinstance(obj[1], np.ndarray):
        tensor = paddle.to_tensor(obj[1])
        tensor.name = obj[0]
        return tensor
    if not named and isinstance(obj, np.ndarray):
        return paddle.to_tensor(obj)
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _to_tensors(obj[key], named)
        return obj
    if isinstance(obj, (list, tuple, set)):
        return type(obj)(_to_tensors(item, named) for item in obj)
    return obj


def _has_named_arrays(obj):
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) \
            and isinstance(obj[1], np.ndarray):
        return True
    if isinstance(obj, dict):
        return any(_has_named_arrays(v) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_has_named_arrays(v) for v in obj)
    return False


def _check_arrays(obj):
    """Raise UnsafePickleError for an object array anywhere in ``obj``."""
    if isinstance(obj, np.ndarray):
        _dtype(obj.dtype)
    elif isinstance(obj, dict):
        for value in obj.values():
            _check_arrays(value)
    elif isinstance(obj, (list, tuple, set)):
        for value in obj:
            _check_arrays(value)


def _join_big_tensors(state):
    for key, info in state.pop(_BIG_PARTS).items():
        state[key] = np.concatenate([state.pop(part) for part in info["slices"]]).reshape(
            info["OriginShape"])
    return state


def load(path, what="file"):
    """Read a ``paddle.save`` file like ``paddle.load`` does, refusing code.

    Raises:
        UnsafePickleError: the file names a global outside :data:`ALLOWED_GLOBALS`.
        ValueError: the file is not a readable pickle (truncated, another format).
    """
    try:
        with open(path, "rb") as f:
            obj = _Unpickler(f, encoding="latin1").load()
        _check_arrays(obj)
    except UnsafePickleError as error:
        raise UnsafePickleError(
            f"refusing to load {what} {path!r}: it holds {error}, which paddle.save never "
            f"writes (a pickle can run any code when loaded; this one was not loaded)") from None
    except Exception as error:  # truncated or foreign files raise many types
        raise ValueError(f"cannot read {what} {path!r}: {type(error).__name__}: "
                         f"{error}") from None
    if isinstance(obj, dict) and _BIG_PARTS in obj:
        obj = _join_big_tensors(obj)
    if isinstance(obj, dict) and _NAME_TABLE in obj:
        names = obj.pop(_NAME_TABLE)
        for key, name in names.items():
            if isinstance(obj.get(key), np.ndarray):
                obj[key] = paddle.to_tensor(obj[key])
                obj[key].name = name
        return obj
    return _to_tensors(obj, _has_named_arrays(obj))
