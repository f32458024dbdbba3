"""The C++ CPU kernels of ``cpu_ops.cc`` (3x3 depth-wise convolution, softmax over the
last axis, exact GELU, LayerNorm for training), compiled on first use, and autograd
functions over them.

Paddle's eager CPU kernels for these ops are the slow ones of the Pale-T profile
(docs/performance.md): the depth-wise convolution runs an im2col and a one-row GEMM per
channel and image, the softmax a scalar ``exp`` and GELU a scalar ``erf`` per element,
and LayerNorm's backward is many times slower than its forward.
:mod:`paddle_pale.kernels.cpu` calls :func:`depthwise_conv3x3_channels_last`,
:func:`softmax` (:func:`softmax_` where no gradient is taken), :func:`gelu` and
:func:`layer_norm`, which fall back to Paddle's ops wherever the native kernels do not apply:
tensors not float32 on CPU, a build that failed, or ``PADDLE_PALE_NATIVE_KERNELS=0`` in
the environment.

The source compiles with the system C++ compiler through
``paddle.utils.cpp_extension.load`` into Paddle's extension folder
(``PADDLE_EXTENSION_DIR``, default ``~/.cache/paddle_extensions``), one build per source
text and Paddle install: about 15 s once, then about 2 s per process to check that the
build is current. Processes that start together build it one at a time (a file lock). A failed build is reported once, as a warning
naming the cause, and the stock kernels run instead.
"""
import contextlib
import hashlib
import os
import warnings

import paddle
import paddle.nn.functional as F

__all__ = ["native_ops", "native_kernels_enabled", "native_kernels_loaded", "available_for",
           "depthwise_conv3x3_channels_last", "softmax", "softmax_", "gelu", "layer_norm",
           "SOURCE", "DISABLE_VARIABLE"]

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_ops.cc")
# set to 0 to run Paddle's own kernels (A/B runs, or a machine without a compiler)
DISABLE_VARIABLE = "PADDLE_PALE_NATIVE_KERNELS"
_state = {"ops": None, "error": None}


def native_kernels_enabled():
    """Whether the environment allows the native kernels: ``PADDLE_PALE_NATIVE_KERNELS``
    unset, or not one of ``0``, ``false``, ``no``, ``off``."""
    return os.environ.get(DISABLE_VARIABLE, "1").strip().lower() not in ("0", "false", "no",
                                                                          "off")


def _module_name(link_flags):
    """``paddle_pale_cpu_ops_<hash>``: one build per source text and Paddle install, so
    that a process never finds its loaded library rebuilt in place by another (a second
    virtual environment, or a changed source) under the same name."""
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as handle:
        digest.update(handle.read())
    for part in (paddle.__version__, os.path.dirname(os.path.abspath(paddle.__file__)),
                 *link_flags):
        digest.update(part.encode())
    return f"paddle_pale_cpu_ops_{digest.hexdigest()[:12]}"


@contextlib.contextmanager
def _build_lock(directory, name):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.lock"), "w") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _openmp_link_flags():
    """Link flags that put the kernels' OpenMP loops on the runtime of Paddle's MKL
    (``libiomp5``, which also serves GCC's OpenMP calls) where the wheel ships it: with
    GCC's own ``libgomp`` the two thread pools would spin against each other on the same
    cores after every parallel region."""
    libs = os.path.join(os.path.dirname(os.path.abspath(paddle.__file__)), "libs")
    if os.path.exists(os.path.join(libs, "libiomp5.so")):
        return [f"-L{libs}", "-liomp5", f"-Wl,-rpath,{libs}"]
    return ["-fopenmp"]


def native_ops():
    """The compiled module (its ops: ``pale_depthwise_conv3x3_channels_last``,
    ``pale_softmax``, ``pale_softmax_``, ``pale_gelu``, ``pale_layer_norm`` and the
    backward of each), or None where it is disabled or could not be built (warned once,
    with the reason)."""
    if not native_kernels_enabled():
        return None
    if _state["ops"] is None and _state["error"] is None:
        try:
            from paddle.utils.cpp_extension import get_build_directory, load
            directory = get_build_directory()
            link_flags = _openmp_link_flags()
            name = _module_name(link_flags)
            with _build_lock(directory, name):
                _state["ops"] = load(name=name, sources=[SOURCE],
                                     extra_cxx_cflags=["-O3", "-fopenmp"],
                                     extra_ldflags=link_flags, build_directory=directory)
        except Exception as error:  # no compiler, read-only cache, ABI mismatch, ...
            _state["error"] = error
            warnings.warn(f"paddle_pale.kernels: the native CPU kernels ({SOURCE}) could not "
                          f"be built, Paddle's own kernels run instead: "
                          f"{type(error).__name__}: {error}")
    return _state["ops"]


def native_kernels_loaded():
    """Whether this process has loaded the native kernels (a kernel asked for them and
    they built); unlike :func:`native_ops`, never starts a build."""
    return _state["ops"] is not None and native_kernels_enabled()


def available_for(*tensors):
    """The native ops if they apply to ``tensors`` (float32, on CPU), else None."""
    if any(t.dtype != paddle.float32 or not t.place.is_cpu_place() for t in tensors):
        return None
    return native_ops()


