"""Pale-Shaped self-Attention (PS-Attention), parallel implementation (paper Eq. 1-3).

The channels are split in two halves. The first half attends within row-wise groups,
the second within column-wise groups (Eq. 1):

* row-wise group ``g`` holds the ``s_r`` interlaced rows ``g, g + N_r, g + 2 N_r, ...``
  with ``N_r = H / s_r``;
* column-wise group ``g`` holds the ``s_c`` interlaced columns ``g, g + N_c, ...``
  with ``N_c = W / s_c``.

A row index ``r`` is therefore written as ``r = i * N_r + g`` (``i < s_r``), which is a
plain reshape of the H axis into ``[s_r, N_r]``: grouping costs one reshape and one
transpose per tensor, never a gather or a Python loop over groups. Every transpose is
rank 6 or below (Paddle's rank-7 transpose is a generic element loop, far slower).
Multi-head attention runs within every group (Eq. 2) and the two halves are concatenated
again (Eq. 3). The same grouping with contiguous lines (``r = g * s + i``, a reshape into
``[N, s]``) gives CSWin's stripes, used by the other attention modes of
:mod:`paddle_pale.models.modes`.

H (W) not divisible by ``s_r`` (``s_c``) is padded at the bottom (right); padded keys
get a ``-inf`` score and the output is cropped. Sizes may be Python ints (eager, or an
export with a fixed input size) or graph values (an export with symbolic H and W): the
code only does arithmetic on them and passes them to ops that take tensors as shapes.
"""
import numbers

import paddle
import paddle.nn.functional as F

__all__ = ["pale_attention", "pale_attention_halves", "split_halves", "attention_backend",
           "compute_dtype", "in_backend_dtype", "to_pale_size", "stage_sizes", "check_num_heads",
           "pale_attention_macs", "check_attention_inputs",
           "check_qkv_shapes", "HALF_DTYPES",
           # the grouping the other attention modes (models/modes.py) build on
           "row_attention", "column_attention", "group_rows", "ungroup_rows", "group_columns",
           "ungroup_columns", "attention_scores", "key_bias", "line_bias", "pad_axis",
           "padding_to", "known_zero"]

HALF_DTYPES = (paddle.float16, paddle.bfloat16)


def to_pale_size(pale_size, name="pale_size"):
    """Return ``(s_r, s_c)`` from an int or a pair; raise ValueError otherwise (``name``
    is the argument the message names: ``pale_size``, ``stripe_width``)."""
    if isinstance(pale_size, numbers.Integral) and not isinstance(pale_size, bool):
        pair = (int(pale_size), int(pale_size))
    elif isinstance(pale_size, (tuple, list)) and len(pale_size) == 2 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in pale_size):
        pair = (int(pale_size[0]), int(pale_size[1]))
    else:
        raise ValueError(
            f"{name} must be a positive int or a pair (s_r, s_c) of positive ints, "
            f"got {pale_size!r}")
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {pale_size!r}")
    return pair


def _size_or_none(value, name):
    try:
        return to_pale_size(value, name)
    except ValueError:
        return None


def stage_sizes(value, num_stages=None, name="pale_size"):
    """``[(s_r, s_c), ...]`` one per stage from a size (:func:`to_pale_size`, the same
    for every stage) or a sequence of sizes, one per stage (``num_stages`` of them when
    given); ValueError naming ``name`` otherwise."""
    single = _size_or_none(value, name)
    if single is not None:
        return [single] * (num_stages or 1)
    if isinstance(value, (list, tuple)) and len(value) > 0 and \
            len(value) == (num_stages or len(value)):
        sizes = [_size_or_none(v, name) for v in value]
        if None not in sizes:
            return sizes
    count = f"{num_stages} of those" if num_stages else "a list of those"
    raise ValueError(f"{name} must be a positive int or a pair of positive ints, or "
                     f"{count} (one per stage), got {value!r}")


