"""Thin integrations with PaddleSeg and PaddleDetection: one dense backbone
(``backbone``) registered with each library (``paddleseg``, ``ppdet``), their Paddle 3
fixes on one mechanism (``compat``), and engines that drive each library's own train,
evaluate and export (``paddleseg_engine``, ``ppdet_engine``).

Import the submodule you need (``paddle_pale.adapters.paddleseg``,
``paddle_pale.adapters.ppdet``): this package imports neither library itself. May
import models and the ground layer, never the classification engine.
"""
