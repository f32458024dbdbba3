"""Naive attention: global attention over all H*W tokens under a membership mask.

It shares no code with :mod:`paddle_pale.models.attention` (no grouping reshapes, no
padding): a token ``(i, j)`` may attend to ``(i', j')`` in the row half iff
``i' = i (mod ceil(H / s_r))`` and in the column half iff ``j' = j (mod ceil(W / s_c))``,
which is the group definition of the paper with padded lines left out.
:func:`mode_masks` gives the region of every attention mode the same way, from the
mode's own definition (each registered mode's ``reference_masks``). It costs ``O((HW)^2)``
memory: a test oracle, a benchmark peer and what the region pictures draw, not a layer
to train with.
"""
import math

import numpy as np
import paddle
import paddle.nn.functional as F

from .modes import get_mode

__all__ = ["naive_pale_attention", "pale_membership_mask", "mode_masks",
           "naive_mode_attention"]



def pale_membership_mask(height, width, pale_size):
    """``(row_mask, col_mask)``: ``[HW, HW]`` bool arrays, True where attention is allowed."""
    s_r, s_c = (pale_size, pale_size) if isinstance(pale_size, int) else pale_size
    num_row_groups = math.ceil(height / s_r)
    num_col_groups = math.ceil(width / s_c)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    row_mask = (rows[:, None] % num_row_groups) == (rows[None, :] % num_row_groups)
    col_mask = (cols[:, None] % num_col_groups) == (cols[None, :] % num_col_groups)
    return row_mask, col_mask


def _masked_attention(q, k, v, num_heads, mask):
    """q, k, v: [B, HW, C']; mask: [HW, HW] bool."""
    batch, tokens, channels = q.shape
    head_dim = channels // num_heads

    def heads(t):
        return t.reshape([batch, tokens, num_heads, head_dim]).transpose([0, 2, 1, 3])

    scores = paddle.matmul(heads(q), heads(k), transpose_y=True) * head_dim ** -0.5
    bias = paddle.to_tensor(np.where(mask, 0.0, -np.inf).astype("float32")).astype(q.dtype)
    out = paddle.matmul(F.softmax(scores + bias, axis=-1), heads(v))
    return out.transpose([0, 2, 1, 3]).reshape([batch, tokens, channels])


def naive_pale_attention(q, k, v, num_heads, pale_size):
    """Same contract as :func:`paddle_pale.pale_attention`; ``[B, H, W, C]`` in and out."""
    batch, height, width, channels = q.shape
    half = channels // 2
    row_mask, col_mask = pale_membership_mask(height, width, pale_size)
    flat = [t.reshape([batch, height * width, channels]) for t in (q, k, v)]
    rows = _masked_attention(*(t[..., :half] for t in flat), num_heads // 2, row_mask)
    cols = _masked_attention(*(t[..., half:] for t in flat), num_heads // 2, col_mask)
    return paddle.concat([rows, cols], axis=-1).reshape([batch, height, width, channels])


def mode_masks(mode, height, width, size=None, block_index=0):
    """The region of ``mode`` as ``[HW, HW]`` bool arrays (query x key, row-major
    tokens), True where a query may attend to a key: ``(rows_half, columns_half)`` for
    the modes that split heads (``pale``, ``cross_shaped``, ``axial``), ``(all_heads,)``
    for ``pale_sequential`` and ``pale_vanilla``.

    Each mode writes its mask from its definition
    (:meth:`~paddle_pale.models.modes.AttentionMode.reference_masks`: tokens ``(r, c)``,
    ``N_r = ceil(H / s_r)``, ``N_c = ceil(W / s_c)``, padded keys are not tokens), with
    none of the grouping code it is checked against:

    * ``pale``: ``r' = r (mod N_r)`` | ``c' = c (mod N_c)``;
    * ``pale_sequential``: ``r' = r (mod N_r)`` in even blocks, ``c' = c (mod N_c)`` in
      odd ones;
    * ``pale_vanilla``: ``r' = r (mod N_r)`` or ``c' = c (mod N_c)``;
    * ``cross_shaped`` (``size`` = stripe width ``w``): ``r' // w = r // w`` |
      ``c' // w = c // w``;
    * ``axial``: ``r' = r`` | ``c' = c``.
    """
    spec = get_mode(mode)
    return spec.reference_masks(height, width, spec.region(size), block_index)


def naive_mode_attention(q, k, v, num_heads, mode, size=None, block_index=0):
    """Same contract as :func:`paddle_pale.mode_attention`: each channel part (the two
    halves, or all channels) attends with its heads under its mask of :func:`mode_masks`."""
    batch, height, width, channels = q.shape
    masks = mode_masks(mode, height, width, size, block_index)
    part, heads = channels // len(masks), num_heads // len(masks)
    flat = [t.reshape([batch, height * width, channels]) for t in (q, k, v)]
    outs = [_masked_attention(*(t[..., i * part:(i + 1) * part] for t in flat), heads, mask)
            for i, mask in enumerate(masks)]
    return paddle.concat(outs, axis=-1).reshape([batch, height, width, channels])
