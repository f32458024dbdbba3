"""Command-line front of the engine, shared by tools/train.py and tools/eval.py."""
import argparse
import logging
import os

from ..utils.config import parse_override
from ..utils.io import add_mismatch_flag, read_states, strip_suffix
from .config import ConfigError, load_config

__all__ = ["parse_args", "train_main", "eval_main", "checkpoint_arch", "follow_up_commands"]

logger = logging.getLogger("paddle_pale")


def parse_args(description, argv=None, evaluation=False):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", required=True, help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[],
                        metavar="Section.key=value",
                        help="override a config value (YAML syntax), repeatable")
    add_mismatch_flag(parser, "Global.pretrained")
    return parser.parse_args(argv)


def _overridden(overrides, section):
    """``{key: value}`` of the ``-o Section.key=value`` strings of ``section``."""
    found = {}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == section and len(keys) == 2:
            found[keys[1]] = value
    return found


def follow_up_commands(result, run_config):
    """The commands printed at the end of a run, each acting on this run's model and
    folder when pasted (``-c`` is the run's own resolved config)."""
    lines = [f"best val top-1: {result['best_top1']:.4f}"]
    if os.path.exists(result["best"] + ".pdparams"):
        export_prefix = os.path.join(os.path.dirname(result["best"]), "export", "model")
        lines += [f"best checkpoint: {result['best']}.pdparams",
                  f"evaluate it:  python tools/eval.py -c {run_config} "
                  f"-o Global.pretrained={result['best']}",
                  f"export it:    python tools/export.py inference --checkpoint "
                  f"{result['best']} --output {export_prefix}",
                  f"predict:      python tools/predict.py --model {export_prefix} IMAGE..."]
    lines += [f"latest checkpoint: {result['latest']}.pdparams",
              f"train longer: python tools/train.py -c {run_config} "
              f"-o Global.resume={result['latest']} -o Global.epochs=N",
              f"logs: {os.path.join(os.path.dirname(result['latest']), 'train.log')}"]
    return lines


def train_main(argv=None):
    from .engine import RUN_CONFIG_FILE, CheckpointSaveError, Engine

    args = parse_args("Train a Pale Transformer classifier.", argv)
    config = load_config(args.config, args.override)
    resume = config["Global"]["resume"]
    if resume and "output_dir" not in _overridden(args.override, "Global"):
        # a resumed run continues in its own folder, not in the config's output_dir
        config["Global"]["output_dir"] = os.path.dirname(strip_suffix(resume)) or "."
    engine = Engine(config, mode="train",
                    allow_mismatched_weights=args.allow_mismatched_weights)
    try:
        result = engine.train()
    except CheckpointSaveError as error:  # a full disk: the machine's state, not a bug
        raise SystemExit(f"train.py: error: {error.strerror}") from None
    if engine.rank == 0:
        if not result["already_trained"]:  # which the engine has said
            run_config = os.path.join(engine.output_dir, RUN_CONFIG_FILE)
            print("\n".join(follow_up_commands(result, run_config)))
    return result


def _model_default(name, key):
    """What variant ``name`` builds for argument ``key`` when the Arch omits it."""
    from ..models.registry import model_default
    return model_default(name, key)


def _same(a, b):
    plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return plain(a) == plain(b)


# Arch keys that change how the same weights predict, not which weights there are: an
# evaluation may switch them (token_inference: LV-ViT's rule on a token-labeling model)
INFERENCE_ARCH_KEYS = ("token_inference",)


def checkpoint_arch(config, overrides, allow_mismatched_weights=False):
    """The Arch to evaluate ``Global.pretrained`` with: the one recorded in its
    ``.pdstates`` (the model it was trained as), whatever the config file says. An
    ``-o Arch.key=value`` that contradicts the record is an error naming both (with
    ``allow_mismatched_weights`` it wins, for deliberate experiments); weights without
    a record are built as the config says, with a warning.

    Returns ``(arch, notes)``: ``notes`` are ``(level, message)`` to log once logging
    is set up."""
    path = config["Global"]["pretrained"]
    states = read_states(strip_suffix(path))
    recorded = None if states is None else states.get("arch")
    if not isinstance(recorded, dict) or not recorded.get("name"):
        if states is None and not (os.path.isfile(path)
                                   or os.path.exists(strip_suffix(path) + ".pdparams")):
            return config["Arch"], []  # no weights at all: the loader names the file
        return config["Arch"], [(logging.WARNING, (
            f"{path} has no .pdstates recording its architecture: building the config's "
            f"Arch ({', '.join(f'{k}={v}' for k, v in config['Arch'].items())}); if it was "
            f"trained with other Arch settings, pass them with -o Arch.key=value"))]
    requested = _overridden(overrides, "Arch")
    arch = dict(recorded)
    conflicts = []
    for key, value in requested.items():
        if key in INFERENCE_ARCH_KEYS:  # how the same weights predict: free to switch
            arch[key] = value
            continue
        stored = (recorded[key] if key in recorded
                  else _model_default(recorded["name"], key))
        if not _same(stored, value):
            conflicts.append(f"Arch.{key}={value!r} (the checkpoint was trained with "
                             f"{key}={stored!r})")
        arch[key] = value
    if conflicts and not allow_mismatched_weights:
        raise ConfigError(
            f"{path} was trained as {recorded['name']} with "
            + ", ".join(f"{k}={v!r}" for k, v in recorded.items() if k != "name")
            + f"; the command asks for {'; '.join(conflicts)}. Leave the -o Arch "
              "settings out to evaluate the model it is, or pass "
              "--allow_mismatched_weights to evaluate another model with these weights")
    differs = {k: v for k, v in recorded.items() if not _same(config["Arch"].get(k), v)}
    notes = []
    if differs and not requested:
        notes.append((logging.INFO, "building the checkpoint's architecture ("
                      + ", ".join(f"{k}={v}" for k, v in differs.items())
                      + "), not the config's"))
    return arch, notes


def eval_main(argv=None):
    from .engine import Engine

    args = parse_args("Evaluate a Pale Transformer classifier (top-k accuracy).", argv,
                      evaluation=True)
    config = load_config(args.config, args.override)
    if not config["Global"]["pretrained"]:
        raise ConfigError("tools/eval.py needs weights: -o Global.pretrained=PATH "
                          "(a checkpoint prefix such as output/best, or a .pdparams file)")
    config["Arch"], notes = checkpoint_arch(config, args.override,
                                            args.allow_mismatched_weights)
    engine = Engine(config, mode="eval",
                    allow_mismatched_weights=args.allow_mismatched_weights, notes=notes)
    metrics = engine.evaluate()
    if engine.rank == 0:
        topk = ", ".join(f"top{k} {metrics[f'top{k}']:.4f}" for k in config["Metric"]["topk"])
        logger.info("evaluated %s: %s, loss %.4f on %d images (%d unreadable skipped)",
                    config["Global"]["pretrained"], topk, metrics["loss"], metrics["count"],
                    metrics["skipped"])
        for k in config["Metric"]["topk"]:
            print(f"top{k}: {metrics[f'top{k}']:.4f}")
        print(f"loss: {metrics['loss']:.4f}  images: {metrics['count']}  "
              f"unreadable skipped: {metrics['skipped']}")
    return metrics
