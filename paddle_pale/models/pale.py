"""Pale Transformer (Wu et al., AAAI 2022): block (Eq. 6-8) and 4-stage backbone.

Inside a stage every tensor is channels last, ``[B, H, W, C]``: LayerNorm, the linear
layers and PS-Attention work on the last axis; the convolutions (CPE, the depth-wise
half of Q/K/V, patch merging) run in NCHW between two transposes, or on the tokens as
they lie once the model is switched to channels-last convolutions
(``channels_last=True``, :meth:`PaleTransformer.set_channels_last`).

This module is the paper, in stock Paddle layers. Faster CPU forms of the same layers
(same parameters) are applied by :func:`paddle_pale.kernels.use_cpu_kernels`.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.distributed.fleet.utils import recompute

from .attention import in_backend_dtype, stage_sizes, to_pale_size
from .modes import (DEFAULT_MODE, check_block_index, check_heads, check_mode_inputs,
                    get_mode)
from .layers import (ConditionalPositionEncoding, DropPath, LayerNorm, Mlp, SeparableProjection,
                     set_channels_last, to_channels_first, to_channels_last, init_weights)

__all__ = ["PaleAttention", "PaleBlock", "ConvPatchEmbed", "PaleTransformer",
           "CLASSIFIER_PREFIXES", "TOKEN_HEAD_PREFIXES", "CSWIN_T_STRIPE_WIDTHS",
           "MIN_INPUT_SIZE"]

# state-dict key prefixes of the classifier (pooled norm + linear head)
CLASSIFIER_PREFIXES = ("norm.", "head.")
# the auxiliary per-token head of token-labeling training (``token_head=True``): an extra
# that the plain classifier, export and the dense backbones leave out
TOKEN_HEAD_PREFIXES = ("aux_head.",)
# LV-ViT's inference rule (token_inference=True): class output + this x max over tokens
TOKEN_INFERENCE_WEIGHT = 0.5
# what the convolutions and linear layers compute in: float32, or half under AMP
IMAGE_DTYPES = (paddle.float32, paddle.float16, paddle.bfloat16)
# the smallest image side: the stride of the first patch merging (4x4 patches, as in the
# paper); every later stage pads, so each gets at least one token
MIN_INPUT_SIZE = 4
# stripe widths per stage of CSWin-T (Dong et al. 2021), the cross_shaped mode's default
CSWIN_T_STRIPE_WIDTHS = (1, 2, 7, 7)


class PaleAttention(nn.Layer):
    """The PS-Attention module of Eq. 7: Q, K and V from the separable convolutions
    phi_Q, phi_K, phi_V (Eq. 2), parallel row/column attention (Eq. 1-3), and an output
    projection. ``attention_mode`` swaps the attention region for one of the ablation's
    (Table 6; :mod:`paddle_pale.models.modes`), with the same projections.

    Args:
        dim: channels C.
        num_heads: heads H_i (even for the modes that split them between rows and
            columns: ``pale``, ``cross_shaped``, ``axial``).
        pale_size: S_i, an int or ``(s_r, s_c)`` (the pale modes).
        qkv_bias: a bias in the query's linear map. The keys' and values' maps have
            none: a bias on every key adds ``q . b`` to all scores of a query, which the
            softmax cancels, and one on every value adds ``b`` to every output (the
            weights sum to 1), which the output projection's bias already holds. The
            same function as with three biases, two adds per block less.
        proj_drop: dropout after the output projection.
        attention_mode: one of :data:`paddle_pale.models.modes.MODES`.
        stripe_width: the stripe width of ``cross_shaped`` (an int or a pair).
        block_index: the block's index within its stage (``pale_sequential``: rows in
            even blocks, columns in odd ones).
    """

    def __init__(self, dim, num_heads, pale_size=7, qkv_bias=True, proj_drop=0.0,
                 attention_mode=DEFAULT_MODE, stripe_width=7, block_index=0):
        super().__init__()
        self.mode = get_mode(attention_mode)  # the registry's AttentionMode
        try:
            check_heads(self.mode, num_heads, dim)
        except ValueError as error:
            raise ValueError(f"PaleAttention (dim={dim}, num_heads={num_heads}): "
                             f"{error}") from None
        self.dim = dim
        self.num_heads = num_heads
        self.pale_size = to_pale_size(pale_size)
        self.attention_mode = self.mode.name
        self.stripe_width = to_pale_size(stripe_width, "stripe_width")
        self.block_index = check_block_index(block_index)
        self.query = SeparableProjection(dim, qkv_bias)  # phi_Q
        self.key = SeparableProjection(dim, bias=False)  # phi_K
        self.value = SeparableProjection(dim, bias=False)  # phi_V
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

    @property
    def region(self):
        """``(rows, columns)`` lines per group of the mode: the pale size, the stripe
        width of ``cross_shaped``, ``(1, 1)`` for ``axial``."""
        return self.mode.region(self.mode.layer_size(self.pale_size, self.stripe_width))

    def qkv_projection(self, x, query_scale=None):
        """``(q, k, v)``, each ``[B, H, W, C]``, from ``x`` ``[B, H, W, C]``; the queries
        times ``query_scale`` when given."""
        if self.query.depthwise._data_format == "NCHW":
            x = to_channels_first(x)  # once for the three convolutions
        return self.query(x, query_scale), self.key(x), self.value(x)

    def forward(self, x):  # [B, H, W, C]
        check_mode_inputs(x, x, x, self.num_heads, self.mode)
        backend, dtype = self.mode.plan(x, self.region, self.block_index)
        # the matmul path takes its queries scaled by the projection (Eq. 2's
        # 1 / sqrt(d) on C x C weights, not on the activations); sdpa scales them itself,
        # and Paddle selects flash attention only with its default scale
        folded = backend == "matmul"
        qkv = self.qkv_projection(x, self.head_dim ** -0.5 if folded else None)
        out = self.mode.compute(in_backend_dtype(qkv, backend, dtype), self.num_heads,
                                self.region, self.block_index, backend,
                                query_scale=1.0 if folded else None)
        return self.proj_drop(self.proj(out))

    @property
    def head_dim(self):
        return self.dim // self.num_heads

    def functional_macs(self, inputs, output):
        """Multiply-accumulates of the attention matmuls, which no sublayer counts
        (see :func:`paddle_pale.utils.flops.count_flops`)."""
        _, height, width, channels = inputs[0].shape
        return self.mode.macs(height, width, channels, self.region, self.block_index)

    def extra_repr(self):
        text = f"dim={self.dim}, num_heads={self.num_heads}, pale_size={self.pale_size}"
        if self.attention_mode != DEFAULT_MODE:
            text += f", attention_mode={self.attention_mode}, region={self.region}"
            if self.mode.uses_block_index:
                text += f", block_index={self.block_index}"
        return text


class PaleBlock(nn.Layer):
    """Pale Transformer block (Eq. 6-8) on ``[B, H, W, C]``; ``attention_mode``,
    ``stripe_width`` and ``block_index`` (within the stage) as in :class:`PaleAttention`."""

    def __init__(self, dim, num_heads, pale_size=7, mlp_ratio=4.0, qkv_bias=True,
                 drop=0.0, drop_path=0.0, attention_mode=DEFAULT_MODE, stripe_width=7,
                 block_index=0):
        super().__init__()
        self.cpe = ConditionalPositionEncoding(dim, 3)
        self.norm1 = LayerNorm(dim)
        self.attn = PaleAttention(dim, num_heads, pale_size, qkv_bias, drop, attention_mode,
                                  stripe_width, block_index)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x):  # [B, H, W, C]
        x = self.cpe(x)  # Eq. 6: x + CPE(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))  # Eq. 7
        return x + self.drop_path(self.mlp(self.norm2(x)))  # Eq. 8


class ConvPatchEmbed(nn.Layer):
    """Patch merging: an overlapping convolution (7x7 stride 4 for stage 1, 3x3 stride 2
    after) + LayerNorm; ``[B, H', W', C_out]`` out, from an NCHW image
    (``tokens_in=False``) or from the previous stage's ``[B, H, W, C_in]`` tokens, which
    a channels-last convolution reads as they lie."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, tokens_in=False):
        super().__init__()
        self.tokens_in = tokens_in
        self.stride, self.padding = stride, kernel_size // 2  # of proj, for the CPU kernels
        self.proj = nn.Conv2D(in_channels, out_channels, kernel_size, stride,
                              padding=kernel_size // 2)
        self.norm = LayerNorm(out_channels)

    @property
    def channels_last(self):
        return self.proj._data_format == "NHWC"

    def forward(self, x):
        if self.tokens_in and not self.channels_last:
            x = to_channels_first(x)
        x = self.proj(x)
        return self.norm(x if self.channels_last else to_channels_last(x))


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
        attention_mode: the attention region of every block, one of
            :data:`paddle_pale.models.modes.MODES`: ``pale`` (the paper's parallel
            PS-Attention), ``pale_sequential`` (rows in the even blocks of a stage,
            columns in the odd ones), ``pale_vanilla``, ``cross_shaped``, ``axial``.
        stripe_width: the stripe width of ``cross_shaped``, an int or one per stage;
            None: CSWin-T's 1, 2, 7, 7 (four stages). Other modes ignore it.
        grad_checkpointing: recompute each block's activations in the backward pass
            instead of keeping them (see :meth:`set_grad_checkpointing`); not part of
            the architecture, the weights are the same.
        channels_last: channels-last convolutions (``data_format="NHWC"``) for the
            blocks and the patch merging of stages 2-4, which read the ``[B, H, W, C]``
            tokens without transposes (GPUs); see :meth:`set_channels_last`. The same
            parameters either way.
        token_head: add the auxiliary per-token classifier ``aux_head`` of token-labeling
            training (LV-ViT, Jiang et al. 2021; Pale-T*/S*/B* of Table 2). It scores
            every stage-4 token (stride 32: 7x7 at 224) after the classifier's ``norm``;
            :meth:`forward_tokens` returns both outputs. ``forward`` stays the plain
            classifier, so export and the dense backbones never see it (see the
            README's "Token labeling" for why stage 4).
        token_inference: LV-ViT's inference rule, ``forward`` = class output +
            0.5 x the max over the token outputs (needs ``token_head``); default off:
            the plain head.
    """

    # state-dict keys a checkpoint of another num_classes (or a dense backbone) may lack:
    # what utils.io.load_weights leaves out (a starred checkpoint's aux_head included)
    classifier_prefixes = CLASSIFIER_PREFIXES + TOKEN_HEAD_PREFIXES
    # what utils.io.load_weights drops from a file even for an exact fit, when this model
    # has no such keys: the plain classifier evaluates a starred checkpoint as it is
    auxiliary_prefixes = TOKEN_HEAD_PREFIXES

    def __init__(self, in_channels=3, num_classes=1000, embed_dims=(64, 128, 256, 512),
                 depths=(2, 2, 16, 2), num_heads=(2, 4, 8, 16), pale_size=7, mlp_ratio=4.0,
                 qkv_bias=True, drop_rate=0.0, drop_path_rate=0.0, with_classifier=True,
                 attention_mode=DEFAULT_MODE, stripe_width=None, grad_checkpointing=False,
                 channels_last=False, token_head=False, token_inference=False):
        super().__init__()
        if (token_head or token_inference) and not (with_classifier and num_classes > 0):
            raise ValueError("token_head / token_inference need the classifier "
                             "(with_classifier=True, num_classes > 0)")
        if token_inference and not token_head:
            raise ValueError("token_inference=True needs token_head=True (it adds the "
                             "auxiliary head's outputs)")
        num_stages = len(depths)
        get_mode(attention_mode)
        if len(embed_dims) != num_stages or len(num_heads) != num_stages:
            raise ValueError(
                f"embed_dims, depths and num_heads need one entry per stage, got "
                f"{len(embed_dims)}, {num_stages}, {len(num_heads)}")
        for stage, (dim, heads) in enumerate(zip(embed_dims, num_heads)):
            try:
                check_heads(attention_mode, heads, dim)
            except ValueError as error:
                raise ValueError(f"stage {stage + 1} (embed_dim={dim}, num_heads={heads}): "
                                 f"{error}") from None
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if stripe_width is None:
            stripe_width = CSWIN_T_STRIPE_WIDTHS if num_stages == 4 else 7
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embed_dims = list(embed_dims)
        self.pale_sizes = stage_sizes(pale_size, num_stages, "pale_size")
        self.attention_mode = attention_mode
        self.stripe_widths = stage_sizes(stripe_width, num_stages, "stripe_width")

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
                tokens_in=not first))
            start = sum(depths[:stage])
            # block_index counts within the stage: pale_sequential starts every stage
            # with rows, as Swin starts every stage with unshifted windows
            self.stages.append(nn.Sequential(*[
                PaleBlock(dim, heads, self.pale_sizes[stage], mlp_ratio, qkv_bias, drop_rate,
                          drop_paths[start + i], attention_mode, self.stripe_widths[stage],
                          block_index=i) for i in range(depth)]))
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
        self.token_inference = bool(token_inference)
        if token_head:
            self.aux_head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(init_weights)
        self.set_grad_checkpointing(grad_checkpointing)
        self.set_channels_last(channels_last)

    def set_grad_checkpointing(self, enable=True):
        """Activation recomputation per block (timm's name): in training, each block
        keeps only its input and recomputes its activations in the backward pass, through
        Paddle's ``recompute`` (non-reentrant, so data parallel needs no ``no_sync``; the
        RNG state is replayed, so stochastic depth and dropout drop the same paths). Same
        loss and gradients, less memory, about one more forward pass of time."""
        self.grad_checkpointing = bool(enable)

    def set_channels_last(self, channels_last=True):
        """Switch, in place, the convolutions that read the tokens (CPE, phi_Q/K/V's
        depth-wise ones, the patch merging of stages 2-4) to channels-last
        (``data_format="NHWC"``: no transpose pair around them, the layout cuDNN's fp16
        and bf16 kernels prefer) or back to NCHW; returns the model. Parameters and
        results are the same. Exports are NCHW (:func:`paddle_pale.export.static_model`
        switches its copy back), the layout every deployment backend reads."""
        self.channels_last = bool(channels_last)
        set_channels_last(self, channels_last)
        set_channels_last(self.patch_embeds[1:], channels_last, kinds=(ConvPatchEmbed,))
        return self

    @property
    def feat_channels(self):
        """Channels of the four stage outputs (PaddleSeg's backbone contract)."""
        return list(self.embed_dims)

    def _check_input(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PaleTransformer expects images of shape [B, {self.in_channels}, H, W], "
                f"got {list(x.shape)}")
        if x.dtype not in IMAGE_DTYPES:
            raise ValueError(
                f"PaleTransformer expects float32 images (float16 / bfloat16 under AMP), "
                f"got {str(x.dtype).split('.')[-1]}: convert with x.astype('float32')")

    def check_out_indices(self, out_indices):
        """``out_indices`` as a list of increasing stage indices; ValueError otherwise."""
        num_stages = len(self.stages)
        out_indices = list(out_indices)
        if not out_indices or sorted(set(out_indices)) != out_indices or not all(
                0 <= i < num_stages for i in out_indices):
            raise ValueError(f"out_indices must be increasing stage indices in "
                             f"[0, {num_stages - 1}], got {out_indices}")
        return out_indices

    def _run_stage(self, index, x):
        """Stage ``index``: patch merging then its blocks; the NCHW image (stage 0) or the
        previous stage's ``[B, H, W, C]`` in, ``[B, H_i, W_i, C_i]`` out."""
        x = self.patch_embeds[index](x)
        if not (self.grad_checkpointing and self.training):
            return self.stages[index](x)
        # block by block (as timm's checkpoint_seq): hooks on stages.{index} do not run
        for block in self.stages[index]:
            x = recompute(block, x, use_reentrant=False, preserve_rng_state=True)
        return x

    def forward_pyramid(self, x, out_indices=(0, 1, 2, 3)):
        """NCHW feature maps of the stages in ``out_indices`` (strides 4/8/16/32),
        each through its own LayerNorm; stages after the last one asked for are not run."""
        self._check_input(x)
        out_indices = self.check_out_indices(out_indices)
        features = []
        for index in range(out_indices[-1] + 1):
            tokens = self._run_stage(index, x)
            if index in out_indices:
                features.append(to_channels_first(self.stage_norms[index](tokens)))
            x = tokens
        return features

    def forward_features(self, x):
        """Last stage output ``[B, H/32, W/32, C_4]`` (channels last)."""
        self._check_input(x)
        tokens = self._run_stage(0, x)
        for index in range(1, len(self.stages)):
            tokens = self._run_stage(index, tokens)
        return tokens

    def forward_head(self, x, pre_logits=False):
        if not self.with_classifier:
            raise ValueError("this PaleTransformer was built with with_classifier=False")
        # average pooling, then LN; as a pooling op (Paddle 3.3.1's oneDNN reduce_mean
        # prints a debug line to stdout at its first run)
        x = self.norm(F.adaptive_avg_pool2d(to_channels_first(x), 1).flatten(1))
        return x if pre_logits else self.head(self.head_drop(x))

    @property
    def token_head(self):
        return hasattr(self, "aux_head")

    def _token_logits(self, tokens):
        """``[B, h, w, C_4]`` stage-4 tokens -> ``[B, h, w, num_classes]``."""
        return self.aux_head(self.norm(tokens))

    def forward_tokens(self, x):
        """Token-labeling training: ``(class logits [B, K], token logits [B, h, w, K])``
        with ``h, w = H/32, W/32`` (needs ``token_head``)."""
        if not self.token_head:
            raise ValueError("forward_tokens needs a model built with token_head=True")
        tokens = self.forward_features(x)
        return self.forward_head(tokens), self._token_logits(tokens)

    def forward(self, x):
        tokens = self.forward_features(x)
        logits = self.forward_head(tokens)
        if self.token_inference:
            token_max = self._token_logits(tokens).flatten(1, 2).max(axis=1)
            logits = logits + TOKEN_INFERENCE_WEIGHT * token_max
        return logits
