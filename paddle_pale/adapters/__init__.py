"""Thin integrations with PaddleSeg and PaddleDetection.

Import the submodule you need (`paddle_pale.adapters.paddleseg`, `paddle_pale.adapters.ppdet`):
this package imports neither library itself.
"""
