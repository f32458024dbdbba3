"""Building blocks shared by every model of the package, from stock Paddle layers.

Tensors inside a stage are channels last, ``[B, H, W, C]``: LayerNorm and the linear
layers work on the last axis. Convolutions run on Paddle's default NCHW layout, the one
every backend (cuDNN, oneDNN, TensorRT, ONNX) takes, so the layers that convolve a
channels-last tensor transpose around the convolution, unless the model is switched to
channels-last convolutions (``data_format="NHWC"``, :func:`set_channels_last`): no
transposes, the layout GPUs prefer, the same parameters. Exports stay NCHW: Paddle
Inference's oneDNN kernels (Paddle 3.3.1) run convolutions on NCHW-ordered shapes and
misread a channels-last tensor that another oneDNN op wrote.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["DropPath", "LayerNorm", "Mlp", "ScaledLinear", "SeparableProjection",
           "ConditionalPositionEncoding", "identity_filters", "set_channels_last", "CHANNELS_LAST_LAYERS",
           "to_channels_first", "to_channels_last", "conv_fan_in", "init_weights"]

_trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
_zeros = nn.initializer.Constant(0.0)
_ones = nn.initializer.Constant(1.0)


def to_channels_first(x):
    """``[B, H, W, C]`` -> ``[B, C, H, W]``."""
    return x.transpose([0, 3, 1, 2])


def to_channels_last(x):
    """``[B, C, H, W]`` -> ``[B, H, W, C]``."""
    return x.transpose([0, 2, 3, 1])


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


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis that keeps its ``epsilon`` as a public
    attribute (the CPU kernels recompute the statistics in their backward)."""

    def __init__(self, dim, epsilon=1e-5):
        super().__init__(dim, epsilon=epsilon)
        self.epsilon = epsilon


class Mlp(nn.Layer):
    """The MLP of Eq. 8: linear (C -> R C), GELU, linear (R C -> C)."""

    def __init__(self, dim, hidden_dim, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):  # [..., C]
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ScaledLinear(nn.Linear):
    """``nn.Linear`` whose output can be scaled by a constant for free: ``scale`` is
    folded into the weight and bias (a pass over ``in x out`` parameters instead of one
    over the activations; an export folds it into the parameters)."""

    def forward(self, x, scale=None):
        if scale is None:
            return super().forward(x)
        bias = None if self.bias is None else self.bias * scale
        return F.linear(x, self.weight * scale, bias)


class SeparableProjection(nn.Layer):
    """phi_Q, phi_K or phi_V of Eq. 2: a separable convolution as in CvT (Wu et al.
    2021a), i.e. a 3x3 depth-wise convolution then a C x C linear map.

    The depth-wise convolution has no bias (nor CvT's BatchNorm): a per-channel offset
    before a linear map is a bias of the map, ``W (conv(x) + b) = W conv(x) + W b``, so
    the linear layer's bias already holds it, and the extra add would cost a pass over
    the activations.
    """

    def __init__(self, dim, bias=True):
        super().__init__()
        self.depthwise = nn.Conv2D(dim, dim, 3, padding=1, groups=dim, bias_attr=False)
        self.linear = ScaledLinear(dim, dim, bias_attr=None if bias else False)

    def forward(self, x, scale=None):
        """``[B, C, H, W]`` (or ``[B, H, W, C]`` channels last) -> ``[B, H, W, C]``;
        times ``scale`` when given (see :class:`ScaledLinear`)."""
        taps = self.depthwise(x)
        if self.depthwise._data_format == "NCHW":
            taps = to_channels_last(taps)
        return self.linear(taps, scale)


def identity_filters(weight):
    """``[1, 1, k, k]`` filter (odd ``k``, as ``weight``'s ``[C, 1, k, k]``) that passes a
    channel through: 1 at the centre tap, which 'same' zero padding never moves."""
    kernel_h, kernel_w = weight.shape[2], weight.shape[3]
    taps = paddle.arange(kernel_h * kernel_w, dtype="int64")
    centre = (taps == (kernel_h // 2) * kernel_w + kernel_w // 2).astype(weight.dtype)
    return centre.reshape([1, 1, kernel_h, kernel_w])


class ConditionalPositionEncoding(nn.Conv2D):
    """``X + CPE(X)`` of Eq. 6 on ``[B, H, W, C]``: CPE is a 3x3 depth-wise convolution
    (Chu et al. 2021b), so it works at any input size. Parameters as ``nn.Conv2D``.

    The sum is computed as one convolution whose filters are CPE's plus the identity
    (:func:`identity_filters`, broadcast over the channels): the same function and
    gradients, one pass over the activations instead of a convolution and an add.
    """

    def __init__(self, channels, kernel_size=3):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels)
        self.channels = channels
        self.same_padding = kernel_size // 2  # stride 1: the output keeps H and W

    @property
    def channels_last(self):
        """Whether the convolution reads ``[B, H, W, C]`` as it lies (:func:`set_channels_last`)."""
        return self._data_format == "NHWC"

    def forward(self, x):  # [B, H, W, C]
        channels_last = self.channels_last
        out = F.conv2d(x if channels_last else to_channels_first(x),
                       self.weight + identity_filters(self.weight), self.bias, 1,
                       self.same_padding, groups=self.channels,
                       data_format="NHWC" if channels_last else "NCHW")
        return out if channels_last else to_channels_last(out)


# layers whose convolutions follow set_channels_last (their own or their sublayers')
CHANNELS_LAST_LAYERS = (SeparableProjection, ConditionalPositionEncoding)


def set_channels_last(layer, channels_last=True, kinds=CHANNELS_LAST_LAYERS):
    """Switch the convolutions of every layer of ``kinds`` in ``layer`` to channels-last
    (``data_format="NHWC"``) or back to NCHW, in place; parameters are unchanged (Paddle
    keeps filters ``[out, in, kh, kw]`` in both layouts)."""
    data_format = "NHWC" if channels_last else "NCHW"
    for sublayer in layer.sublayers(include_self=True):
        if isinstance(sublayer, kinds):
            for conv in sublayer.sublayers(include_self=True):
                if isinstance(conv, nn.Conv2D):
                    # what nn.Conv2D derives from data_format at construction (the integer
                    # paddings used here read the same in both layouts)
                    conv._data_format = data_format
                    conv._channel_dim = 3 if channels_last else 1
    return layer


def conv_fan_in(conv):
    """Inputs that reach one output of ``conv``: ``in_channels / groups x k_h x k_w``
    (9 for a 3x3 depth-wise convolution; Paddle's default initializer counts
    ``in_channels x 9`` there, which starts such filters sqrt(C) times too small)."""
    _, in_per_group, kernel_h, kernel_w = conv.weight.shape
    return in_per_group * kernel_h * kernel_w


def init_weights(layer):
    """ViT practice for the transformer layers (truncated normal 0.02 linear weights,
    unit LayerNorm, zero biases); convolutions as PyTorch's default, which CvT, CSWin and
    timm's conv-position-encoding models train with: uniform(+-1 / sqrt(fan_in)) with the
    fan-in of :func:`conv_fan_in`, zero bias."""
    if isinstance(layer, nn.Linear):
        _trunc_normal(layer.weight)
        if layer.bias is not None:
            _zeros(layer.bias)
    elif isinstance(layer, nn.LayerNorm):
        _ones(layer.weight)
        _zeros(layer.bias)
    elif isinstance(layer, nn.Conv2D):
        bound = 1.0 / math.sqrt(conv_fan_in(layer))
        nn.initializer.Uniform(-bound, bound)(layer.weight)
        if layer.bias is not None:
            _zeros(layer.bias)
