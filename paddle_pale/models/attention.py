"""Pale-Shaped self-Attention (PS-Attention), parallel implementation (paper Eq. 1-3).

The channels are split in two halves. The first half attends within row-wise groups,
the second within column-wise groups:

* row-wise group ``g`` holds the ``s_r`` interlaced rows ``g, g + N_r, g + 2 N_r, ...``
  with ``N_r = H / s_r``;
* column-wise group ``g`` holds the ``s_c`` interlaced columns ``g, g + N_c, ...``
  with ``N_c = W / s_c``.

A row index ``r`` is therefore written as ``r = i * N_r + g`` (``i < s_r``), which is a
plain reshape of the H axis into ``[s_r, N_r]``: grouping costs one reshape and one
transpose, never a gather or a Python loop over groups.
"""
import numbers

import paddle
import paddle.nn.functional as F

__all__ = ["pale_attention", "pale_attention_packed", "pack_qkv", "attention_backend",
           "to_pale_size", "pale_attention_macs", "check_attention_inputs"]


def to_pale_size(pale_size):
    """Return ``(s_r, s_c)`` from an int or a pair; raise ValueError otherwise."""
    if isinstance(pale_size, numbers.Integral) and not isinstance(pale_size, bool):
        pair = (int(pale_size), int(pale_size))
    elif isinstance(pale_size, (tuple, list)) and len(pale_size) == 2 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in pale_size):
        pair = (int(pale_size[0]), int(pale_size[1]))
    else:
        raise ValueError(
            f"pale_size must be a positive int or a pair (s_r, s_c) of positive ints, "
            f"got {pale_size!r}")
    if min(pair) < 1:
        raise ValueError(f"pale_size must be positive, got {pale_size!r}")
    return pair


