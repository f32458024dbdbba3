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

Each mode is one :class:`AttentionMode` in one registry (:data:`MODES`): its name, the
layer argument that sets its region (``size_arg``), its region, its reference mask (the
definition above, written out in numpy for the tests, the pictures and the FLOPs
check), its compute path, its MAC count and its head rule. The model, the CPU kernels,
the config rules, the ablation, the pictures and the benchmark ask the registry;
:func:`register_mode` adds a mode without touching them.

The split modes reuse the grouping of :mod:`.attention` (``cross_shaped`` with contiguous
groups, ``axial`` with groups of one line); ``pale_sequential`` runs one of its two
directions over all channels. ``pale_vanilla`` is :func:`_vanilla_attention`: the row
groups and the column groups are attended in their own layouts and the two score sets of
a query are joined in one softmax (a shared maximum, one normalizer), the row-and-column
intersection masked in the column part so that it is counted once.
"""
import abc
import math
import numbers

import numpy as np
import paddle

from .attention import (attention_backend, attention_scores, check_num_heads, check_qkv_shapes,
                        column_attention, compute_dtype, group_columns, group_rows,
                        in_backend_dtype, key_bias, known_zero, line_bias, pad_axis,
                        padding_to, pale_attention, pale_attention_halves, pale_attention_macs,
                        row_attention, split_halves, to_pale_size, ungroup_columns,
                        ungroup_rows)

__all__ = ["AttentionMode", "MODES", "DEFAULT_MODE", "register_mode", "unregister_mode",
           "get_mode", "check_mode", "region_size", "mode_attention", "mode_attention_projected",
           "mode_attention_macs", "check_mode_inputs", "check_heads", "check_block_index"]

DEFAULT_MODE = "pale"


class ModeRegistry:
    """The registered :class:`AttentionMode` objects by name, in registration order;
    iterating yields the names (``list(MODES)``, ``name in MODES``, argparse choices)."""

    def __init__(self):
        self._modes = {}

    def __iter__(self):
        return iter(tuple(self._modes))

    def __contains__(self, name):
        return isinstance(name, str) and name in self._modes

    def __len__(self):
        return len(self._modes)

    def __getitem__(self, name):
        return self._modes[name]

    def __repr__(self):
        return repr(tuple(self._modes))

    def add(self, mode):
        if not isinstance(mode, AttentionMode) or not isinstance(mode.name, str) \
                or not mode.name:
            raise ValueError(f"an attention mode is an AttentionMode with a name, got {mode!r}")
        if mode.name in self._modes:
            raise ValueError(f"attention mode {mode.name!r} is already registered")
        self._modes[mode.name] = mode
        return mode

    def remove(self, name):
        del self._modes[check_mode(name)]


MODES = ModeRegistry()


def check_mode(mode):
    """``mode`` if it names a registered mode; ValueError listing them otherwise."""
    if mode not in MODES:
        raise ValueError(f"attention_mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def get_mode(mode):
    """The :class:`AttentionMode` called ``mode`` (or ``mode`` itself if it is one)."""
    if isinstance(mode, AttentionMode):
        return mode
    return MODES[check_mode(mode)]


def register_mode(mode):
    """Add ``mode`` (an :class:`AttentionMode` instance) to :data:`MODES`; returns it."""
    return MODES.add(mode)


def unregister_mode(name):
    """Remove the mode called ``name`` from :data:`MODES`."""
    MODES.remove(name)


def check_block_index(block_index):
    """ValueError unless ``block_index`` is an int >= 0 (a bool is not)."""
    if not isinstance(block_index, numbers.Integral) or isinstance(block_index, bool) \
            or block_index < 0:
        raise ValueError(f"block_index must be an int >= 0, got {block_index!r}")
    return int(block_index)


def _token_lines(height, width):
    """Row and column index of every token, row-major: two ``[HW]`` arrays."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return rows.reshape(-1), cols.reshape(-1)


