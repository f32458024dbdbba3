"""Command-line front of the engine, shared by tools/train.py and tools/eval.py."""
import argparse
import os

from ..utils.io import add_mismatch_flag
from .config import load_config

__all__ = ["parse_args", "train_main", "eval_main"]


def parse_args(description, argv=None, evaluation=False):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[],
                        metavar="Section.key=value",
                        help="override a config value (YAML syntax), repeatable")
    add_mismatch_flag(parser, "Global.pretrained")
    return parser.parse_args(argv)


def train_main(argv=None):
    from .engine import CheckpointSaveError, Engine

    args = parse_args("Train a Pale Transformer classifier.", argv)
    engine = Engine(load_config(args.config, args.override), mode="train",
                    allow_mismatched_weights=args.allow_mismatched_weights)
    try:
        result = engine.train()
    except CheckpointSaveError as error:  # a full disk: the machine's state, not a bug
        raise SystemExit(f"train.py: error: {error.strerror}") from None
    if engine.rank == 0:
        output_dir = engine.output_dir
        lines = [f"best val top-1: {result['best_top1']:.4f}"]
        if os.path.exists(result["best"] + ".pdparams"):
            export_prefix = os.path.join(output_dir, "export", "model")
            lines += [f"best checkpoint: {result['best']}.pdparams",
                      "evaluate it:  python tools/eval.py -c " + args.config
                      + f" -o Global.pretrained={result['best']}",
                      f"export it:    python tools/export.py inference --checkpoint "
                      f"{result['best']} --output {export_prefix}",
                      f"predict:      python tools/predict.py --model {export_prefix} IMAGE..."]
        lines += [f"latest checkpoint (resume with -o Global.resume={result['latest']}): "
                  f"{result['latest']}.pdparams",
                  f"logs: {os.path.join(output_dir, 'train.log')}"]
        print("\n".join(lines))
    return result


def eval_main(argv=None):
    from .engine import Engine

    args = parse_args("Evaluate a Pale Transformer classifier (top-k accuracy).", argv,
                      evaluation=True)
    config = load_config(args.config, args.override)
    if not config["Global"]["pretrained"]:
        raise SystemExit("tools/eval.py needs weights: -o Global.pretrained=PATH(.pdparams)")
    engine = Engine(config, mode="eval",
                    allow_mismatched_weights=args.allow_mismatched_weights)
    metrics = engine.evaluate()
    if engine.rank == 0:
        for k in config["Metric"]["topk"]:
            print(f"top{k}: {metrics[f'top{k}']:.4f}")
        print(f"loss: {metrics['loss']:.4f}  images: {metrics['count']}  "
              f"unreadable skipped: {metrics['skipped']}")
    return metrics
