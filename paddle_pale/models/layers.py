"""Building blocks shared by every model of the package, from stock Paddle layers.

Tensors inside a stage are channels last, ``[B, H, W, C]``: LayerNorm and the linear
layers work on the last axis. Convolutions run on Paddle's default NCHW layout, the one
every backend (cuDNN, oneDNN, TensorRT, ONNX) takes, so the layers that convolve a
channels-last tensor transpose around the convolution.
"""
import math

import paddle
import paddle.nn as nn

__all__ = ["DropPath", "Mlp", "SeparableProjection", "ConditionalPositionEncoding",
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


class SeparableProjection(nn.Layer):
    """phi_Q, phi_K or phi_V of Eq. 2: a separable convolution as in CvT (Wu et al.
    2021a), i.e. a 3x3 depth-wise convolution then a C x C linear map.

    The depth-wise convolution carries a bias instead of CvT's BatchNorm: the same
    function at inference, and free of batch statistics in small-batch dense training.
    """

    def __init__(self, dim, bias=True):
        super().__init__()
        self.depthwise = nn.Conv2D(dim, dim, 3, padding=1, groups=dim)
        self.linear = nn.Linear(dim, dim, bias_attr=None if bias else False)

    def forward(self, x):  # [B, C, H, W] -> [B, H, W, C]
        return self.linear(to_channels_last(self.depthwise(x)))


class ConditionalPositionEncoding(nn.Conv2D):
    """``X + CPE(X)`` of Eq. 6 on ``[B, H, W, C]``: CPE is a 3x3 depth-wise convolution
    (Chu et al. 2021b), so it works at any input size. Parameters as ``nn.Conv2D``."""

    def __init__(self, channels, kernel_size=3):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the size, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels)

    def forward(self, x):  # [B, H, W, C]
        return x + to_channels_last(super().forward(to_channels_first(x)))


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