# Plain Python also under paddle.jit.to_static: converted, the dynamic entries of
# ``q.shape`` become graph values and the list comparison a bool(Value) error.
@paddle.jit.not_to_static
def check_qkv_shapes(q, k, v, function="pale_attention"):
    """Validate that ``q, k, v`` are ``[B, H, W, C]`` tensors of one shape; ``function``
    names the caller in the message."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(
                f"{function} expects {name} of shape [B, H, W, C] (channels last), "
                f"got rank {t.ndim} with shape {list(t.shape)}")
    if list(k.shape) != list(q.shape) or list(v.shape) != list(q.shape):
        raise ValueError(
            f"q, k and v must have the same shape [B, H, W, C], got q {list(q.shape)}, "
            f"k {list(k.shape)}, v {list(v.shape)}")


def check_num_heads(num_heads, channels=None, split=True, mode="pale"):
    """ValueError unless ``num_heads`` is a positive int, even when the heads are
    ``split`` between rows and columns, dividing ``channels`` when given (the one head
    check of every layer and function; ``mode`` names the attention in the message)."""
    if not isinstance(num_heads, numbers.Integral) or isinstance(num_heads, bool) \
            or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if split and num_heads % 2:
        raise ValueError(f"{mode} attention needs an even num_heads (half the heads attend "
                         f"along rows, half along columns), got {num_heads}")
    if channels is not None and channels % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the channels C={channels}")


@paddle.jit.not_to_static
def check_attention_inputs(q, k, v, num_heads):
    """Validate shapes shared by every PS-Attention implementation."""
    check_qkv_shapes(q, k, v)
    check_num_heads(num_heads, q.shape[-1])


def compute_dtype(x):
    """The dtype attention runs in: ``x``'s, or AMP's half type while autocast is on
    (under O1 the inputs may still be float32; flash attention takes only half)."""
    if x.dtype not in HALF_DTYPES and paddle.amp.is_autocast_enabled():
        dtype = paddle.amp.get_autocast_dtype()
        return paddle.float16 if dtype == "float16" else (
            paddle.bfloat16 if dtype == "bfloat16" else x.dtype)
    return x.dtype


def attention_backend(dtype, padded):
    """Which kernel computes the group attention: ``"sdpa"`` or ``"matmul"``.

    Paddle's ``scaled_dot_product_attention`` picks flash attention for half-precision
    inputs on a GPU (and falls back to its own matmuls elsewhere); it is given no mask
    here, so it runs only when no line is padded. The matmul path (QK^T, softmax, AV) is
    the one every exporter and CPU backend understands.
    """
    return "sdpa" if dtype in HALF_DTYPES and not padded else "matmul"


def in_backend_dtype(qkv, backend, dtype):
    """``(q, k, v)`` as ``backend`` takes them: ``sdpa`` in the compute ``dtype`` (AMP's
    half type, see :func:`compute_dtype`; under O1 the projections may still be float32),
    the matmul path as they are."""
    if backend == "sdpa" and qkv[0].dtype != dtype:
        return tuple(t.astype(dtype) for t in qkv)
    return tuple(qkv)


def padding_to(size, multiple):
    """Lines to add so that ``multiple`` divides ``size`` (an int or a graph value)."""
    return (multiple - size % multiple) % multiple


def known_zero(amount):
    """Whether ``amount`` is known, at trace time, to be 0: then nothing is padded,
    masked or cropped. A symbolic amount is treated as possibly non-zero."""
    return isinstance(amount, numbers.Integral) and amount == 0


def pad_axis(t, axis, amount):
    """``t`` with ``amount`` zeros appended along ``axis`` (``amount`` may be symbolic)."""
    shape = [t.shape[i] if i != axis else amount for i in range(t.ndim)]
    return paddle.concat([t, paddle.zeros(shape, t.dtype)], axis=axis)


def line_bias(padded, valid, dtype):
    """``[L]`` additive bias of ``padded`` lines: 0 for the first ``valid`` (real) lines,
    ``-inf`` for the padding after them."""
    is_real = paddle.arange(padded, dtype="int64") < valid
    shape = [padded]  # all three alike: no broadcasting inside where
    return paddle.where(is_real, paddle.zeros(shape, dtype),
                        paddle.full(shape, float("-inf"), dtype))


def key_bias(padded, group_size, num_groups, valid, dtype, contiguous=False):
    """``[N, s]`` additive key bias: 0 where line (group g, slot i) is real, ``-inf``
    where it is padding (index >= ``valid``). The line is ``i * N + g`` for interlaced
    groups, ``g * s + i`` for contiguous ones (stripes)."""
    bias = line_bias(padded, valid, dtype)
    if contiguous:
        return bias.reshape([num_groups, group_size])
    return bias.reshape([group_size, num_groups]).transpose([1, 0])


def _attend(q, k, v, key_bias, backend, query_scale, softmax):
    """Softmax attention.

    ``matmul``: ``[..., heads, L, d]`` tensors, ``key_bias`` (``[..., 1, L, 1]``, 0 or
    ``-inf`` per key) added to every query's score of that key, queries times
    ``query_scale`` first (1 when they come scaled). ``sdpa``: ``[batch, L, heads, d]``,
    no bias, Paddle's default scale.
    """
    if backend == "sdpa":
        # scale left to sdpa (None): Paddle selects flash attention only then
        return F.scaled_dot_product_attention(q, k, v)
    if query_scale != 1.0:
        q = q * query_scale
    return paddle.matmul(softmax(attention_scores(q, k, key_bias), axis=-1), v)


def attention_scores(q, k, key_bias):
    """``q k^T`` plus a per-key bias (``[..., 1, L, 1]``, 0 or ``-inf``) or None."""
    if key_bias is not None:
        # the bias rides in the product, [q, 1] . [k, b] = q . k + b, instead of an add
        # over the L x L scores: Paddle's CPU broadcast add costs as much as the matmul,
        # and oneDNN's fused post-op form of it is slower still
        q = paddle.concat([q, paddle.ones([*q.shape[:-1], 1], q.dtype)], axis=-1)
        k = paddle.concat([k, paddle.expand(key_bias, [*k.shape[:-1], 1])], axis=-1)
    return paddle.matmul(q, k, transpose_y=True)


# Grouping. A row group holds s lines of the (padded) H axis: interlaced (PS-Attention,
# row r = i N + g, a reshape of H into [s, N]) or contiguous (CSWin's stripes, r = g s + i,
# a reshape into [N, s]); columns alike. Reshapes after a transpose copy B with 0, as a -1
# there trips Paddle 3.3.1's oneDNN transpose + reshape fusion
# (operator_reshape_onednn_fuse_pass mis-types the fused op of a fixed-size export).
def group_rows(t, num_heads, group_size, num_groups, contiguous=False):
    """``[B, H', W, heads * d]`` -> ``[B, N, heads, s W, d]``: the tokens of each row
    group together, per head."""
    width, head_dim = t.shape[2], t.shape[3] // num_heads
    if contiguous:  # [B, N, s, W, heads, d] -> [B, N, heads, s, W, d]
        t = t.reshape([0, num_groups, group_size, width, num_heads, head_dim])
        t = t.transpose([0, 1, 4, 2, 3, 5])
    else:  # [B, s, N, W, heads, d] -> [B, N, heads, s, W, d]
        t = t.reshape([0, group_size, num_groups, width, num_heads, head_dim])
        t = t.transpose([0, 2, 4, 1, 3, 5])
    return t.reshape([0, num_groups, num_heads, group_size * width, head_dim])


def ungroup_rows(t, group_size, num_groups, width, padded, contiguous=False):
    """Inverse of :func:`group_rows`: ``[B, N, heads, s W, d]`` -> ``[B, H', W, heads d]``
    (``padded`` = H' = N s)."""
    num_heads, head_dim = t.shape[2], t.shape[4]
    t = t.reshape([0, num_groups, num_heads, group_size, width, head_dim])
    if contiguous:
        t = t.transpose([0, 1, 3, 4, 2, 5])  # [B, N, s, W, heads, d]
    else:
        t = t.transpose([0, 3, 1, 4, 2, 5])  # [B, s, N, W, heads, d]
    return t.reshape([0, padded, width, num_heads * head_dim])


def group_columns(t, num_heads, group_size, num_groups, contiguous=False):
    """``[B, H, W', heads * d]`` -> ``[B, N, heads, H s, d]``."""
    height, head_dim = t.shape[1], t.shape[3] // num_heads
    if contiguous:  # [B, H, N, s, heads, d] -> [B, N, heads, H, s, d]
        t = t.reshape([0, height, num_groups, group_size, num_heads, head_dim])
        t = t.transpose([0, 2, 4, 1, 3, 5])
    else:  # [B, H, s, N, heads, d] -> [B, N, heads, H, s, d]
        t = t.reshape([0, height, group_size, num_groups, num_heads, head_dim])
        t = t.transpose([0, 3, 4, 1, 2, 5])
    return t.reshape([0, num_groups, num_heads, height * group_size, head_dim])


def ungroup_columns(t, group_size, num_groups, height, padded, contiguous=False):
    """Inverse of :func:`group_columns`: ``[B, N, heads, H s, d]`` -> ``[B, H, W', heads d]``
    (``padded`` = W' = N s)."""
    num_heads, head_dim = t.shape[2], t.shape[4]
    t = t.reshape([0, num_groups, num_heads, height, group_size, head_dim])
    if contiguous:
        t = t.transpose([0, 3, 1, 4, 2, 5])  # [B, H, N, s, heads, d]
    else:
        t = t.transpose([0, 3, 4, 1, 2, 5])  # [B, H, s, N, heads, d]
    return t.reshape([0, height, padded, num_heads * head_dim])


def row_attention(q, k, v, num_heads, s_r, backend, query_scale, softmax, contiguous=False):
    """Attention within row groups (interlaced, or contiguous stripes of ``s_r`` rows);
    ``q, k, v``: ``[B, H, W, C']``."""
    height, width, channels = q.shape[1], q.shape[2], q.shape[3]
    head_dim = channels // num_heads
    pad = padding_to(height, s_r)
    padded = height + pad
    num_groups = padded // s_r  # N_r
    bias = None
    if not known_zero(pad):
        q, k, v = (pad_axis(t, 1, pad) for t in (q, k, v))
        # keys of a row group are laid out [s_r, W]: [N_r, s_r] -> [1, N_r, 1, s_r W, 1]
        bias = key_bias(padded, s_r, num_groups, height, q.dtype, contiguous)
        bias = bias.unsqueeze(-1).expand([num_groups, s_r, width])
        bias = bias.reshape([1, num_groups, 1, s_r * width, 1])
    if backend == "sdpa":
        if contiguous:  # row r = g s_r + i: [B, N_r, s_r, W, heads, d], groups in order
            grouped = [t.reshape([-1, s_r * width, num_heads, head_dim]) for t in (q, k, v)]
        else:  # row r = i N_r + g: [B, s_r, N_r, W, heads, d] -> [B, N_r, s_r, W, heads, d]
            grouped = [t.reshape([0, s_r, num_groups, width, num_heads, head_dim])
                       .transpose([0, 2, 1, 3, 4, 5])
                       .reshape([-1, s_r * width, num_heads, head_dim]) for t in (q, k, v)]
        out = _attend(*grouped, None, backend, query_scale, softmax)
        out = out.reshape([-1, num_groups, s_r, width, channels])
        if not contiguous:
            out = out.transpose([0, 2, 1, 3, 4])  # [B, s_r, N_r, W, C']
        out = out.reshape([0, padded, width, channels])
    else:
        grouped = [group_rows(t, num_heads, s_r, num_groups, contiguous) for t in (q, k, v)]
        out = _attend(*grouped, bias, backend, query_scale, softmax)
        out = ungroup_rows(out, s_r, num_groups, width, padded, contiguous)
    return out if known_zero(pad) else out[:, :height]


def column_attention(q, k, v, num_heads, s_c, backend, query_scale, softmax,
                      contiguous=False):
    """Attention within column groups (interlaced, or contiguous stripes of ``s_c``
    columns); ``q, k, v``: ``[B, H, W, C']``."""
    height, width, channels = q.shape[1], q.shape[2], q.shape[3]
    head_dim = channels // num_heads
    pad = padding_to(width, s_c)
    padded = width + pad
    num_groups = padded // s_c  # N_c
    bias = None
    if not known_zero(pad):
        q, k, v = (pad_axis(t, 2, pad) for t in (q, k, v))
        # keys of a column group are laid out [H, s_c]: -> [1, N_c, 1, H s_c, 1]
        bias = key_bias(padded, s_c, num_groups, width, q.dtype, contiguous)
        bias = bias.unsqueeze(1).expand([num_groups, height, s_c])
        bias = bias.reshape([1, num_groups, 1, height * s_c, 1])
    if backend == "sdpa":
        # column c = j N_c + g: [B, H, s_c, N_c, ...]; contiguous c = g s_c + j: [B, H, N_c, s_c]
        order = [0, 2, 1, 3, 4, 5] if contiguous else [0, 3, 1, 2, 4, 5]
        split = [num_groups, s_c] if contiguous else [s_c, num_groups]
        grouped = [t.reshape([0, height, *split, num_heads, head_dim])
                   .transpose(order)  # [B, N_c, H, s_c, heads, d]
                   .reshape([-1, height * s_c, num_heads, head_dim]) for t in (q, k, v)]
        out = _attend(*grouped, None, backend, query_scale, softmax)
        out = out.reshape([-1, num_groups, height, s_c, channels])
        # back to [B, H, N_c, s_c, C'] (contiguous) or [B, H, s_c, N_c, C']
        out = out.transpose([0, 2, 1, 3, 4] if contiguous else [0, 2, 3, 1, 4])
        out = out.reshape([0, height, padded, channels])
    else:
        grouped = [group_columns(t, num_heads, s_c, num_groups, contiguous)
                   for t in (q, k, v)]
        out = _attend(*grouped, bias, backend, query_scale, softmax)
        out = ungroup_columns(out, s_c, num_groups, height, padded, contiguous)
    return out if known_zero(pad) else out[:, :, :width]


def split_halves(q, k, v):
    """``[B, H, W, C]`` x 3 -> ``(rows, cols)``: ``(q, k, v)`` of the channel half that
    attends within rows, and of the half that attends within columns (Eq. 1)."""
    # split, not two slices: its gradient is one concat instead of two zero-padded
    # full-size tensors summed
    halves = [paddle.split(t, 2, axis=-1) for t in (q, k, v)]
    return tuple(half[0] for half in halves), tuple(half[1] for half in halves)


def pale_attention_halves(rows, cols, num_heads, pale_size, backend="matmul",
                          query_scale=None, softmax=None, contiguous=False):
    """PS-Attention (Eq. 1-3) on the channel halves of the projections.

    Args:
        rows, cols: ``(q, k, v)`` of each half, ``[B, H, W, C / 2]`` each, see
            :func:`split_halves`.
        num_heads, pale_size: as in :func:`pale_attention`.
        backend: ``"matmul"`` or ``"sdpa"`` (no padding, see :func:`attention_backend`).
        query_scale: factor the queries still need before ``QK^T`` (default
            ``head_dim ** -0.5``; 1.0 when they come scaled). ``sdpa`` scales by itself.
        softmax: the softmax of the matmul path (default ``F.softmax``; a kernel may
            pass an in-place one).
        contiguous: groups of ``s_r`` adjacent rows and ``s_c`` adjacent columns
            (CSWin's cross-shaped stripes) instead of interlaced ones.

    Returns:
        ``[B, H, W, C]``: ``concat(Y_r, Y_c)`` of Eq. 3.
    """
    if backend not in ("matmul", "sdpa"):
        raise ValueError(f"backend must be 'matmul' or 'sdpa', got {backend!r}")
    softmax = softmax or F.softmax
    s_r, s_c = to_pale_size(pale_size)
    head_dim = rows[0].shape[-1] // (num_heads // 2)
    if query_scale is None:
        query_scale = head_dim ** -0.5
    if backend == "sdpa":
        height, width = rows[0].shape[1], rows[0].shape[2]
        if not (known_zero(padding_to(height, s_r)) and known_zero(padding_to(width, s_c))):
            raise ValueError(
                f"the sdpa backend takes no mask: H={height}, W={width} must be known "
                f"multiples of the pale size ({s_r}, {s_c})")
        if query_scale != head_dim ** -0.5:
            raise ValueError("the sdpa backend scales queries by head_dim ** -0.5 itself")
    out_rows = row_attention(*rows, num_heads // 2, s_r, backend, query_scale, softmax,
                              contiguous)
    out_cols = column_attention(*cols, num_heads // 2, s_c, backend, query_scale, softmax,
                                 contiguous)
    return paddle.concat([out_rows, out_cols], axis=-1)


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
        ``[B, H, W, C]`` tensor: ``concat(Y_r, Y_c)`` of Eq. 3. In half precision (or
        under AMP autocast) and without padding, the group attention runs through
        Paddle's ``scaled_dot_product_attention`` (flash attention on GPUs).
    """
    check_attention_inputs(q, k, v, num_heads)
    s_r, s_c = to_pale_size(pale_size)
    dtype = compute_dtype(q)
    padded = not (known_zero(padding_to(q.shape[1], s_r))
                  and known_zero(padding_to(q.shape[2], s_c)))
    backend = attention_backend(dtype, padded)
    q, k, v = in_backend_dtype((q, k, v), backend, dtype)
    return pale_attention_halves(*split_halves(q, k, v), num_heads, (s_r, s_c), backend)


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
