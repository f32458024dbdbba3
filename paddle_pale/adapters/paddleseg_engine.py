"""Train and evaluate PaddleSeg configs with the Pale backbone through PaddleSeg's own
engine (``paddleseg.core.train`` / ``paddleseg.core.evaluate``).

``tools/train_seg.py``, ``tools/val_seg.py`` and ``tools/export_seg.py`` are thin
wrappers around :func:`train_main`, :func:`val_main` and :func:`export_main`; their
options follow PaddleSeg's ``tools/train.py``, ``tools/val.py`` and ``tools/export.py``.
Multi-GPU: start training under ``python -m paddle.distributed.launch``, as with PaddleSeg.
"""
# One module per job; this one gathers their public names, the contract the tools and
# users import (tools/train_seg.py, val_seg.py, export_seg.py, flops_seg.py).
from .seg_cli import test_config_from_args, train_main, train_parser, val_main, val_parser
from .seg_config import check_datasets, load_config
from .seg_export import export_main, export_model, export_parser
from .seg_flops import seg_model_report
from .seg_weights import load_segmentation_weights

__all__ = ["load_config", "check_datasets", "load_segmentation_weights", "train_parser",
           "val_parser", "train_main", "val_main", "test_config_from_args", "export_parser",
           "export_model", "export_main", "seg_model_report"]
