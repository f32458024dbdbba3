"""The options of ``tools/train_seg.py`` and ``tools/val_seg.py`` (PaddleSeg's), and their runs
through ``paddleseg.core.train`` / ``paddleseg.core.evaluate``."""
import argparse
import os

import paddle
from paddleseg import core
from paddleseg.cvlibs import SegBuilder

from ..utils.io import add_mismatch_flag, refuse_code
from .seg_config import check_datasets, load_config
from .seg_weights import load_segmentation_weights

__all__ = ["train_parser", "val_parser", "train_main", "val_main", "test_config_from_args"]


def _common_args(parser):
    parser.add_argument("--config", required=True, help="PaddleSeg YAML config")
    parser.add_argument("--device", choices=("cpu", "gpu"),
                        default="gpu" if paddle.is_compiled_with_cuda() else "cpu")
    parser.add_argument("--num_workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--amp_level", choices=("O1", "O2"), default="O1")
    parser.add_argument("--opts", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config overrides, e.g. model.backbone.pretrained=best.pdparams")


def _test_args(parser):
    parser.add_argument("--aug_eval", action="store_true",
                        help="multi-scale and/or flip evaluation")
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="scales for --aug_eval, e.g. 0.5 0.75 1.0 1.25 1.5 1.75")
    parser.add_argument("--flip_horizontal", action="store_true")
    parser.add_argument("--flip_vertical", action="store_true")
    parser.add_argument("--is_slide", action="store_true", help="sliding-window inference")
    parser.add_argument("--crop_size", type=int, nargs=2, default=None, metavar=("W", "H"))
    parser.add_argument("--stride", type=int, nargs=2, default=None, metavar=("W", "H"))


def train_parser():
    parser = argparse.ArgumentParser(description="Train a PaddleSeg model with a Pale backbone")
    _common_args(parser)
    parser.add_argument("--save_dir", default="output")
    parser.add_argument("--iters", type=int, default=None, help="override the config's iters")
    parser.add_argument("--batch_size", type=int, default=None, help="per-device batch size")
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--save_interval", type=int, default=1000)
    parser.add_argument("--log_iters", type=int, default=10)
    parser.add_argument("--keep_checkpoint_max", type=int, default=5)
    parser.add_argument("--do_eval", action="store_true",
                        help="evaluate at every save_interval, keep best_model/")
    parser.add_argument("--use_vdl", action="store_true", help="log to VisualDL")
    parser.add_argument("--resume_model", default=None, help="an iter_N directory to resume")
    parser.add_argument("--seed", type=int, default=None)
    return parser


def val_parser():
    parser = argparse.ArgumentParser(description="Evaluate a PaddleSeg model with a Pale backbone")
    _common_args(parser)
    parser.add_argument("--model_path", required=True,
                        help="segmentation weights, e.g. output/best_model/model.pdparams")
    add_mismatch_flag(parser, "--model_path")
    _test_args(parser)
    return parser


def test_config_from_args(config_test, args):
    """The config's ``test_config`` with the command line's choices on top."""
    test_config = dict(config_test or {})
    if args.aug_eval:
        test_config["aug_eval"] = True
        test_config["flip_horizontal"] = args.flip_horizontal
        test_config["flip_vertical"] = args.flip_vertical
        if args.scales is not None:
            test_config["scales"] = args.scales if len(args.scales) > 1 else args.scales[0]
    elif args.scales or args.flip_horizontal or args.flip_vertical:
        raise ValueError("--scales/--flip_horizontal/--flip_vertical need --aug_eval")
    if args.is_slide:
        if args.crop_size is None or args.stride is None:
            raise ValueError("--is_slide needs --crop_size W H and --stride W H")
        test_config.update(is_slide=True, crop_size=args.crop_size, stride=args.stride)
    return test_config


def _setup(args):
    paddle.set_device(args.device)
    config = load_config(args.config, opts=args.opts, iters=getattr(args, "iters", None),
                         batch_size=getattr(args, "batch_size", None),
                         learning_rate=getattr(args, "learning_rate", None))
    pretrained = (config.model_cfg or {}).get("pretrained")
    refuse_code(pretrained, "model.pretrained")  # PaddleSeg reads it with paddle.load
    builder = SegBuilder(config)
    model = builder.model
    if args.device == "gpu" and paddle.distributed.ParallelEnv().nranks > 1:
        # batch statistics over all GPUs, as PaddleSeg's own tools do
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return config, builder, model


def train_main(argv=None):
    """Build the config's model, data, optimizer and losses and run PaddleSeg training."""
    args = train_parser().parse_args(argv)
    if args.seed is not None:
        paddle.seed(args.seed)
    config, builder, model = _setup(args)
    check_datasets(config, ["train_dataset"] + (["val_dataset"] if args.do_eval else []))
    for name in ("model.pdparams", "model.pdopt"):  # PaddleSeg resumes with paddle.load
        if args.resume_model:
            refuse_code(os.path.join(args.resume_model, name), "--resume_model file")
    core.train(model, builder.train_dataset,
               val_dataset=builder.val_dataset if args.do_eval else None,
               optimizer=builder.optimizer, losses=builder.loss, save_dir=args.save_dir,
               iters=config.iters, batch_size=config.batch_size,
               resume_model=args.resume_model, save_interval=args.save_interval,
               log_iters=args.log_iters, num_workers=args.num_workers, use_vdl=args.use_vdl,
               keep_checkpoint_max=args.keep_checkpoint_max, test_config=config.test_config,
               precision=args.precision, amp_level=args.amp_level)


def val_main(argv=None):
    """Evaluate ``--model_path`` on the config's val_dataset; returns (mIoU, accuracy)."""
    parser = val_parser()
    args = parser.parse_args(argv)
    try:
        test_config_from_args({}, args)  # reject bad flag combinations before building
    except ValueError as error:
        parser.error(str(error))
    config, builder, model = _setup(args)
    check_datasets(config, ["val_dataset"])
    test_config = test_config_from_args(config.test_config, args)
    load_segmentation_weights(model, args.model_path, args.allow_mismatched_weights)
    miou, acc, *_ = core.evaluate(model, builder.val_dataset, num_workers=args.num_workers,
                                  precision=args.precision, amp_level=args.amp_level,
                                  **test_config)
    return miou, acc
