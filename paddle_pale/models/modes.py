"""Attention modes of the paper's ablation (Table 6), on projected ``[B, H, W, C]`` tensors.

Every mode takes the same Q, K and V; only the region a query attends to differs. For a
token at row ``r``, column ``c`` of the map padded to multiples of the size (padded keys
masked, the output cropped), ``N_r = H' / s_r`` and ``N_c = W' / s_c``:

* ``pale`` (the paper's parallel PS-Attention, :func:`~.attention.pale_attention`): the
  first half of the heads (and channels) attends to keys with ``r' = r (mod N_r)``, the
  second half to ``c' = c (mod N_c)``;
* ``pale_sequential``: all heads to ``r' = r (mod N_r)`` in even blocks and to
  ``c' = c (mod N_c)`` in odd blocks (the block index counts the blocks of a stage from 0);
* ``pale_vanilla``: all heads to the whole pale of the query's row and column groups,
  ``r' = r (mod N_r)`` or ``c' = c (mod N_c)``;
* ``cross_shaped`` (CSWin) with stripe width ``w``: first half ``floor(r' / w) =
  floor(r / w)`` (a stripe of ``w`` adjacent rows), second half ``floor(c' / w) =
  floor(c / w)``;
* ``axial``: first half ``r' = r``, second half ``c' = c`` (interlaced groups of one line).

The split modes reuse the grouping of :mod:`.attention` (``cross_shaped`` with contiguous
groups, ``axial`` with groups of one line); ``pale_sequential`` runs one of its two
directions over all channels. ``pale_vanilla`` is :func:`_vanilla_attention`: the row
groups and the column groups are attended in their own layouts and the two score sets of
a query are joined in one softmax (a shared maximum, one normalizer), the row-and-column
intersection masked in the column part so that it is counted once.
"""
import numbers

import paddle

from .attention import (_column_attention, _group_columns, _group_rows, _key_bias,
                        _known_zero, _line_bias, _pad_axis, _padding, _row_attention, _scores,
                        _ungroup_columns, _ungroup_rows, attention_backend,
                        check_qkv_shapes, compute_dtype, pale_attention,
                        pale_attention_halves, pale_attention_macs, split_halves,
                        to_pale_size)

__all__ = ["MODES", "SPLIT_MODES", "DEFAULT_MODE", "check_mode", "region_size",
           "mode_attention", "mode_attention_projected", "mode_attention_macs",
           "check_mode_inputs", "check_heads"]

MODES = ("pale", "pale_sequential", "pale_vanilla", "cross_shaped", "axial")
DEFAULT_MODE = "pale"
# modes whose first half of heads attends along rows and second half along columns
SPLIT_MODES = ("pale", "cross_shaped", "axial")


def check_mode(mode):
    """``mode`` if it is one of :data:`MODES`; ValueError listing them otherwise."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"attention_mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def region_size(mode, size):
    """The ``(rows, columns)`` line counts of ``mode``'s groups: the pale size
    ``(s_r, s_c)`` for the pale modes, the stripe width ``(w, w)`` for ``cross_shaped``
    (a pair gives rows and columns their own width), ``(1, 1)`` for ``axial`` (``size``
    ignored)."""
    check_mode(mode)
    if mode == "axial":
        return (1, 1)
    what = "stripe_width" if mode == "cross_shaped" else "pale_size"
    try:
        return to_pale_size(size)
    except ValueError:
        raise ValueError(f"{mode} needs {what} as a positive int or a pair of positive ints, "
                         f"got {size!r}") from None


def check_heads(mode, num_heads, dim=None):
    """ValueError unless ``num_heads`` suits ``mode`` (and divides ``dim`` if given)."""
    if not isinstance(num_heads, numbers.Integral) or isinstance(num_heads, bool) \
            or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if mode in SPLIT_MODES and num_heads % 2:
        raise ValueError(f"{mode} attention needs an even num_heads (half the heads attend "
                         f"along rows, half along columns), got {num_heads}")
    if dim is not None and dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the channels C={dim}")


# Plain Python also under paddle.jit.to_static (see check_attention_inputs)
@paddle.jit.not_to_static
def check_mode_inputs(q, k, v, num_heads, mode):
    """Validate the shapes of ``mode_attention``'s inputs."""
    check_qkv_shapes(q, k, v, "mode_attention")
    check_heads(mode, num_heads, q.shape[-1])


