"""Faster eager-CPU forms of the model's layers: same parameters, same function.

Each class below subclasses the plain layer of :mod:`paddle_pale.models` and only
replaces ``forward``; :func:`use_cpu_kernels` switches a model's layers to these forms in
place (and :func:`use_plain_layers` back), so parameters, their names, state-dict keys,
optimizer state and hooks are untouched. They read only the arguments our layers keep
at construction (``stride``, ``padding``, ``epsilon``, ...), never Paddle's private
fields. Every trick was kept because it won an A/B run of the whole Pale-T against the
plain layers; the figures are in docs/performance.md.

The 3x3 depth-wise convolutions, the attention softmax, the MLP's GELU and LayerNorm in
training run on the C++ kernels of :mod:`paddle_pale.kernels.native` (compiled on first
use; Paddle's own kernels where they cannot be built).

They are for eager execution on CPU: static graphs (export) and GPUs use the plain
layers, whose stock ops AMP, flash attention, oneDNN, TensorRT and ONNX understand.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..models.layers import (ConditionalPositionEncoding, LayerNorm, Mlp, identity_filters,
                             to_channels_last)
from ..models.pale import ConvPatchEmbed, PaleAttention
from . import native

__all__ = ["use_cpu_kernels", "use_plain_layers", "uses_cpu_kernels", "CpuLinear",
           "CpuLayerNorm", "CpuMlp", "CpuConditionalPositionEncoding", "CpuConvPatchEmbed",
           "CpuPaleAttention", "gemm_broadcast", "SCORE_CHUNK_BYTES"]


def gemm_broadcast(bias, num_rows):
    """``bias`` ([C]) repeated in ``num_rows`` rows, as the outer product ones x bias.

    The gradient of a broadcast bias is a column sum, for which Paddle's CPU reduce is
    far slower than a GEMM with a ones vector. Built as an outer product, the bias gets
    its gradient from that GEMM.
    """
    return paddle.matmul(paddle.ones([num_rows, 1], bias.dtype), bias.unsqueeze(0))


def _takes_gradient(layer, bias):
    return (bias is not None and layer.training and not bias.stop_gradient
            and paddle.is_grad_enabled())


def _add_channel_bias(layer, x, bias):
    """``x + bias`` on a channels-last ``x``: a broadcast over the trailing axis, which
    Paddle's CPU add handles far faster than the per-channel add inside an NCHW
    ``F.conv2d``; as a GEMM while it takes a gradient (:func:`gemm_broadcast`)."""
    if bias is None:
        return x
    if _takes_gradient(layer, bias):
        rows = int(np.prod(x.shape[:-1]))
        return x + gemm_broadcast(bias, rows).reshape(x.shape)
    return x + bias


class CpuLinear(nn.Linear):
    """``nn.Linear`` with its bias added inside the GEMM (``addmm``), or, while it takes a
    gradient, as :func:`gemm_broadcast` added to a plain matmul (Paddle's CPU ``linear``
    runs a separate broadcast add that costs about as much as the matmul at small C;
    ``addmm``'s backward with a full-size input would copy the gradient)."""

    def forward(self, x):
        if self.bias is None:
            return paddle.matmul(x, self.weight)
        shape = x.shape
        rows = x.reshape([-1, shape[-1]])
        if _takes_gradient(self, self.bias):
            out = paddle.matmul(rows, self.weight) + gemm_broadcast(self.bias, rows.shape[0])
        else:
            out = paddle.addmm(self.bias.unsqueeze(0), rows, self.weight)
        return out.reshape([*shape[:-1], self.weight.shape[1]])


class _LayerNormFunction(paddle.autograd.PyLayer):
    """LayerNorm over the last axis of ``[N, C]`` rows with a vectorised backward.

    Paddle's CPU ``layer_norm_grad`` is many times slower than its forward; the
    textbook gradient written with row means and two ones-vector GEMMs (for the weight
    and bias) takes a fraction of its time.
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


class CpuLayerNorm(LayerNorm):
    """The model's :class:`~paddle_pale.models.layers.LayerNorm` over the last axis whose
    backward, when training in float32, is the native kernel's
    (:func:`paddle_pale.kernels.native.layer_norm`), or :class:`_LayerNormFunction` where
    that cannot be built."""

    def forward(self, x):
        if (self.training and x.dtype == paddle.float32 and self.weight is not None
                and self.bias is not None
                and not all(t.stop_gradient for t in (x, self.weight, self.bias))):
            rows = x.reshape([-1, x.shape[-1]])
            if native.available_for(rows, self.weight, self.bias) is not None:
                out = native.layer_norm(rows, self.weight, self.bias, self.epsilon)
            else:
                out = _LayerNormFunction.apply(rows, self.weight, self.bias, self.epsilon)
            return out.reshape(x.shape)
        return super().forward(x)


class CpuMlp(Mlp):
    """The MLP with its GELU (``Mlp``'s ``nn.GELU()``, the exact form) on the native
    kernel (:func:`paddle_pale.kernels.native.gelu`)."""

    def forward(self, x):
        return self.drop(self.fc2(self.drop(native.gelu(self.fc1(x)))))


class CpuConditionalPositionEncoding(ConditionalPositionEncoding):
    """``x + DWConv(x)`` as one depth-wise convolution with 1 added to every centre tap
    (saves a pass over the activations forward and backward), a 3x3 one on the
    channels-last tokens as they lie (the native kernel), its bias added after it."""

    def forward(self, x):  # [B, H, W, C]
        weight = self.weight + identity_filters(self.weight)  # broadcast over channels
        if tuple(weight.shape[2:]) == (3, 3):  # on the tokens as they lie
            out = native.depthwise_conv3x3_channels_last(x, weight).squeeze(0)
        else:
            out = to_channels_last(F.conv2d(x.transpose([0, 3, 1, 2]), weight, None, 1,
                                            self.same_padding, groups=self.channels))
        return _add_channel_bias(self, out, self.bias)


class CpuConvPatchEmbed(ConvPatchEmbed):
    """Patch merging with the convolution's bias added after the transpose."""

    def forward(self, x):
        conv = self.proj
        if self.tokens_in and not self.channels_last:
            x = x.transpose([0, 3, 1, 2])
        out = F.conv2d(x, conv.weight, None, self.stride, self.padding,
                       data_format="NHWC" if self.channels_last else "NCHW")
        if not self.channels_last:
            out = to_channels_last(out)
        return self.norm(_add_channel_bias(self, out, conv.bias))


# the largest score tensor an attention chunk builds in the training step
# (CpuPaleAttention): stage 1 of Pale-T at 224 then runs one image at a time, stage 2
# three, later stages the whole batch (5-7% faster steps at batch 8, docs/performance.md)
SCORE_CHUNK_BYTES = 4 * 2 ** 20


def _split_images(tensors, sizes):
    """A tensor ``[B, ...]``, or nested tuples of them, or None -> one such value per
    chunk of ``sizes`` images."""
    if tensors is None:
        return [None] * len(sizes)
    if isinstance(tensors, (tuple, list)):
        return list(zip(*(_split_images(t, sizes) for t in tensors)))
    # split, not slices: its gradient is one concat, not zero-padded full-size sums
    return paddle.split(tensors, sizes)


class CpuPaleAttention(PaleAttention):
    """PS-Attention with phi_Q, phi_K and phi_V computed together, for every
    ``attention_mode`` (the projections are the same; only the region differs).

    The three depth-wise convolutions run as one native convolution with three filters
    per channel on the channels-last tokens, each filter's taps apart
    (:func:`~paddle_pale.kernels.native.depthwise_conv3x3_channels_last`); the three
    linear maps as batched matmuls that read those taps as they lie and write the two
    channel halves that the split modes group (``pale``, ``cross_shaped``, ``axial``), or
    all channels at once for the modes that attend with every head. The taps carry a
    channel of ones that meets a bias row of the weights, so the matmul adds the linear
    biases itself. The attention scale is folded into the query weights; without a
    gradient the softmax runs in place (a fresh score-sized buffer costs more in page
    faults than the softmax itself). While a gradient is recorded, large batches attend
    in chunks of images (:meth:`images_per_chunk`).
    """

    def _projections(self):
        return self.query, self.key, self.value

    def _weights_with_bias_row(self, query_scale):
        """``[3, C + 1, C]``: the three linear maps (``[in, out]`` like ``nn.Linear``),
        then their total bias as a last row."""
        projections = self._projections()
        weight = paddle.stack([p.linear.weight for p in projections])  # [3, C, C]
        # a map without a bias (the keys' and values', see PaleAttention) gets zeros
        bias = paddle.stack([paddle.zeros([self.dim], weight.dtype) if p.linear.bias is None
                             else p.linear.bias for p in projections]).unsqueeze(1)
        # one multiply by [s, 1, 1]: slices would cost zero-padded gradients
        scales = paddle.to_tensor([query_scale, 1.0, 1.0], dtype=weight.dtype).reshape([3, 1, 1])
        return paddle.concat([weight, bias], axis=1) * scales  # [3, C + 1, C]

    def _fused_taps(self, x):
        """``[3, B, HW, C + 1]``: the depth-wise taps of q, k and v of ``x``
        ``[B, H, W, C]``, channels last, and a channel of ones (for the bias row)."""
        _, height, width, channels = x.shape
        # filter j (q, k, v) of input channel c is filter 3 c + j
        filters = paddle.stack([p.depthwise.weight for p in self._projections()], axis=1)
        taps = native.depthwise_conv3x3_channels_last(
            x, filters.reshape([3 * channels, 1, 3, 3]), ones=True)
        return taps.reshape([3, -1, height * width, channels + 1])

    def qkv_halves(self, x):
        """``[B, H, W, C]`` -> ``(rows, cols)``, each ``(q, k, v)`` of one channel half,
        ``[B, H, W, C / 2]``, queries scaled (see
        :func:`paddle_pale.models.attention.split_halves`)."""
        _, height, width, channels = x.shape
        head_dim = channels // self.num_heads
        taps = self._fused_taps(x)
        halves = paddle.split(self._weights_with_bias_row(head_dim ** -0.5), 2, axis=-1)
        return tuple(paddle.unbind(paddle.matmul(taps, half.unsqueeze(1))
                                   .reshape([3, -1, height, width, channels // 2]))
                     for half in halves)

    def qkv(self, x):
        """``[B, H, W, C]`` -> ``(q, k, v)``, each ``[B, H, W, C]``, queries scaled."""
        _, height, width, channels = x.shape
        head_dim = channels // self.num_heads
        weights = self._weights_with_bias_row(head_dim ** -0.5)  # [3, C + 1, C]
        out = paddle.matmul(self._fused_taps(x), weights.unsqueeze(1))
        return tuple(paddle.unbind(out.reshape([3, -1, height, width, channels])))

    def images_per_chunk(self, x):
        """Images of ``x`` whose attention runs together: as many as keep the largest
        score tensor within :data:`SCORE_CHUNK_BYTES`, at least one."""
        _, height, width, _ = x.shape
        per_image = self.mode.score_elements(1, self.num_heads, height, width, self.region,
                                             self.block_index) * x.element_size()
        return max(1, int(SCORE_CHUNK_BYTES // per_image))

    def _attend(self, qkv, halves):
        return self.mode.compute(qkv, self.num_heads, self.region, self.block_index, "matmul",
                                 query_scale=1.0, softmax=native.softmax_, halves=halves,
                                 inplace=True)

    def forward(self, x):  # [B, H, W, C]
        if self.mode.split:
            qkv, halves = None, self.qkv_halves(x)
        else:
            qkv, halves = self.qkv(x), None
        batch = x.shape[0]
        # chunks pay in the training step, whose backward reuses each chunk's scores;
        # in inference alone they cost more than they save (docs/performance.md)
        records_gradient = paddle.is_grad_enabled() and not x.stop_gradient
        chunk = self.images_per_chunk(x) if records_gradient else batch
        if chunk >= batch:
            out = self._attend(qkv, halves)
        else:
            # attention is per image: a chunk's QK^T, softmax and AV (and their
            # gradients) run while its scores are still in the cache
            sizes = [chunk] * (batch // chunk) + ([batch % chunk] if batch % chunk else [])
            out = paddle.concat([self._attend(*chunk_inputs) for chunk_inputs in zip(
                _split_images(qkv, sizes), _split_images(halves, sizes))])
        return self.proj_drop(self.proj(out))


# plain class -> CPU form; the forms subclass their plain class and add no state
CPU_FORMS = {nn.Linear: CpuLinear, LayerNorm: CpuLayerNorm, Mlp: CpuMlp,
             ConditionalPositionEncoding: CpuConditionalPositionEncoding,
             ConvPatchEmbed: CpuConvPatchEmbed, PaleAttention: CpuPaleAttention}
PLAIN_FORMS = {cpu: plain for plain, cpu in CPU_FORMS.items()}


def _switch(model, forms):
    for layer in model.sublayers(include_self=True):
        form = forms.get(type(layer))
        if form is not None:
            layer.__class__ = form
    return model


def use_cpu_kernels(model):
    """Switch ``model``'s layers, in place, to their faster eager-CPU forms; returns it.

    Parameters, state-dict keys and results stay the same (tested in fp32, values and
    gradients); calling it again changes nothing. Call it on a model that trains or
    evaluates eagerly on CPU, never for a GPU or before export (:func:`paddle_pale.export`
    converts a copy back with :func:`use_plain_layers`).
    """
    return _switch(model, CPU_FORMS)


def use_plain_layers(model):
    """Undo :func:`use_cpu_kernels` in place; returns ``model``."""
    return _switch(model, PLAIN_FORMS)


def uses_cpu_kernels(model):
    """Whether any layer of ``model`` is in its CPU form."""
    return any(type(layer) in PLAIN_FORMS for layer in model.sublayers(include_self=True))
