"""paddle-pale: the Pale Transformer (Wu et al., AAAI 2022) for PaddlePaddle."""
from .models import (MODES, PaleTransformer, create_model, list_models, mode_attention,
                     pale_attention, pretrained_cfg)

__version__ = "0.1.0"
__all__ = ["PaleTransformer", "create_model", "list_models", "pale_attention",
           "mode_attention", "MODES", "pretrained_cfg", "__version__"]
