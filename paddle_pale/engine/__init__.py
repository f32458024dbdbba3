from .engine import Engine, NonFiniteLossError, topk_correct