def _same(lines, key):
    """``[HW, HW]`` bool: query and key tokens whose ``key(line)`` agree."""
    return key(lines)[:, None] == key(lines)[None, :]


def _interlaced_masks(height, width, region):
    """``(rows, cols)`` masks of interlaced groups: ``r' = r (mod N_r)``,
    ``c' = c (mod N_c)``, ``N_r = ceil(H / s_r)``, ``N_c = ceil(W / s_c)``."""
    rows, cols = _token_lines(height, width)
    num_row_groups, num_col_groups = math.ceil(height / region[0]), math.ceil(width / region[1])
    return (_same(rows, lambda r: r % num_row_groups),
            _same(cols, lambda c: c % num_col_groups))


class AttentionMode(abc.ABC):
    """One attention region of the ablation (Table 6), everything about it in one place.

    Subclass, set the class attributes, implement :meth:`reference_masks` and
    :meth:`compute` (and :meth:`macs` unless the default count fits), then
    :func:`register_mode` an instance.

    Attributes:
        name: the ``attention_mode`` string of configs and ``create_model``.
        split: the first half of the heads (and channels) attends along rows, the second
            along columns; needs an even ``num_heads``.
        size_arg: the layer argument that sets the region: ``"pale_size"``,
            ``"stripe_width"``, or None (a fixed region, :attr:`fixed_region`).
        uses_block_index: the region alternates with the block's index in its stage.
        always_masks: the compute path writes its softmax out (matmul backend only).
    """
    name = None
    split = True
    size_arg = "pale_size"
    fixed_region = None
    uses_block_index = False
    always_masks = False

    def __repr__(self):
        return f"<attention mode {self.name}>"

    # -- region
    def region(self, size):
        """``(rows, columns)`` lines per group from the size argument ``size``."""
        if self.size_arg is None:
            return self.fixed_region
        try:
            return to_pale_size(size)
        except ValueError:
            raise ValueError(f"{self.name} needs {self.size_arg} as a positive int or a pair "
                             f"of positive ints, got {size!r}") from None

    def layer_size(self, pale_size, stripe_width):
        """Which of a layer's size arguments is this mode's (see :attr:`size_arg`)."""
        return {"pale_size": pale_size, "stripe_width": stripe_width}.get(self.size_arg)

    def head_groups(self, num_heads):
        """``[(label, head indices)]``: the heads that share one region."""
        if self.split:
            half = num_heads // 2
            return [("rows (first half of heads)", list(range(half))),
                    ("columns (second half)", list(range(half, num_heads)))]
        return [("all heads", list(range(num_heads)))]

    def panels(self, pale_size, stripe_width):
        """The region pictures of ``tools/visualize.py``: ``[(title, size, block_index)]``."""
        return [(self.name, self.layer_size(pale_size, stripe_width), 0)]

    # -- reference
    @abc.abstractmethod
    def reference_masks(self, height, width, region, block_index=0):
        """The region as ``[HW, HW]`` bool arrays (query x key, row-major tokens), True
        where a query may attend to a key, from the definition (no grouping code, padded
        lines are not tokens): ``(rows_half, columns_half)`` for a split mode,
        ``(all_heads,)`` otherwise."""

    # -- compute
    def is_padded(self, height, width, region, block_index=0):
        """Whether lines are padded at (H, W): then a mask is needed (no sdpa)."""
        return not (known_zero(padding_to(height, region[0]))
                    and known_zero(padding_to(width, region[1])))

    def backend(self, dtype, height, width, region, block_index=0):
        if self.always_masks:
            return "matmul"
        return attention_backend(dtype, self.is_padded(height, width, region, block_index))

    def plan(self, x, region, block_index=0):
        """``(backend, dtype)`` for ``[B, H, W, C]`` inputs like ``x``: the kernel
        (:meth:`backend`) and the dtype it computes in (AMP's half type under autocast)."""
        dtype = compute_dtype(x)
        return self.backend(dtype, x.shape[1], x.shape[2], region, block_index), dtype

    def attend(self, q, k, v, num_heads, region, block_index=0):
        """The checked entry of :func:`mode_attention`: picks the backend and computes."""
        backend, dtype = self.plan(q, region, block_index)
        return self.compute(in_backend_dtype((q, k, v), backend, dtype), num_heads, region,
                            block_index, backend)

    @abc.abstractmethod
    def compute(self, qkv, num_heads, region, block_index=0, backend="matmul",
                query_scale=None, softmax=None, halves=None, inplace=False):
        """The attention without input checks; arguments as in
        :func:`mode_attention_projected`."""

    # -- cost
    def macs(self, height, width, channels, region, block_index=0):
        """Multiply-accumulates of QK^T and AV per image, on what is computed (padded
        lines count as masked keys). Default: the split modes' ``hwc (s_c h + s_r w)``."""
        return pale_attention_macs(height, width, channels, region)

    def score_elements(self, batch, num_heads, height, width, region, block_index=0):
        """Elements of the largest score tensor the compute path builds."""
        s_r, s_c = region
        heads = num_heads // 2 if self.split else num_heads
        padded_h, padded_w = -(-height // s_r) * s_r, -(-width // s_c) * s_c
        rows = batch * heads * (padded_h // s_r) * (s_r * width) ** 2
        cols = batch * heads * (padded_w // s_c) * (s_c * height) ** 2
        return max(rows, cols)


class _SplitMode(AttentionMode):
    """Rows in the first half of the heads, columns in the second (Eq. 1-3)."""
    contiguous = False

    def compute(self, qkv, num_heads, region, block_index=0, backend="matmul",
                query_scale=None, softmax=None, halves=None, inplace=False):
        if halves is None:
            halves = split_halves(*qkv)
        return pale_attention_halves(*halves, num_heads, region, backend, query_scale,
                                     softmax, contiguous=self.contiguous)


class PaleMode(_SplitMode):
    """The paper's parallel PS-Attention: :func:`~.attention.pale_attention`."""
    name = "pale"

    def reference_masks(self, height, width, region, block_index=0):
        return _interlaced_masks(height, width, region)

    def attend(self, q, k, v, num_heads, region, block_index=0):
        return pale_attention(q, k, v, num_heads, region)

    def panels(self, pale_size, stripe_width):
        return [("pale (parallel)", pale_size, 0)]


class CrossShapedMode(_SplitMode):
    """CSWin's cross-shaped stripes of ``stripe_width`` adjacent rows | columns."""
    name = "cross_shaped"
    size_arg = "stripe_width"
    contiguous = True

    def reference_masks(self, height, width, region, block_index=0):
        rows, cols = _token_lines(height, width)
        return (_same(rows, lambda r: r // region[0]), _same(cols, lambda c: c // region[1]))

    def panels(self, pale_size, stripe_width):
        return [(f"cross_shaped, stripe width {stripe_width}", stripe_width, 0)]


class AxialMode(_SplitMode):
    """One row | one column: interlaced groups of one line."""
    name = "axial"
    size_arg = None
    fixed_region = (1, 1)

    def reference_masks(self, height, width, region, block_index=0):
        rows, cols = _token_lines(height, width)
        return _same(rows, lambda r: r), _same(cols, lambda c: c)


def _sequential_rows(block_index):
    """``pale_sequential`` attends within row groups in even blocks, columns in odd."""
    return block_index % 2 == 0


class PaleSequentialMode(AttentionMode):
    """All heads along row groups in even blocks, column groups in odd ones."""
    name = "pale_sequential"
    split = False
    uses_block_index = True

    def reference_masks(self, height, width, region, block_index=0):
        rows, cols = _interlaced_masks(height, width, region)
        return (rows,) if _sequential_rows(block_index) else (cols,)

    def panels(self, pale_size, stripe_width):
        return [("pale_sequential, even block", pale_size, 0),
                ("pale_sequential, odd block", pale_size, 1)]

    def is_padded(self, height, width, region, block_index=0):
        if _sequential_rows(block_index):
            return not known_zero(padding_to(height, region[0]))
        return not known_zero(padding_to(width, region[1]))

    def compute(self, qkv, num_heads, region, block_index=0, backend="matmul",
                query_scale=None, softmax=None, halves=None, inplace=False):
        q, k, v = qkv
        if query_scale is None:
            query_scale = (q.shape[-1] // num_heads) ** -0.5
        softmax = softmax or paddle.nn.functional.softmax
        if _sequential_rows(block_index):
            return row_attention(q, k, v, num_heads, region[0], backend, query_scale, softmax)
        return column_attention(q, k, v, num_heads, region[1], backend, query_scale, softmax)

    def macs(self, height, width, channels, region, block_index=0):
        s_r, s_c = region
        if _sequential_rows(block_index):
            return 2 * (-(-height // s_r) * s_r) * width * (s_r * width) * channels
        return 2 * height * (-(-width // s_c) * s_c) * (s_c * height) * channels

    def score_elements(self, batch, num_heads, height, width, region, block_index=0):
        s_r, s_c = region
        if _sequential_rows(block_index):
            return batch * num_heads * -(-height // s_r) * (s_r * width) ** 2
        return batch * num_heads * -(-width // s_c) * (s_c * height) ** 2


class PaleVanillaMode(AttentionMode):
    """All heads over the whole pale (row group and column group, one softmax)."""
    name = "pale_vanilla"
    split = False
    always_masks = True  # the joined softmax of the two parts is written out

    def reference_masks(self, height, width, region, block_index=0):
        rows, cols = _interlaced_masks(height, width, region)
        return (rows | cols,)

    def compute(self, qkv, num_heads, region, block_index=0, backend="matmul",
                query_scale=None, softmax=None, halves=None, inplace=False):
        if backend != "matmul":
            raise ValueError("pale_vanilla runs on the matmul backend only")
        q, k, v = qkv
        if query_scale is None:
            query_scale = (q.shape[-1] // num_heads) ** -0.5
        return _vanilla_attention(q, k, v, num_heads, region, query_scale, inplace)

    def macs(self, height, width, channels, region, block_index=0):
        s_r, s_c = region
        padded_h, padded_w = -(-height // s_r) * s_r, -(-width // s_c) * s_c
        return 2 * padded_h * padded_w * (s_r * padded_w + s_c * padded_h) * channels

    def score_elements(self, batch, num_heads, height, width, region, block_index=0):
        s_r, s_c = region
        padded_h, padded_w = -(-height // s_r) * s_r, -(-width // s_c) * s_c
        return batch * num_heads * padded_h * padded_w * max(s_r * padded_w, s_c * padded_h)


for _mode in (PaleMode(), PaleSequentialMode(), PaleVanillaMode(), CrossShapedMode(),
              AxialMode()):
    register_mode(_mode)


def region_size(mode, size):
    """The ``(rows, columns)`` line counts of ``mode``'s groups: the pale size
    ``(s_r, s_c)`` for the pale modes, the stripe width ``(w, w)`` for ``cross_shaped``
    (a pair gives rows and columns their own width), ``(1, 1)`` for ``axial`` (``size``
    ignored)."""
    return get_mode(mode).region(size)


def check_heads(mode, num_heads, dim=None):
    """ValueError unless ``num_heads`` suits ``mode`` (and divides ``dim`` if given)."""
    spec = get_mode(mode)
    check_num_heads(num_heads, dim, spec.split, spec.name)


# Plain Python also under paddle.jit.to_static (see check_attention_inputs)
@paddle.jit.not_to_static
def check_mode_inputs(q, k, v, num_heads, mode):
    """Validate the shapes of ``mode_attention``'s inputs."""
    check_qkv_shapes(q, k, v, "mode_attention")
    check_heads(mode, num_heads, q.shape[-1])


def mode_attention(q, k, v, num_heads, mode, size=None, block_index=0):
    """Attention of ``mode`` on already projected queries, keys and values.

    Args:
        q, k, v: ``[B, H, W, C]`` tensors (channels last).
        num_heads: total heads (even for ``pale``, ``cross_shaped`` and ``axial``, which
            give half of them to rows and half to columns); head dim ``C / num_heads``,
            scale ``head_dim ** -0.5``.
        mode: a name in :data:`MODES` (see the module docstring for each region).
        size: the pale size ``s`` or ``(s_r, s_c)`` for the pale modes, the stripe
            width ``w`` (or ``(w_r, w_c)``) for ``cross_shaped``; ignored by ``axial``.
        block_index: index of the block within its stage; ``pale_sequential`` attends
            along rows in even blocks and along columns in odd ones.

    Returns:
        ``[B, H, W, C]``. Any H and W: lines are padded to multiples of the size, padded
        keys masked and the output cropped. ``mode="pale"`` is
        :func:`~.attention.pale_attention`, unchanged.
    """
    spec = get_mode(mode)
    check_block_index(block_index)
    region = spec.region(size)
    check_mode_inputs(q, k, v, num_heads, spec)
    return spec.attend(q, k, v, num_heads, region, block_index)


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
    return get_mode(mode).compute(qkv, num_heads, region, block_index, backend, query_scale,
                                  softmax, halves, inplace)


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
    pad_h, pad_w = padding_to(height, s_r), padding_to(width, s_c)
    padded_h, padded_w = height + pad_h, width + pad_w
    rows_padded, cols_padded = not known_zero(pad_h), not known_zero(pad_w)
    if rows_padded:
        q, k, v = (pad_axis(t, 1, pad_h) for t in (q, k, v))
    if cols_padded:
        q, k, v = (pad_axis(t, 2, pad_w) for t in (q, k, v))
    num_row_groups, num_col_groups = padded_h // s_r, padded_w // s_c  # N_r, N_c
    dtype = q.dtype
    if query_scale != 1.0:
        q = q * query_scale

    # key biases: a key is real when both its row and its column are
    row_bias = col_bias = None
    if rows_padded or cols_padded:
        # row part, keys laid out [s_r, W'] per group: [N_r, s_r, 1] + [1, 1, W']
        row_bias = (key_bias(padded_h, s_r, num_row_groups, height, dtype).unsqueeze(-1)
                    + line_bias(padded_w, width, dtype).reshape([1, 1, padded_w]))
        row_bias = row_bias.reshape([1, num_row_groups, 1, s_r * padded_w, 1])
        # column part, keys laid out [H', s_c] per group: [N_c, 1, s_c] + [1, H', 1]
        col_bias = (key_bias(padded_w, s_c, num_col_groups, width, dtype).unsqueeze(1)
                    + line_bias(padded_h, height, dtype).reshape([1, padded_h, 1]))
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
        return group_rows(t, num_heads, s_r, num_row_groups)  # [B, N_r, heads, s_r W', d]

    def cols(t):
        return group_columns(t, num_heads, s_c, num_col_groups)  # [B, N_c, heads, H' s_c, d]

    row_scores = attention_scores(rows(q), rows(k), row_bias)
    col_scores = attention_scores(cols(q), cols(k), col_bias)
    col_scores = col_scores.add_(intersection) if inplace else col_scores + intersection

    # one maximum per query and head over both parts, [B, H', W', heads]; every row
    # group holds a real row, so the row part (and m) is finite for every query
    def from_rows(t):
        return ungroup_rows(t, s_r, num_row_groups, padded_w, padded_h)

    def from_cols(t):
        return ungroup_columns(t, s_c, num_col_groups, padded_h, padded_w)
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
    spec = get_mode(mode)
    return spec.macs(height, width, channels, spec.region(size), block_index)
