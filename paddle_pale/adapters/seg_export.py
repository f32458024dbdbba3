"""Export of a PaddleSeg model for Paddle Inference (``tools/export_seg.py``)."""
import argparse
import os

import paddle
import yaml
from paddleseg.cvlibs import SegBuilder
from paddleseg.deploy.export import WrappedModel
from paddleseg.utils import logger as seg_logger

from .seg_config import load_config
from .seg_weights import load_segmentation_weights

__all__ = ["export_parser", "export_model", "export_main"]


def export_parser():
    parser = argparse.ArgumentParser(
        description="Export a PaddleSeg model with a Pale backbone for Paddle Inference, "
                    "as PaddleSeg's tools/export.py does")
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config")
    parser.add_argument("--model_path", default=None,
                        help="segmentation weights, e.g. output/best_model/model.pdparams")
    parser.add_argument("--random_weights", action="store_true",
                        help="export without --model_path: the model's initial weights "
                             "(a test of the export, no trained model)")
    parser.add_argument("--save_dir", default="output/inference_model")
    parser.add_argument("--input_shape", type=int, nargs=4, default=None,
                        metavar=("N", "C", "H", "W"),
                        help="fix the input shape (default: any batch and image size)")
    parser.add_argument("--output_op", choices=("argmax", "softmax", "none"),
                        default="argmax", help="op appended to the logits")
    parser.add_argument("--opts", nargs="+", default=None, metavar="KEY=VALUE")
    return parser


def export_model(config_path, save_dir, model_path=None, input_shape=None,
                 output_op="argmax", opts=None):
    """Export the config's model the way PaddleSeg 2.8.0's ``tools/export.py`` does:
    ``WrappedModel(model, output_op)`` (unless ``"none"``), ``paddle.jit.to_static``
    with ``InputSpec([None, 3, None, None])`` (or ``input_shape``) and ``paddle.jit.save``
    to ``save_dir/model.json`` + ``model.pdiparams``, then ``deploy.yaml`` (the val
    transforms, input shape and output op) beside them.

    ``model_path`` weights must fit the model exactly (see
    :func:`load_segmentation_weights`). Returns the paths written.
    """
    if output_op not in ("argmax", "softmax", "none"):
        raise ValueError(f"output_op must be argmax, softmax or none, got {output_op!r}")
    config = load_config(config_path, opts=opts)
    val_dataset = config.val_dataset_cfg
    if not val_dataset:
        raise ValueError(f"{config_path!r} has no val_dataset: its transforms are the "
                         f"deployed preprocessing")
    model = SegBuilder(config).model
    if model_path is not None:
        load_segmentation_weights(model, model_path)
    os.environ["PADDLESEG_EXPORT_STAGE"] = "True"  # PaddleSeg models read it
    if output_op != "none":
        model = WrappedModel(model, output_op)
    model.eval()
    spec = paddle.static.InputSpec([None, 3, None, None] if input_shape is None
                                   else list(input_shape), "float32")
    static = paddle.jit.to_static(model, input_spec=[spec])
    os.makedirs(save_dir, exist_ok=True)
    prefix = os.path.join(save_dir, "model")
    paddle.jit.save(static, prefix)
    deploy = {"Deploy": {"model": "model.json", "params": "model.pdiparams",
                         "transforms": val_dataset.get("transforms"),
                         "input_shape": list(spec.shape),  # -1: any size
                         "output_op": output_op,
                         "output_dtype": "int32" if output_op == "argmax" else "float32"}}
    deploy_path = os.path.join(save_dir, "deploy.yaml")
    with open(deploy_path, "w") as handle:
        yaml.safe_dump(deploy, handle, sort_keys=False)
    seg_logger.info(f"exported {config_path} to {save_dir}")
    return [prefix + ".json", prefix + ".pdiparams", deploy_path]


def export_main(argv=None):
    """``tools/export_seg.py``: arguments as PaddleSeg's ``tools/export.py``."""
    parser = export_parser()
    args = parser.parse_args(argv)
    if args.model_path is None and not args.random_weights:
        raise ValueError("no --model_path: the export would hold the untrained initial "
                         "weights; pass --model_path output/.../model.pdparams (or "
                         "--random_weights to export them on purpose)")
    paths = export_model(args.config, args.save_dir, args.model_path, args.input_shape,
                         args.output_op, args.opts)
    for path in paths:
        print(path)
    return paths