def _check_block_index(block_index):
    if not isinstance(block_index, numbers.Integral) or isinstance(block_index, bool) \
            or block_index < 0:
        raise ValueError(f"block_index must be an int >= 0, got {block_index!r}")


def _sequential_rows(block_index):
    """``pale_sequential`` attends within row groups in even blocks, columns in odd."""
    return block_index % 2 == 0


def _is_padded(mode, height, width, region, block_index):
    """Whether ``mode`` pads a line at (H, W): then it needs a mask (no sdpa)."""
    rows = not _known_zero(_padding(height, region[0]))
    cols = not _known_zero(_padding(width, region[1]))
    if mode == "pale_sequential":
        return rows if _sequential_rows(block_index) else cols
    return rows or cols


def _backend(mode, dtype, height, width, region, block_index):
    if mode == "pale_vanilla":
        return "matmul"  # the joined softmax of the two parts is written out
    return attention_backend(dtype, _is_padded(mode, height, width, region, block_index))


def mode_attention(q, k, v, num_heads, mode, size=None, block_index=0):
    """Attention of ``mode`` on already projected queries, keys and values.

    Args:
        q, k, v: ``[B, H, W, C]`` tensors (channels last).
        num_heads: total heads (even for ``pale``, ``cross_shaped`` and ``axial``, which
            give half of them to rows and half to columns); head dim ``C / num_heads``,
            scale ``head_dim ** -0.5``.
        mode: one of :data:`MODES` (see the module docstring for each region).
        size: the pale size ``s`` or ``(s_r, s_c)`` for the pale modes, the stripe
            width ``w`` (or ``(w_r, w_c)``) for ``cross_shaped``; ignored by ``axial``.
        block_index: index of the block within its stage; ``pale_sequential`` attends
            along rows in even blocks and along columns in odd ones.

    Returns:
        ``[B, H, W, C]``. Any H and W: lines are padded to multiples of the size, padded
        keys masked and the output cropped. ``mode="pale"`` is
        :func:`~.attention.pale_attention`, unchanged.
    """
    check_mode(mode)
    _check_block_index(block_index)
    region = region_size(mode, size)
    check_mode_inputs(q, k, v, num_heads, mode)
    if mode == "pale":
        return pale_attention(q, k, v, num_heads, region)
    dtype = compute_dtype(q)
    backend = _backend(mode, dtype, q.shape[1], q.shape[2], region, block_index)
    if backend == "sdpa" and q.dtype != dtype:
        q, k, v = (t.astype(dtype) for t in (q, k, v))
    return mode_attention_projected((q, k, v), num_heads, mode, region, block_index, backend)


