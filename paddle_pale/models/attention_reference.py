"""Naive PS-Attention: global attention over all H*W tokens with a membership mask.

It shares no code with :mod:`paddle_pale.models.attention` (no grouping reshapes, no
padding): a token ``(i, j)`` may attend to ``(i', j')`` in the row half iff
``i' = i (mod ceil(H / s_r))`` and in the column half iff ``j' = j (mod ceil(W / s_c))``,
which is the group definition of the paper with padded lines left out. It costs
``O((HW)^2)`` memory: a test oracle and a benchmark peer, not a layer to train with.
"""
import math

import numpy as np
import paddle
import paddle.nn.functional as F

__all__ = ["naive_pale_attention", "pale_membership_mask"]


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
