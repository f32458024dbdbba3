"""The ground layer: what every other layer may use, importing nothing of the package.

``io`` (weights, checkpoints and export files: suffixes, prefixes, loading with clear
errors, whole-or-absent saves), ``config`` (YAML with ``_base_``, ``KEY=VALUE``
overrides), ``flops`` (parameter and MAC counting), ``log`` (rank-aware logging),
``cpu`` (the CPU environment, :func:`~paddle_pale.utils.cpu.configure_cpu`) and
``constants``.
"""