def _contiguous(t):
    # with stride kernels on, a transpose may be a view; the kernels read dense rows
    return t if t.is_contiguous() else t.contiguous()


def _needed(ctx, grads):
    """``grads`` with None for the inputs that take no gradient (``ctx.needs_grad``)."""
    return tuple(g if needed else None for g, needed in zip(grads, ctx.needs_grad))


class _DepthwiseConv3x3ChannelsLast(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, weight, ones, ops):
        x, weight = _contiguous(x), _contiguous(weight)
        ctx.save_for_backward(x, weight)
        ctx.ops, ctx.ones = ops, ones
        ctx.needs_grad = (not x.stop_gradient, not weight.stop_gradient)
        return ops.pale_depthwise_conv3x3_channels_last(x, weight, ones)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        return _needed(ctx, ctx.ops.pale_depthwise_conv3x3_channels_last_backward(
            x, weight, _contiguous(grad), ctx.ones))


def depthwise_conv3x3_channels_last(x, weight, ones=False):
    """``F.conv2d(x, weight, padding=1, groups=C)`` (``weight`` ``[C * m, 1, 3, 3]``, no
    bias) on channels-last tokens ``x`` ``[B, H, W, C]``, each filter's output apart:
    ``[m, B, H, W, C]`` (filter ``c m + j`` writes ``[j, ..., c]``), with gradients;
    ``ones`` appends a channel of ones (``[..., C + 1]``, no gradient) for a linear map's
    bias row."""
    batch, height, width, channels = x.shape
    if tuple(weight.shape[1:]) != (1, 3, 3) or weight.shape[0] % channels:
        raise ValueError(f"depthwise_conv3x3_channels_last takes [C * m, 1, 3, 3] filters "
                         f"for C={channels} channels, got {list(weight.shape)}")
    ops = available_for(x, weight)
    if ops is not None:
        return _DepthwiseConv3x3ChannelsLast.apply(x, weight, bool(ones), ops)
    multiplier = weight.shape[0] // channels
    out = F.conv2d(x.transpose([0, 3, 1, 2]), weight, None, padding=1, groups=channels)
    out = out.reshape([batch, channels, multiplier, height, width]).transpose([2, 0, 3, 4, 1])
    if ones:
        out = paddle.concat([out, paddle.ones([multiplier, batch, height, width, 1], out.dtype)],
                            axis=-1)
    return out


class _Softmax(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, ops):
        out = ops.pale_softmax(_contiguous(x))
        ctx.save_for_backward(out)
        ctx.ops = ops
        return out

    @staticmethod
    def backward(ctx, grad):
        out, = ctx.saved_tensor()
        return ctx.ops.pale_softmax_backward(out, _contiguous(grad))


def _softmax_ops(x, axis):
    """The native ops for a softmax of ``x`` over ``axis``: the last axis only."""
    return available_for(x) if axis in (-1, x.ndim - 1) else None


def softmax(x, axis=-1):
    """``F.softmax(x, axis)`` over the last axis, with gradients."""
    ops = _softmax_ops(x, axis)
    if ops is None:
        return F.softmax(x, axis=axis)
    return _Softmax.apply(x, ops)


def softmax_(x, axis=-1):
    """``F.softmax_(x, axis)``: the softmax over the last axis written into ``x``, for
    where no gradient is taken (a score tensor that nothing else reads); with a gradient
    recorded it is :func:`softmax`."""
    if paddle.is_grad_enabled() and not x.stop_gradient:
        return softmax(x, axis)
    ops = _softmax_ops(x, axis)
    if ops is None or not x.is_contiguous():
        return F.softmax_(x, axis=axis)
    ops.pale_softmax_(x)
    return x


class _Gelu(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, ops):
        x = _contiguous(x)
        ctx.save_for_backward(x)
        ctx.ops = ops
        return ops.pale_gelu(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensor()
        return ctx.ops.pale_gelu_backward(x, _contiguous(grad))


def gelu(x):
    """``F.gelu(x)`` (the exact form, ``x Phi(x)``), with gradients; the native kernel's
    erf is within 1.5e-7 of the exact one."""
    ops = available_for(x)
    if ops is None:
        return F.gelu(x)
    return _Gelu.apply(x, ops)


class _LayerNorm(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, rows, weight, bias, epsilon, ops):
        rows = _contiguous(rows)
        out, mean, rstd = ops.pale_layer_norm(rows, weight, bias, epsilon)
        ctx.save_for_backward(rows, weight, mean, rstd)
        ctx.ops = ops
        ctx.needs_grad = [not t.stop_gradient for t in (rows, weight, bias)]
        return out

    @staticmethod
    def backward(ctx, grad):
        rows, weight, mean, rstd = ctx.saved_tensor()
        return _needed(ctx, ctx.ops.pale_layer_norm_backward(rows, weight, mean, rstd,
                                                             _contiguous(grad)))


def layer_norm(rows, weight, bias, epsilon):
    """``F.layer_norm`` over the last axis of ``rows`` ``[N, C]`` with a weight and a
    bias, with gradients (the backward from the forward's row statistics)."""
    ops = available_for(rows, weight, bias)
    if ops is None:
        return F.layer_norm(rows, rows.shape[-1:], weight, bias, epsilon)
    return _LayerNorm.apply(rows, weight, bias, float(epsilon), ops)
