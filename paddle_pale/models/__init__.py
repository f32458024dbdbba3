from .attention import pale_attention, pale_attention_macs, to_pale_size
from .pale import CLASSIFIER_PREFIXES, PaleAttention, PaleBlock, PaleTransformer
from .registry import create_model, list_models, model_defaults, pretrained_cfg, register_model
