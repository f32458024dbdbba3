"""Building blocks shared by every model of the package."""
import contextlib

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["ChannelsLastConv2D", "ImageToChannelsLastConv2D", "ResidualDepthwiseConv2D",
           "conv2d_channels_last", "identity_filters", "onnx_compatible_ops", "bias_matmul",
           "gemm_broadcast", "add_channel_bias", "DropPath", "Linear", "Mlp", "init_weights"]

_trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
_zeros = nn.initializer.Constant(0.0)
_ones = nn.initializer.Constant(1.0)


class DropPath(nn.Layer):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        keep = paddle.floor(keep_prob + paddle.rand(shape, dtype="float32")).astype(x.dtype)
        return x / keep_prob * keep

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


class Linear(nn.Linear):
    """``nn.Linear`` whose bias is added inside the GEMM (``addmm``), or, when it takes a
    gradient on CPU, as :func:`gemm_broadcast`.

    Paddle's CPU ``linear`` runs a matmul and then a separate broadcast add over the
    whole output, which costs about as much as the matmul itself at small C. Same
    parameters and state-dict keys as ``nn.Linear``.
    """

    def forward(self, x):
        if self.bias is None:
            return paddle.matmul(x, self.weight)
        shape = x.shape
        rows = x.reshape([-1, shape[-1]])
        if _bias_gets_cpu_gradient(self.bias):
            # a same-shape add passes its gradient on untouched; addmm with a full-size
            # input would copy it
            out = paddle.matmul(rows, self.weight) + gemm_broadcast(self.bias, rows.shape[0])
        else:
            out = bias_matmul(self.bias.unsqueeze(0), rows, self.weight)
        return out.reshape([*shape[:-1], self.weight.shape[1]])


def _bias_gets_cpu_gradient(bias):
    """Whether ``bias`` will take a gradient computed on CPU: then it should enter as
    :func:`gemm_broadcast`."""
    return (bias is not None and not bias.stop_gradient and paddle.is_grad_enabled()
            and _cpu_eager())


def gemm_broadcast(bias, num_rows):
    """``bias`` ([C]) repeated in ``num_rows`` rows, as the outer product ones x bias.

    The gradient of a broadcast bias is a column sum, which Paddle's CPU reduce takes
    16 ms for at [25088, 256] (stage 1, batch 8); the same sum as a GEMM with a ones
    vector takes 1 ms. Built as an outer product, the bias gets its gradient from that
    GEMM (fc1 of stage 1: forward + backward 40 -> 28 ms). For training on CPU.
    """
    return paddle.matmul(paddle.ones([num_rows, 1], bias.dtype), bias.unsqueeze(0))