def mode_attention_projected(qkv, num_heads, mode, region, block_index=0, backend="matmul",
                             query_scale=None, softmax=None, halves=None, inplace=False):
    """The attention of ``mode`` without input checks, for layers and kernels.

    Args:
        qkv: ``(q, k, v)``, ``[B, H, W, C]`` each; None when ``halves`` are given.
        num_heads, mode, block_index: as in :func:`mode_attention`.
        region: ``(rows, columns)`` from :func:`region_size`.
        backend: ``"matmul"`` or ``"sdpa"`` (not for ``pale_vanilla`` or padding).
        query_scale: factor the queries still need (default ``head_dim ** -0.5``; 1.0
            when they come scaled).
        softmax: the softmax of the matmul path (default ``F.softmax``).
        halves: ``(rows, cols)`` channel halves of a split mode (see
            :func:`~.attention.split_halves`), when the caller made them itself.
        inplace: ``pale_vanilla`` updates its score tensors in place (masking,
            shifting, ``exp``) instead of writing new ones (a kernel's choice, as an
            in-place softmax is for the other modes).
    """
    if mode in SPLIT_MODES:
        if halves is None:
            halves = split_halves(*qkv)
        return pale_attention_halves(*halves, num_heads, region, backend, query_scale,
                                     softmax, contiguous=mode == "cross_shaped")
    q, k, v = qkv
    head_dim = q.shape[-1] // num_heads
    if query_scale is None:
        query_scale = head_dim ** -0.5
    if mode == "pale_vanilla":
        if backend != "matmul":
            raise ValueError("pale_vanilla runs on the matmul backend only")
        return _vanilla_attention(q, k, v, num_heads, region, query_scale, inplace)
    softmax = softmax or paddle.nn.functional.softmax
    if _sequential_rows(block_index):
        return _row_attention(q, k, v, num_heads, region[0], backend, query_scale, softmax)
    return _column_attention(q, k, v, num_heads, region[1], backend, query_scale, softmax)


