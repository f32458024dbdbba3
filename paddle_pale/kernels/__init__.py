"""Device-specific fast forms of the model's layers, applied by one explicit call.

``paddle_pale.models`` is the paper in stock Paddle layers; this package holds kernels
that are faster for one device and changes nothing else:

    model = paddle_pale.create_model("pale_t")
    paddle_pale.kernels.use_cpu_kernels(model)   # eager CPU training / evaluation

It may import ``paddle_pale.models`` and the ground layer, nothing above them.
"""
from .cpu import use_cpu_kernels, use_plain_layers, uses_cpu_kernels

__all__ = ["use_cpu_kernels", "use_plain_layers", "uses_cpu_kernels"]
