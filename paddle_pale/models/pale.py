"""Pale Transformer (Wu et al., AAAI 2022): block (Eq. 6-8) and 4-stage backbone.

Inside a stage every tensor is channels last, ``[B, H, W, C]``: LayerNorm, the linear
layers and PS-Attention all work on the last axis, and the convolutions take and return
channels-last tensors (:class:`~.layers.ChannelsLastConv2D`; on CPU they transpose
around Paddle's NCHW kernels, which are the faster ones there).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .attention import attention_backend, pale_attention_packed, to_pale_size
from .layers import (ChannelsLastConv2D, DropPath, ImageToChannelsLastConv2D, LayerNorm,
                     Linear, Mlp, ResidualDepthwiseConv2D, identity_filters, init_weights)

__all__ = ["QKVProjection", "PaleAttention", "PaleBlock", "ConvPatchEmbed", "PaleTransformer",
           "CLASSIFIER_PREFIXES"]

# state-dict key prefixes of the classifier (pooled norm + linear head)
CLASSIFIER_PREFIXES = ("norm.", "head.")


class QKVProjection(nn.Layer):
    """phi_Q, phi_K and phi_V of Eq. 7 at once: separable convolutions (CvT style), a 3x3
    depth-wise conv then a C x C linear map per projection.

    The three depth-wise convs are one grouped conv with three filters per channel, and
    the linear maps batched matmuls that read the conv's channels-first output as it
    lies (transposed operand) and write the two channel halves of
    :func:`pale_attention_packed` directly. The ``depthwise`` Conv2D holds the conv
    parameters; its forward is not called.
    """

    def __init__(self, dim, bias=True):
        super().__init__()
        self.dim = dim
        # output channel 3 c + j: filter j (q, k, v) of input channel c
        self.depthwise = ChannelsLastConv2D(dim, 3 * dim, 3, padding=1, groups=dim)
        # weight[j]: the C x C map of projection j (q, k, v), laid out [in, out] like Linear
        self.weight = self.create_parameter(
            [3, dim, dim], default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self.bias = self.create_parameter([3, 1, dim], is_bias=True) if bias else None
        # the three filters of the constant-one channel (see forward)
        self.register_buffer("unit_filters", identity_filters(3, 3), persistable=False)

    def _weights_with_bias_row(self, query_scale):
        """``[3, C + 1, C]``: the three linear maps, then their total bias as a last row
        (the linear bias plus the conv bias carried through the map)."""
        weight, bias = self.weight, self.bias
        if query_scale is not None:  # on the small weights, not on the activations
            # one multiply by [s, 1, 1]: slices would cost zero-padded gradients
            scales = paddle.to_tensor([query_scale, 1.0, 1.0], dtype=weight.dtype)
            scales = scales.reshape([3, 1, 1])
            weight = weight * scales
            if bias is not None:
                bias = bias * scales
        conv_bias = self.depthwise.bias
        if conv_bias is not None:
            conv_bias = conv_bias.reshape([self.dim, 3]).transpose([1, 0]).unsqueeze(1)
            folded = paddle.bmm(conv_bias, weight)  # [3, 1, C]
            bias = folded if bias is None else bias + folded
        if bias is None:
            bias = paddle.zeros([3, 1, self.dim], dtype=weight.dtype)
        return paddle.concat([weight, bias], axis=1)

    def forward(self, x, query_scale=None):
        """``[B, H, W, C]`` -> ``(rows, cols)``, each ``[3, B, H, W, C / 2]``: q, k, v of
        the channel half that attends within rows and of the half that attends within
        columns. Queries are multiplied by ``query_scale``."""
        _, height, width, channels = x.shape
        # A constant-one input channel rides through the conv and meets the bias row of
        # the weights, so the matmul adds the biases itself: the GEMM reading the
        # transposed taps cannot take a bias, and a broadcast add would cost a full pass.
        x = F.pad(x.transpose([0, 3, 1, 2]), [0, 0, 0, 1, 0, 0, 0, 0], value=1.0)
        filters = paddle.concat(
            [self.depthwise.weight, self.unit_filters.astype(self.depthwise.weight.dtype)])
        taps = F.conv2d(x, filters, None, padding=1, groups=channels + 1)
        taps = taps.reshape([-1, channels + 1, 3, height * width])
        halves = paddle.split(self._weights_with_bias_row(query_scale), 2, axis=-1)
        if paddle.in_dynamic_mode():
            taps = taps.transpose([2, 0, 1, 3])  # [3, B, C + 1, HW]
            halves = [half.unsqueeze(1) for half in halves]  # broadcast over B
        else:
            # paddle's static shape inference takes a dynamic batch axis broadcast
            # against 1 for 1, so graphs get one batched matmul over [3, C + 1, B HW]
            # (2% slower in eager Pale-T inference, hence not used there)
            taps = taps.transpose([2, 1, 0, 3]).reshape([3, channels + 1, -1])
        return tuple(paddle.matmul(taps, half, transpose_x=True)
                     .reshape([3, -1, height, width, channels // 2]) for half in halves)


class PaleAttention(nn.Layer):
    """PS-Attention module of Eq. 7: separable-conv Q/K/V, parallel row/column
    attention (Eq. 1-3) and an output projection.

    Args:
        dim: channels C.
        num_heads: heads H_i (even: half per direction).
        pale_size: S_i, an int or ``(s_r, s_c)``.
        qkv_bias: bias in the Q/K/V linear maps.
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim, num_heads, pale_size=7, qkv_bias=True, proj_drop=0.0):
        super().__init__()
        if num_heads < 2 or num_heads % 2 or dim % num_heads:
            raise ValueError(
                f"PaleAttention needs an even num_heads dividing dim, got dim={dim}, "
                f"num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.pale_size = to_pale_size(pale_size)
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = QKVProjection(dim, qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    def qkv_projection(self, x):
        """Unscaled ``(q, k, v)``, each ``[B, H, W, C]``: the inputs of
        :func:`pale_attention` that this layer's fused path computes."""
        rows, cols = self.qkv(x)  # [3, B, H, W, C / 2] each
        return tuple(paddle.concat([rows[j], cols[j]], axis=-1) for j in range(3))

    def forward(self, x):  # [B, H, W, C]
        _, height, width, _ = x.shape
        s_r, s_c = self.pale_size
        backend = attention_backend(paddle.device.get_device().startswith("gpu"), x.dtype,
                                    padded=bool(height % s_r or width % s_c))
        out = pale_attention_packed(self.qkv(x, self.scale), self.num_heads, self.pale_size,
                                    backend)
        return self.proj_drop(self.proj(out))

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}, pale_size={self.pale_size}"


class PaleBlock(nn.Layer):
    """Pale Transformer block (Eq. 6-8): CPE, LN + PS-Attention, LN + MLP."""

    def __init__(self, dim, num_heads, pale_size=7, mlp_ratio=4.0, qkv_bias=True,
                 drop=0.0, drop_path=0.0):
        super().__init__()
        # conditional position encoding: depth-wise 3x3 conv with a residual (Eq. 6)
        self.cpe = ResidualDepthwiseConv2D(dim, 3)
        self.norm1 = LayerNorm(dim)
        self.attn = PaleAttention(dim, num_heads, pale_size, qkv_bias, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x):  # [B, H, W, C]
        x = self.cpe(x)  # x + DWConv(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvPatchEmbed(nn.Layer):
    """Overlapping-conv patch merging + LayerNorm (7x7/4 for stage 1, 3x3/2 after).

    Stage 1 reads the NCHW image; later stages read the previous stage channels last.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, data_format):
        super().__init__()
        padding = kernel_size // 2
        if data_format == "NCHW":
            self.proj = ImageToChannelsLastConv2D(in_channels, out_channels, kernel_size,
                                                  stride, padding)
        else:
            self.proj = ChannelsLastConv2D(in_channels, out_channels, kernel_size, stride,
                                           padding)
        self.norm = LayerNorm(out_channels)

    def forward(self, x):
        return self.norm(self.proj(x))  # [B, H, W, C]


def _per_stage(value, name, num_stages, is_entry):
    """Broadcast ``value`` to one entry per stage, or validate a per-stage sequence."""
    if is_entry(value):
        return [value] * num_stages
    if isinstance(value, (list, tuple)) and len(value) == num_stages and all(
            is_entry(v) for v in value):
        return list(value)
    raise ValueError(f"{name} must be one value or {num_stages} per-stage values, got {value!r}")


def _is_pale_entry(value):
    try:
        to_pale_size(value)
        return True
    except ValueError:
        return False


class PaleTransformer(nn.Layer):
    """Pale Transformer backbone and classifier.

    One class serves classification (``forward``) and dense prediction
    (``forward_pyramid``): the stage norms ``stage_norms.{i}`` exist in both, so a
    classification checkpoint loads into a segmentation or detection backbone with only
    the classifier left over.

    Args:
        in_channels: image channels.
        num_classes: classifier outputs; 0 keeps the pooled, normed features.
        embed_dims: C_i per stage.
        depths: blocks per stage.
        num_heads: H_i per stage (even).
        pale_size: S_i; an int, ``(s_r, s_c)``, or one of those per stage.
        mlp_ratio: R_i.
        qkv_bias: bias in the Q/K/V linear layers.
        drop_rate: dropout after projections, in the MLP and before the classifier.
        drop_path_rate: stochastic depth, growing linearly from 0 to this over the blocks.
        with_classifier: build the pooled norm and the linear head; backbones for dense
            tasks pass False and then own no parameter they do not use.
    """

    def __init__(self, in_channels=3, num_classes=1000, embed_dims=(64, 128, 256, 512),
                 depths=(2, 2, 16, 2), num_heads=(2, 4, 8, 16), pale_size=7, mlp_ratio=4.0,
                 qkv_bias=True, drop_rate=0.0, drop_path_rate=0.0, with_classifier=True):
        super().__init__()
        num_stages = len(depths)
        if len(embed_dims) != num_stages or len(num_heads) != num_stages:
            raise ValueError(
                f"embed_dims, depths and num_heads need one entry per stage, got "
                f"{len(embed_dims)}, {num_stages}, {len(num_heads)}")
        for stage, (dim, heads) in enumerate(zip(embed_dims, num_heads)):
            if heads < 2 or heads % 2 or dim % heads:
                raise ValueError(
                    f"stage {stage + 1}: num_heads must be even and divide embed_dim, got "
                    f"embed_dim={dim}, num_heads={heads}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        pale_sizes = _per_stage(pale_size, "pale_size", num_stages, _is_pale_entry)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embed_dims = list(embed_dims)
        self.pale_sizes = [to_pale_size(s) for s in pale_sizes]

        total_blocks = sum(depths)
        drop_paths = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        self.patch_embeds = nn.LayerList()
        self.stages = nn.LayerList()
        self.stage_norms = nn.LayerList()
        previous = in_channels
        for stage, (dim, depth, heads) in enumerate(zip(embed_dims, depths, num_heads)):
            first = stage == 0
            self.patch_embeds.append(ConvPatchEmbed(
                previous, dim, kernel_size=7 if first else 3, stride=4 if first else 2,
                data_format="NCHW" if first else "NHWC"))
            start = sum(depths[:stage])
            self.stages.append(nn.Sequential(*[
                PaleBlock(dim, heads, self.pale_sizes[stage], mlp_ratio, qkv_bias, drop_rate,
                          drop_paths[start + i]) for i in range(depth)]))
            self.stage_norms.append(LayerNorm(dim))
            previous = dim
        self.feature_info = [
            dict(num_chs=dim, reduction=4 * 2 ** stage, module=f"stages.{stage}")
            for stage, dim in enumerate(embed_dims)]

        self.with_classifier = with_classifier
        if with_classifier:
            self.norm = LayerNorm(embed_dims[-1])
            self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
            self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 \
                else nn.Identity()
            # classification never reads the stage norms; freezing them keeps data
            # parallel training from waiting for gradients that never come
            for param in self.stage_norms.parameters():
                param.stop_gradient = True
        self.apply(init_weights)

    @property
    def feat_channels(self):
        """Channels of the four stage outputs (PaddleSeg's backbone contract)."""
        return list(self.embed_dims)

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PaleTransformer expects images of shape [B, {self.in_channels}, H, W], "
                f"got {list(x.shape)}")

    def check_out_indices(self, out_indices):
        """``out_indices`` as a list of increasing stage indices; ValueError otherwise."""
        num_stages = len(self.stages)
        out_indices = list(out_indices)
        if not out_indices or sorted(set(out_indices)) != out_indices or not all(
                0 <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices must be increasing stage indices in "
                             f"[0, {num_stages - 1}], got {out_indices}")
        return out_indices

    def forward_pyramid(self, x, out_indices=(0, 1, 2, 3)):
        """NCHW feature maps of the stages in ``out_indices`` (strides 4/8/16/32),
        each through its own LayerNorm."""
        self._check_input(x)
        features = []
        for index, (embed, stage) in enumerate(zip(self.patch_embeds, self.stages)):
            x = stage(embed(x))  # [B, H_i, W_i, C_i]
            if index in out_indices:
                features.append(self.stage_norms[index](x).transpose([0, 3, 1, 2]))
        return features

    def forward_features(self, x):
        """Last stage output ``[B, H/32, W/32, C_4]`` (channels last)."""
        self._check_input(x)
        for embed, stage in zip(self.patch_embeds, self.stages):
            x = stage(embed(x))
        return x

    def forward_head(self, x, pre_logits=False):
        if not self.with_classifier:
            raise ValueError("this PaleTransformer was built with with_classifier=False")
        x = self.norm(x.mean(axis=[1, 2]))  # average pool, then LN
        return x if pre_logits else self.head(self.head_drop(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