# Plain Python also under paddle.jit.to_static: converted, the dynamic batch entry of
# ``q.shape`` becomes a tensor and the list comparison a bool(Tensor) error.
@paddle.jit.not_to_static
def check_attention_inputs(q, k, v, num_heads):
    """Validate shapes shared by every PS-Attention implementation."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(
                f"pale_attention expects {name} of shape [B, H, W, C] (channels last), "
                f"got rank {t.ndim} with shape {list(t.shape)}")
    if list(k.shape) != list(q.shape) or list(v.shape) != list(q.shape):
        raise ValueError(
            f"q, k and v must have the same shape [B, H, W, C], got q {list(q.shape)}, "
            f"k {list(k.shape)}, v {list(v.shape)}")
    if not isinstance(num_heads, numbers.Integral) or num_heads < 2 or num_heads % 2:
        raise ValueError(
            f"num_heads must be a positive even int (half the heads attend to rows, half "
            f"to columns), got {num_heads!r}")
    channels = q.shape[-1]
    if channels % num_heads:
        raise ValueError(
            f"channels C={channels} must be divisible by num_heads={num_heads}")


def _real_line_mask(padded, group_size, num_groups, valid):
    """``[N, s]`` bool: whether line ``i * N + g`` (group g, slot i) is a real line.

    Lines are rows (or columns); those at index >= ``valid`` are padding.
    """
    line_index = paddle.arange(padded, dtype="int64").reshape([group_size, num_groups])
    return (line_index < valid).transpose([1, 0])


def _key_bias(is_real, dtype):
    """0 for real keys, -inf for padded ones; ``[N, ...]`` -> ``[1, N, 1, 1, L]``."""
    num_groups = is_real.shape[0]
    bias = paddle.where(is_real, paddle.zeros([1], dtype),
                        paddle.full([1], float("-inf"), dtype))
    return bias.reshape([1, num_groups, 1, 1, -1])


def attention_backend(on_gpu, dtype, padded):
    """Which kernel computes the group attention: ``"sdpa"`` or ``"matmul"``.

    Paddle's fused ``scaled_dot_product_attention`` (flash attention) is only fast on GPU
    in half precision, and is given no mask here, so it is used only when no line is
    padded. The matmul path (QK^T, softmax, AV) is the checked reference elsewhere.
    """
    half = str(dtype).split(".")[-1] in ("float16", "bfloat16")
    return "sdpa" if on_gpu and half and not padded else "matmul"


def _attend(q, k, v, bias, backend):
    """Softmax attention of already scaled queries.

    ``matmul``: ``[..., heads, L, d]`` tensors, ``bias`` broadcast onto the
    ``[..., heads, L, L]`` scores. ``sdpa``: ``[batch, L, heads, d]``, no bias.
    """
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=1.0, training=False)
    scores = paddle.matmul(q, k, transpose_y=True)
    if bias is not None:
        scores = scores + bias
    # in place: the scores are not needed again (matmul backward reads q and k), and a
    # fresh buffer of their size (39 MB at stage 1, batch 8) costs more in page faults
    # than the softmax itself. Graphs get the plain op (paddle warns that softmax_ is
    # softmax there; its inplace pass decides).
    softmax = F.softmax_ if paddle.in_dynamic_mode() else F.softmax
    return paddle.matmul(softmax(scores, axis=-1), v)


def _pad_axis(t, axis, amount):
    pad = [0, 0] * t.ndim
    pad[2 * axis + 1] = amount
    return F.pad(t, pad)


def _row_attention(qkv, num_heads, s_r, backend):
    """Attention within interlaced row groups; ``qkv``: ``[3, B, H, W, C']``."""
    _, _, height, width, channels = qkv.shape
    head_dim = channels // num_heads
    padded = -(-height // s_r) * s_r
    num_groups = padded // s_r  # N_r
    bias = None
    if padded != height:
        qkv = _pad_axis(qkv, 2, padded - height)
        is_real = _real_line_mask(padded, s_r, num_groups, height)  # [N_r, s_r]
        # keys of a row group are laid out [s_r, W]
        bias = _key_bias(is_real.unsqueeze(-1).expand([num_groups, s_r, width]), qkv.dtype)
    qkv = qkv.reshape([-1, s_r, num_groups, width, num_heads, head_dim])  # [3B, ...]
    if backend == "sdpa":
        qkv = qkv.transpose([0, 2, 1, 3, 4, 5])  # [3B, N_r, s_r, W, heads, d]
        qkv = qkv.reshape([3, -1, s_r * width, num_heads, head_dim])
        out = _attend(*paddle.unbind(qkv), None, backend)
        out = out.reshape([-1, num_groups, s_r, width, num_heads * head_dim])
        out = out.transpose([0, 2, 1, 3, 4])  # [B, s_r, N_r, W, C']
    else:
        qkv = qkv.transpose([0, 2, 4, 1, 3, 5])  # [3B, N_r, heads, s_r, W, d]
        qkv = qkv.reshape([3, -1, num_groups, num_heads, s_r * width, head_dim])
        out = _attend(*paddle.unbind(qkv), bias, backend)
        out = out.reshape([-1, num_groups, num_heads, s_r, width, head_dim])
        out = out.transpose([0, 3, 1, 4, 2, 5])  # [B, s_r, N_r, W, heads, d]
    out = out.reshape([-1, padded, width, channels])
    return out[:, :height] if padded != height else out


def _column_attention(qkv, num_heads, s_c, backend):
    """Attention within interlaced column groups; ``qkv``: ``[3, B, H, W, C']``."""
    _, _, height, width, channels = qkv.shape
    head_dim = channels // num_heads
    padded = -(-width // s_c) * s_c
    num_groups = padded // s_c  # N_c
    bias = None
    if padded != width:
        qkv = _pad_axis(qkv, 3, padded - width)
        is_real = _real_line_mask(padded, s_c, num_groups, width)  # [N_c, s_c]
        # keys of a column group are laid out [H, s_c]
        bias = _key_bias(is_real.unsqueeze(1).expand([num_groups, height, s_c]), qkv.dtype)
    qkv = qkv.reshape([-1, height, s_c, num_groups, num_heads, head_dim])  # [3B, ...]
    if backend == "sdpa":
        qkv = qkv.transpose([0, 3, 1, 2, 4, 5])  # [3B, N_c, H, s_c, heads, d]
        qkv = qkv.reshape([3, -1, height * s_c, num_heads, head_dim])
        out = _attend(*paddle.unbind(qkv), None, backend)
        out = out.reshape([-1, num_groups, height, s_c, num_heads * head_dim])
        out = out.transpose([0, 2, 3, 1, 4])  # [B, H, s_c, N_c, C']
    else:
        qkv = qkv.transpose([0, 3, 4, 1, 2, 5])  # [3B, N_c, heads, H, s_c, d]
        qkv = qkv.reshape([3, -1, num_groups, num_heads, height * s_c, head_dim])
        out = _attend(*paddle.unbind(qkv), bias, backend)
        out = out.reshape([-1, num_groups, num_heads, height, s_c, head_dim])
        out = out.transpose([0, 3, 4, 1, 2, 5])  # [B, H, s_c, N_c, heads, d]
    out = out.reshape([-1, height, padded, channels])
    return out[:, :, :width] if padded != width else out


def pack_qkv(q, k, v, scale=None):
    """``[B, H, W, C]`` x 3 -> ``(rows, cols)``, each ``[3, B, H, W, C / 2]``: (q, k, v)
    of the channel half that attends within rows and of the half that attends within
    columns; queries times ``scale`` (the attention scale, applied here because q is
    ``L / d`` times smaller than the scores).
    """
    if scale is not None:
        q = q * scale
    # split, not two slices: its gradient is one concat instead of two zero-padded
    # full-size tensors summed
    return tuple(paddle.split(paddle.stack([q, k, v]), 2, axis=-1))


def pale_attention_packed(packed, num_heads, pale_size, backend="matmul"):
    """PS-Attention on packed, pre-scaled projections: the layer's fast path.

    Args:
        packed: ``(rows, cols)``, each ``[3, B, H, W, C / 2]``, see :func:`pack_qkv`;
            queries already multiplied by ``head_dim ** -0.5``.
        num_heads, pale_size: as in :func:`pale_attention`.
        backend: ``"matmul"`` or ``"sdpa"`` (no padding support, see
            :func:`attention_backend`).

    Returns:
        ``[B, H, W, C]``.
    """
    if backend not in ("matmul", "sdpa"):
        raise ValueError(f"backend must be 'matmul' or 'sdpa', got {backend!r}")
    s_r, s_c = to_pale_size(pale_size)
    row_qkv, col_qkv = packed
    height, width = row_qkv.shape[2], row_qkv.shape[3]
    if backend == "sdpa" and (height % s_r or width % s_c):
        raise ValueError(
            f"the sdpa backend takes no mask: H={height}, W={width} must be multiples of "
            f"the pale size ({s_r}, {s_c})")
    rows = _row_attention(row_qkv, num_heads // 2, s_r, backend)
    cols = _column_attention(col_qkv, num_heads // 2, s_c, backend)
    return paddle.concat([rows, cols], axis=-1)


def pale_attention(q, k, v, num_heads, pale_size):
    """Parallel PS-Attention on already projected queries, keys and values.

    Args:
        q, k, v: ``[B, H, W, C]`` tensors (channels last).
        num_heads: total heads, even; ``num_heads / 2`` attend within row groups over
            the first ``C / 2`` channels and ``num_heads / 2`` within column groups over
            the last ``C / 2``. Head dim is ``C / num_heads``, scale ``head_dim ** -0.5``.
        pale_size: ``s`` or ``(s_r, s_c)``. H (W) not divisible by ``s_r`` (``s_c``) is
            padded at the bottom (right); padded keys are masked and the output cropped.

    Returns:
        ``[B, H, W, C]`` tensor: ``concat(Y_r, Y_c)`` of Eq. 3.
    """
    check_attention_inputs(q, k, v, num_heads)
    scale = (q.shape[-1] // num_heads) ** -0.5
    return pale_attention_packed(pack_qkv(q, k, v, scale), num_heads, pale_size)


def pale_attention_macs(height, width, channels, pale_size):
    """Multiply-accumulates of the two attention matmuls (QK^T and AV) per image.

    Counted on the padded sizes that the implementation really computes; for divisible
    sizes this is the ``hwc (s_c h + s_r w)`` term of Eq. 5.
    """
    s_r, s_c = to_pale_size(pale_size)
    padded_h = -(-height // s_r) * s_r
    padded_w = -(-width // s_c) * s_c
    half = channels // 2
    rows = 2 * padded_h * width * (s_r * width) * half
    cols = 2 * height * padded_w * (s_c * height) * half
    return rows + cols
