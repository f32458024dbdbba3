"""CSWin-T, a peer of Pale-T for the benchmark, written from the CSWin paper.

Dong et al., "CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped
Windows", CVPR 2022. This is not a model the package ships or trains: it exists so that
:mod:`paddle_pale.benchmark` can time and cost Pale-T against CSWin-T as it compares
Pale-T with PaddleSeg's Swin-T. It returns the same outputs as Pale-T's
``forward_pyramid`` and PaddleSeg's Swin backbone: the 4 stage outputs, each through its
own LayerNorm, as NCHW maps at strides 4, 8, 16, 32.

Architecture (CSWin-T as published):

* stem: 7x7 convolution, stride 4, padding 2, then LayerNorm; embed dim 64;
* 4 stages of depths (1, 2, 21, 1), heads (2, 4, 8, 16), stripe widths (1, 2, 7, 7);
  between stages a 3x3 stride-2 convolution (channels double) and LayerNorm;
* pre-norm blocks ``x = x + attn(LN(x)); x = x + mlp(LN(x))``, MLP ratio 4 with GELU;
* cross-shaped window attention: one ``Linear(C, 3C)`` gives q, k, v; in stages 1-3
  the first half of the heads (and channels) attends within horizontal stripes of
  ``sw`` adjacent rows (full width), the second half within vertical stripes of ``sw``
  adjacent columns; the halves are concatenated and projected by ``Linear(C, C)``. In
  the last stage (7x7 at 224 input, ``sw`` = 7) a single branch of all heads attends
  over the whole map. Scale ``head_dim ** -0.5``;
* LePE: a 3x3 depth-wise convolution (with bias) of V, computed within each stripe
  (each stripe its own small image, zero padding at its borders), added to the output
  of that branch before the concatenation.

No stochastic depth nor dropout (the benchmark runs Pale-T and Swin-T without them).
Feature maps whose height (width) is not a multiple of a stage's stripe width raise a
ValueError: no padding (a 224 input gives 56, 28, 14, 7, all divisible). Stock Paddle
ops only: the model exports with :func:`paddle_pale.export.static_model` (fixed input
size) and runs in a Paddle Inference predictor, with or without oneDNN.
"""
import numbers

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .models.attention import (attention_scores, group_columns, group_rows,
                               ungroup_columns, ungroup_rows)

__all__ = ["CSWinTransformer", "CrossShapedAttention", "cswin_t", "stripe_lepe",
           "CSWIN_T"]

# CSWin-T of the paper (Table 1)
CSWIN_T = dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16),
               stripe_widths=(1, 2, 7, 7), mlp_ratio=4.0)


def _trunc_normal(std=0.02):
    return nn.initializer.TruncatedNormal(std=std)


@paddle.jit.not_to_static
def _check_divisible(height, width, stripe_width):
    """ValueError unless ``stripe_width`` divides both sides (Python ints; symbolic
    sizes, which fixed-size exports never have, are not checked)."""
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, numbers.Integral) and size > 0 and size % stripe_width:
            raise ValueError(
                f"CSWin attention: the feature map {name} {size} is not a multiple of "
                f"the stripe width {stripe_width} (this CSWin-T does not pad; at stride "
                f"4/8/16/32 a 224x224 input gives 56, 28, 14, 7)")


