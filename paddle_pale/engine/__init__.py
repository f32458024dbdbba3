"""The classification trainer (PaddleClas style): the config (``config``, every default
in ``defaults.yaml``), model/optimizer/schedule builders, training with fleet, AMP, EMA
and whole checkpoints, evaluation, and the command-line front of ``tools/train.py`` and
``tools/eval.py``. May import models, kernels, data and the ground layer.
"""
from .engine import CheckpointSaveError, Engine, NonFiniteLossError, topk_correct
