"""The Pale Transformer as the paper writes it, in stock Paddle layers.

``attention`` holds PS-Attention (Eq. 1-3), ``modes`` the registry of attention modes
(the paper's and the other regions of the ablation, Table 6), ``attention_reference``
their naive masked oracle; ``layers`` the shared building blocks; ``pale`` the block
(Eq. 6-8) and the 4-stage backbone; ``registry`` the Pale-T/S/B variants (Table 1). No device checks, graph-mode branches
or global switches: one graph for every device and exporter. May import the ground
layer (``utils``) only.
"""
from .attention import pale_attention, pale_attention_macs, to_pale_size
from .modes import (MODES, AttentionMode, get_mode, mode_attention, mode_attention_macs,
                    register_mode)
from .pale import CLASSIFIER_PREFIXES, PaleAttention, PaleBlock, PaleTransformer
from .registry import (create_model, list_models, model_arguments, model_default, model_defaults,
                       pretrained_cfg, register_model)