def stripe_lepe(v, weight, bias, stripe_width, axis):
    """LePE of ``v`` (``[B, H, W, C']``): a 3x3 depth-wise convolution within each
    stripe of ``stripe_width`` adjacent rows (``axis=1``) or columns (``axis=2``), each
    stripe zero-padded at its own borders.

    Every stripe gets one zero line on both sides (``F.pad``) so that one convolution
    of the whole map never mixes two stripes; the separator lines are cropped again.
    The convolution runs NCHW (Paddle Inference's oneDNN kernels misread channels-last
    ones). ``stripe_width`` equal to the side is the convolution of the whole map.
    """
    height, width, channels = v.shape[1], v.shape[2], v.shape[3]
    s = stripe_width
    t = v.transpose([0, 3, 1, 2])  # [B, C', H, W]
    if axis == 1:  # rows: [B, C' N, s, W], pad s
        groups = height // s
        t = F.pad(t.reshape([0, channels * groups, s, width]), [0, 0, 1, 1])
        t = t.reshape([0, channels, groups * (s + 2), width])
    else:  # columns: [B, C' H, N, s], pad s
        groups = width // s
        t = F.pad(t.reshape([0, channels * height, groups, s]), [1, 1, 0, 0])
        t = t.reshape([0, channels, height, groups * (s + 2)])
    t = F.conv2d(t, weight, bias, padding=1, groups=channels)
    if axis == 1:
        t = t.reshape([0, channels, groups, s + 2, width])[:, :, :, 1:s + 1]
    else:
        t = t.reshape([0, channels, height, groups, s + 2])[:, :, :, :, 1:s + 1]
    return t.reshape([0, channels, height, width]).transpose([0, 2, 3, 1])


class CrossShapedAttention(nn.Layer):
    """Cross-shaped window self-attention with LePE on ``[B, H, W, C]`` tokens.

    Args:
        dim: channels C.
        num_heads: heads; even when ``split`` (half per branch).
        stripe_width: ``sw``, rows (columns) per horizontal (vertical) stripe.
        split: two branches (horizontal | vertical stripes, stages 1-3); False: one
            branch of all heads over the whole map (the last stage).
    """

    def __init__(self, dim, num_heads, stripe_width, split=True):
        super().__init__()
        if dim % num_heads or (split and num_heads % 2):
            raise ValueError(f"CSWin attention needs num_heads dividing dim ({dim}) and "
                             f"even when split; got {num_heads}")
        self.dim, self.num_heads, self.stripe_width, self.split = (
            dim, num_heads, stripe_width, split)
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # LePE: one depth-wise 3x3 kernel per channel of V (each branch its channels)
        self.lepe_weight = self.create_parameter(
            [dim, 1, 3, 3], default_initializer=_trunc_normal())
        self.lepe_bias = self.create_parameter(
            [dim], is_bias=True, default_initializer=nn.initializer.Constant(0.0))

    def _attend(self, q, k, v):
        """``[B, N, heads, L, d]`` groups -> softmax(q k^T * scale) v."""
        scores = attention_scores(q * self.scale, k, None)
        return paddle.matmul(F.softmax(scores, axis=-1), v)

    def _stripes(self, q, k, v, weight, bias, heads, stripe_width, axis):
        """One branch: ``heads`` heads attend within stripes of ``stripe_width``
        adjacent rows (``axis=1``) or columns (``axis=2``), plus its LePE."""
        height, width = q.shape[1], q.shape[2]
        if axis == 1:
            groups = height // stripe_width
            out = self._attend(*(group_rows(t, heads, stripe_width, groups, contiguous=True)
                                 for t in (q, k, v)))
            out = ungroup_rows(out, stripe_width, groups, width, height, contiguous=True)
        else:
            groups = width // stripe_width
            out = self._attend(*(group_columns(t, heads, stripe_width, groups,
                                               contiguous=True) for t in (q, k, v)))
            out = ungroup_columns(out, stripe_width, groups, height, width, contiguous=True)
        return out + stripe_lepe(v, weight, bias, stripe_width, axis)

    def forward(self, x):
        if self.split:
            _check_divisible(x.shape[1], x.shape[2], self.stripe_width)
        q, k, v = paddle.split(self.qkv(x), 3, axis=-1)
        if not self.split:
            # the whole map is one stripe of all its rows
            return self.proj(self._stripes(q, k, v, self.lepe_weight, self.lepe_bias,
                                           self.num_heads, x.shape[1], axis=1))
        halves = [paddle.split(t, 2, axis=-1) for t in (q, k, v)]
        weights = paddle.split(self.lepe_weight, 2, axis=0)
        biases = paddle.split(self.lepe_bias, 2, axis=0)
        heads = self.num_heads // 2
        rows = self._stripes(*(h[0] for h in halves), weights[0], biases[0], heads,
                             self.stripe_width, axis=1)
        cols = self._stripes(*(h[1] for h in halves), weights[1], biases[1], heads,
                             self.stripe_width, axis=2)
        return self.proj(paddle.concat([rows, cols], axis=-1))

    def functional_macs(self, inputs, output):
        """QK^T and AV of each branch, plus LePE's 9 MACs per V element (what
        :func:`paddle_pale.utils.flops.count_flops` adds to the Linear layers)."""
        _, height, width, channels = inputs[0].shape
        tokens = height * width
        lepe = tokens * channels * 9
        if not self.split:
            return 2 * tokens * tokens * channels + lepe
        s = self.stripe_width
        half = channels // 2
        return 2 * tokens * (s * width) * half + 2 * tokens * (s * height) * half + lepe