def _vanilla_attention(q, k, v, num_heads, region, query_scale, inplace=False):
    """All heads attend to the whole pale of their row group g_r and column group g_c
    (``s_r W + s_c H - s_r s_c`` tokens), batched over the groups.

    The row part is attention within row groups (``[B, N_r, heads, s_r W', s_r W']``
    scores), the column part within column groups (``[B, N_c, heads, H' s_c, H' s_c]``),
    each in its own layout as in PS-Attention, so no key is copied per group pair. A
    query's pale is the union of the keys of both parts: one softmax over both, written
    out as a shared maximum ``m`` and one normalizer (``exp(s - m)`` summed over both
    parts, computed by the value matmul from a ones column of V). The ``s_r s_c`` keys
    that lie in both (rows of g_r and columns of g_c) are masked in the column part, so
    every key of the pale counts once. Memory: ``HW (s_r W + s_c H)`` scores per head,
    never ``(HW)^2``.
    """
    s_r, s_c = region
    height, width, channels = q.shape[1], q.shape[2], q.shape[3]
    head_dim = channels // num_heads
    pad_h, pad_w = _padding(height, s_r), _padding(width, s_c)
    padded_h, padded_w = height + pad_h, width + pad_w
    rows_padded, cols_padded = not _known_zero(pad_h), not _known_zero(pad_w)
    if rows_padded:
        q, k, v = (_pad_axis(t, 1, pad_h) for t in (q, k, v))
    if cols_padded:
        q, k, v = (_pad_axis(t, 2, pad_w) for t in (q, k, v))
    num_row_groups, num_col_groups = padded_h // s_r, padded_w // s_c  # N_r, N_c
    dtype = q.dtype
    if query_scale != 1.0:
        q = q * query_scale

    # key biases: a key is real when both its row and its column are
    row_bias = col_bias = None
    if rows_padded or cols_padded:
        # row part, keys laid out [s_r, W'] per group: [N_r, s_r, 1] + [1, 1, W']
        row_bias = (_key_bias(padded_h, s_r, num_row_groups, height, dtype).unsqueeze(-1)
                    + _line_bias(padded_w, width, dtype).reshape([1, 1, padded_w]))
        row_bias = row_bias.reshape([1, num_row_groups, 1, s_r * padded_w, 1])
        # column part, keys laid out [H', s_c] per group: [N_c, 1, s_c] + [1, H', 1]
        col_bias = (_key_bias(padded_w, s_c, num_col_groups, width, dtype).unsqueeze(1)
                    + _line_bias(padded_h, height, dtype).reshape([1, padded_h, 1]))
        col_bias = col_bias.reshape([1, num_col_groups, 1, padded_h * s_c, 1])
    # the intersection, masked in the column part: query row r and key row r' of one row
    # group (r = r' mod N_r); [H' s_c, H' s_c], the same for every column group and head
    row_group = paddle.arange(padded_h, dtype="int64") % num_row_groups
    same = (row_group.unsqueeze(1) == row_group.unsqueeze(0)).unsqueeze(1).unsqueeze(-1)
    same = same.expand([padded_h, s_c, padded_h, s_c]).reshape(
        [padded_h * s_c, padded_h * s_c])
    intersection = paddle.where(same, paddle.full_like(same, float("-inf"), dtype),
                                paddle.zeros_like(same, dtype))

    def rows(t):
        return _group_rows(t, num_heads, s_r, num_row_groups)  # [B, N_r, heads, s_r W', d]

    def cols(t):
        return _group_columns(t, num_heads, s_c, num_col_groups)  # [B, N_c, heads, H' s_c, d]

    row_scores = _scores(rows(q), rows(k), row_bias)
    col_scores = _scores(cols(q), cols(k), col_bias)
    col_scores = col_scores.add_(intersection) if inplace else col_scores + intersection

    # one maximum per query and head over both parts, [B, H', W', heads]; every row
    # group holds a real row, so the row part (and m) is finite for every query
    def from_rows(t):
        return _ungroup_rows(t, s_r, num_row_groups, padded_w, padded_h)

    def from_cols(t):
        return _ungroup_columns(t, s_c, num_col_groups, padded_h, padded_w)
    maximum = paddle.maximum(from_rows(row_scores.max(axis=-1, keepdim=True)),
                             from_cols(col_scores.max(axis=-1, keepdim=True))).detach()
    if inplace:  # the maximum is detached: nothing needs the scores before the shift
        row_weights = row_scores.subtract_(rows(maximum)).exp_()
        col_weights = col_scores.subtract_(cols(maximum)).exp_()
    else:
        row_weights = paddle.exp(row_scores - rows(maximum))
        col_weights = paddle.exp(col_scores - cols(maximum))

    # values with a ones column: the product sums exp(s - m) v and exp(s - m) at once
    def with_ones(t):
        return paddle.concat([t, paddle.ones([*t.shape[:-1], 1], t.dtype)], axis=-1)
    total = (from_rows(paddle.matmul(row_weights, with_ones(rows(v))))
             + from_cols(paddle.matmul(col_weights, with_ones(cols(v)))))
    total = total.reshape([0, padded_h, padded_w, num_heads, head_dim + 1])
    out = (total[..., :head_dim] / total[..., head_dim:]).reshape(
        [0, padded_h, padded_w, channels])
    if rows_padded:
        out = out[:, :height]
    if cols_padded:
        out = out[:, :, :width]
    return out


def mode_attention_macs(mode, height, width, channels, size=None, block_index=0):
    """Multiply-accumulates of the attention matmuls (QK^T and AV) of one image.

    Counted on what the implementation computes: padded lines as keys (masked) and, for
    ``pale_vanilla``, the ``s_r s_c`` keys of the row-column intersection in both parts
    (masked once). For sizes the region divides: ``pale``, ``cross_shaped`` (``s = w``)
    and ``axial`` (``s = 1``) ``hwc (s_c h + s_r w)``, ``pale_sequential``
    ``2 hwc s_r w`` (rows) or ``2 hwc s_c h`` (columns), ``pale_vanilla``
    ``2 hwc (s_r w + s_c h)``.
    """
    region = region_size(mode, size)
    if mode in SPLIT_MODES:
        return pale_attention_macs(height, width, channels, region)
    s_r, s_c = region
    padded_h = -(-height // s_r) * s_r
    padded_w = -(-width // s_c) * s_c
    if mode == "pale_vanilla":
        return 2 * padded_h * padded_w * (s_r * padded_w + s_c * padded_h) * channels
    if _sequential_rows(block_index):
        return 2 * padded_h * width * (s_r * width) * channels
    return 2 * height * padded_w * (s_c * height) * channels

