"""paddle-pale: the Pale Transformer (Wu et al., AAAI 2022) for PaddlePaddle.

Layers, each importing only those below it (the rule is code: ``.importlinter``,
checked by the test suite):

* ``ablation``: one training run per attention mode / pale size, timed by ``benchmark``;
* ``benchmark`` (speed and memory of the models side by side), ``visualize`` (pictures);
* ``engine`` (the classification trainer), ``adapters`` (PaddleSeg / PaddleDetection),
  ``export`` (backbone, Paddle Inference, ONNX), ``inference`` (the predictor);
* ``kernels``: faster device-specific forms of the model's layers;
* ``models`` (the paper) and ``data`` (data sets and augmentation);
* ``utils``: the ground (file IO, config parsing, FLOP counting, logging, CPU setup),
  which imports nothing of the package.

Names are imported on first use, so ``paddle_pale.utils.cpu.configure_cpu()`` can run
before anything imports paddle.
"""
import importlib

__version__ = "0.1.0"

# public name -> the module defining it
_EXPORTS = {"PaleTransformer": ".models", "create_model": ".models",
            "list_models": ".models", "pale_attention": ".models",
            "mode_attention": ".models", "MODES": ".models", "pretrained_cfg": ".models"}
_SUBMODULES = ("ablation", "adapters", "benchmark", "data", "engine", "export", "inference",
               "kernels", "models", "utils", "visualize")
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