class CSWinBlock(nn.Layer):
    def __init__(self, dim, num_heads, stripe_width, split, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossShapedAttention(dim, num_heads, stripe_width, split)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _ConvNorm(nn.Layer):
    """Convolution of ``[B, H, W, C]`` tokens (NCHW inside) then LayerNorm: the stem
    (7x7, stride 4, padding 2) and the merges between stages (3x3, stride 2)."""

    def __init__(self, in_channels, out_channels, kernel, stride, padding, channels_last_in):
        super().__init__()
        self.channels_last_in = channels_last_in
        self.conv = nn.Conv2D(in_channels, out_channels, kernel, stride, padding)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x):
        if self.channels_last_in:
            x = x.transpose([0, 3, 1, 2])
        return self.norm(self.conv(x).transpose([0, 2, 3, 1]))


class CSWinTransformer(nn.Layer):
    """CSWin Transformer backbone (see the module docstring).

    ``forward(x)`` (``x``: ``[B, 3, H, W]``) returns :meth:`forward_pyramid`'s 4 normed
    NCHW maps, or with ``num_classes > 0`` the logits of a linear head on the mean of
    the last normed map.
    """

    def __init__(self, embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16),
                 stripe_widths=(1, 2, 7, 7), mlp_ratio=4.0, in_channels=3, num_classes=0):
        super().__init__()
        if not len(depths) == len(num_heads) == len(stripe_widths):
            raise ValueError("depths, num_heads and stripe_widths need one entry per stage")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.stripe_widths = tuple(stripe_widths)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.dims = dims
        self.patch_embeds = nn.LayerList()
        self.stages = nn.LayerList()
        self.stage_norms = nn.LayerList()
        last = len(depths) - 1
        for i, (depth, heads, sw) in enumerate(zip(depths, num_heads, stripe_widths)):
            self.patch_embeds.append(
                _ConvNorm(in_channels, dims[0], 7, 4, 2, channels_last_in=False) if i == 0
                else _ConvNorm(dims[i - 1], dims[i], 3, 2, 1, channels_last_in=True))
            self.stages.append(nn.Sequential(*[
                CSWinBlock(dims[i], heads, sw, i != last, mlp_ratio) for _ in range(depth)]))
            self.stage_norms.append(nn.LayerNorm(dims[i]))
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else None
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(layer):
        if isinstance(layer, nn.Linear):
            _trunc_normal()(layer.weight)
            if layer.bias is not None:
                nn.initializer.Constant(0.0)(layer.bias)

    def forward_pyramid(self, x):
        outputs = []
        for embed, stage, norm in zip(self.patch_embeds, self.stages, self.stage_norms):
            x = stage(embed(x))
            outputs.append(norm(x).transpose([0, 3, 1, 2]))
        return outputs

    def forward(self, x):
        outputs = self.forward_pyramid(x)
        if self.head is None:
            return outputs
        return self.head(outputs[-1].mean(axis=[2, 3]))


def cswin_t(**overrides):
    """CSWin-T (``CSWIN_T``); keyword arguments override the published configuration,
    e.g. ``num_classes=1000`` for the classifier, small dims for tests."""
    return CSWinTransformer(**dict(CSWIN_T, **overrides))