class _LayerNormFunction(paddle.autograd.PyLayer):
    """LayerNorm over the last axis of ``[N, C]`` rows with a vectorised backward.

    Paddle's CPU ``layer_norm_grad`` takes ~30x its forward ([25088, 64]: 18.6 against
    0.6 ms); the textbook gradient written with row means and two ones-vector GEMMs
    (for the weight and bias) takes a fraction of that.
    """

    @staticmethod
    def forward(ctx, rows, weight, bias, epsilon):
        ctx.save_for_backward(rows, weight)
        ctx.epsilon = epsilon
        # paddle wants None, not a gradient, for an input that takes none
        ctx.needs_grad = [not t.stop_gradient for t in (rows, weight, bias)]
        return F.layer_norm(rows, rows.shape[-1:], weight, bias, epsilon)

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensor()
        num_rows, channels = rows.shape
        # means and sums as GEMMs with ones vectors: paddle's CPU reductions are slower
        row_mean = paddle.full([channels, 1], 1.0 / channels, grad.dtype)
        column_sum = paddle.ones([1, num_rows], grad.dtype)
        centred = rows - paddle.matmul(rows, row_mean)
        rstd = paddle.rsqrt(paddle.matmul(centred * centred, row_mean) + ctx.epsilon)
        normed = centred * rstd
        grads = [None, None, None]
        if ctx.needs_grad[0]:
            grad_normed = grad * weight
            grads[0] = (grad_normed - paddle.matmul(grad_normed, row_mean)
                        - normed * paddle.matmul(grad_normed * normed, row_mean)) * rstd
        if ctx.needs_grad[1]:
            grads[1] = paddle.matmul(column_sum, grad * normed).reshape(weight.shape)
        if ctx.needs_grad[2]:
            grads[2] = paddle.matmul(column_sum, grad).reshape(weight.shape)
        return tuple(grads)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis (same parameters and state-dict keys) whose
    backward, when training in float32 on CPU, is :class:`_LayerNormFunction`."""

    def forward(self, x):
        if (self.training and x.dtype == paddle.float32 and self.weight is not None
                and self.bias is not None and _cpu_eager()
                and not all(t.stop_gradient for t in (x, self.weight, self.bias))):
            rows = x.reshape([-1, x.shape[-1]])
            out = _LayerNormFunction.apply(rows, self.weight, self.bias, self._epsilon)
            return out.reshape(x.shape)
        return super().forward(x)


class Mlp(nn.Layer):
    """Two linear layers with GELU between (Eq. 8), expansion ratio R_i."""

    def __init__(self, dim, hidden_dim, drop=0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def init_weights(layer):
    """Truncated-normal(0.02) linear weights, zero biases, unit LayerNorm (ViT practice)."""
    if isinstance(layer, nn.Linear):
        _trunc_normal(layer.weight)
        if layer.bias is not None:
            _zeros(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        _ones(layer.weight)
        _zeros(layer.bias)


# The fast kernels (NHWC convolutions, bias fused into the GEMM by addmm / baddbmm) have
# no ONNX counterpart: while a graph is traced for ONNX the same math runs as
# transpose + NCHW convolution, and matmul + add. A mutable holder, not a rebound
# global: paddle.jit.to_static runs converted copies of functions whose globals are a
# snapshot taken at conversion.
_portable = {"onnx": False}


@contextlib.contextmanager
def onnx_compatible_ops():
    """Within this block the model computes with operators ONNX has: channels-last
    convolutions as transpose + NCHW convolution + transpose (a Conv2D's weight layout
    is the same in both formats), fused bias GEMMs as matmul + add. Same parameters,
    same results."""
    previous = _portable["onnx"]
    _portable["onnx"] = True
    try:
        yield
    finally:
        _portable["onnx"] = previous


def bias_matmul(bias, x, weight):
    """``bias + x @ weight`` (batched when ``x`` is 3-D): one fused GEMM when allowed."""
    if _portable["onnx"]:
        return paddle.matmul(x, weight) + bias
    return paddle.addmm(bias, x, weight) if x.ndim == 2 else paddle.baddbmm(bias, x, weight)


def _cpu_eager():
    return paddle.in_dynamic_mode() and not paddle.device.get_device().startswith("gpu")


def _nchw_kernels():
    """ONNX has only NCHW convolutions; on CPU, Paddle's NHWC (depth-wise) kernels are
    slower than transposing around the NCHW ones (Pale-T step measured 3.8% faster,
    inference and training alike). GPUs keep the NHWC kernels."""
    return _portable["onnx"] or not paddle.device.get_device().startswith("gpu")


def add_channel_bias(x, bias):
    """``x + bias`` on a channels-last ``x``: a broadcast over the trailing axis, which
    Paddle's CPU add handles far faster than the per-channel add inside an NCHW
    ``F.conv2d`` (a depth-wise 3x3 at [8, 64, 56, 56]: 19.3 ms with its bias, 9.5 ms with
    the bias added after the transpose, 7.9 ms without). When the bias takes a gradient
    on CPU it enters as a GEMM (see :func:`gemm_broadcast`)."""
    if bias is None:
        return x
    if _bias_gets_cpu_gradient(bias):
        rows = int(np.prod(x.shape[:-1]))
        return x + gemm_broadcast(bias, rows).reshape(x.shape)
    return x + bias


def conv2d_channels_last(x, weight, bias=None, stride=1, padding=0, groups=1):
    """``F.conv2d`` on ``[B, H, W, C]`` input, with the kernel layout that is faster on
    the device (or portable, see :func:`onnx_compatible_ops`)."""
    if _nchw_kernels():
        out = F.conv2d(x.transpose([0, 3, 1, 2]), weight, None, stride, padding,
                       groups=groups, data_format="NCHW")
        return add_channel_bias(out.transpose([0, 2, 3, 1]), bias)
    return F.conv2d(x, weight, bias, stride, padding, groups=groups, data_format="NHWC")


class ChannelsLastConv2D(nn.Conv2D):
    """Conv2D on ``[B, H, W, C]`` tensors (parameters as ``nn.Conv2D``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 groups=1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         groups=groups, data_format="NHWC")

    def forward(self, x):
        return conv2d_channels_last(x, self.weight, self.bias, self._stride, self._padding,
                                    self._groups)


def identity_filters(count, kernel_size):
    """``[count, 1, k, k]`` depth-wise filters that pass their channel through: 1 at the
    centre tap (odd ``k``), so 'same' zero padding never reaches the output."""
    filters = np.zeros([count, 1, kernel_size, kernel_size], dtype="float32")
    filters[:, :, kernel_size // 2, kernel_size // 2] = 1.0
    return paddle.to_tensor(filters)


class ResidualDepthwiseConv2D(ChannelsLastConv2D):
    """``x + DWConv(x)`` on ``[B, H, W, C]`` (a conditional position encoding, Eq. 6).

    The residual is folded into the filters (1 added to each centre tap), which saves a
    pass over the activations forward and backward. Parameters as ``nn.Conv2D``.
    """

    def __init__(self, channels, kernel_size=3):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels)
        self.register_buffer("identity", identity_filters(channels, kernel_size),
                             persistable=False)

    def forward(self, x):
        weight = self.weight + self.identity.astype(self.weight.dtype)
        return conv2d_channels_last(x, weight, self.bias, self._stride, self._padding,
                                    self._groups)


class ImageToChannelsLastConv2D(nn.Conv2D):
    """Conv2D reading an NCHW image, returning ``[B, H', W', C]`` (the bias added after
    the transpose, see :func:`add_channel_bias`). Parameters as ``nn.Conv2D``."""

    def forward(self, x):
        out = F.conv2d(x, self.weight, None, self._stride, self._padding,
                       self._dilation, self._groups)
        return add_channel_bias(out.transpose([0, 2, 3, 1]), self.bias)
