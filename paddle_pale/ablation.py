"""Ablation runner: the same recipe trained once per attention mode and pale size, as in
Tables 5 and 6 of the paper, written as a markdown table, a CSV file and a bar chart.

One row is one training run (:class:`~.engine.Engine`) of the config with
``Arch.attention_mode`` and ``Arch.pale_size`` set, in its own folder
``OUTPUT/ROW`` (checkpoints, ``train.log``, ``row_config.yaml``, ``result.json``). A row
whose ``result.json`` was written for the same config is finished and never retrained;
an unfinished row resumes from its ``latest`` checkpoint when its config is unchanged.
Each row also records params and FLOPs (multiply-accumulates at the eval input size).
The images per second of inference and of a training step are measured on this machine
each time the runner is called, for all rows together in interleaved rounds (round r
times every row once, then round r + 1 starts) by the benchmark's own timer
(:func:`~.benchmark.run_benchmark`), so that the load of a shared machine hits all rows
alike. It sits above the engine and the benchmark in the package's layers.
"""
import copy
import csv
import json
import logging
import os
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from .benchmark import Case, run_benchmark
from .engine.builder import build_model
from .engine.config import load_config
from .kernels import use_cpu_kernels
from .models.attention import stage_sizes
from .models.modes import DEFAULT_MODE, MODES, get_mode
from .models.registry import model_default
from .utils.config import dump_config
from .utils.flops import attention_macs, count_params, format_macs
from .utils.io import load_weights, read_states
from .utils.log import setup_logging
from .utils.plotting import pyplot

__all__ = ["plan_rows", "parse_pale_size", "run_ablation", "throughput_steps",
           "measure_rows", "write_results", "markdown", "COLUMNS"]

logger = logging.getLogger("paddle_pale")

# CSV columns, in order
COLUMNS = ("row", "tables", "mode", "pale_size", "stripe_width", "top1", "best_top1", "params",
           "macs", "attention_macs", "infer_images_per_s", "train_images_per_s",
           "train_seconds", "epochs")
RESULT_FILE = "result.json"
ROW_CONFIG_FILE = "row_config.yaml"


def parse_pale_size(text):
    """``"7"`` -> 7, ``"3x5"`` -> ``[3, 5]`` (s_r x s_c), ``"1,3,5,7"`` -> one per stage
    (checked by the model's own parser, :func:`~paddle_pale.models.attention.stage_sizes`)."""
    def entry(part):
        if "x" in part:
            s_r, s_c = part.split("x")
            return [int(s_r), int(s_c)]
        return int(part)
    try:
        value = [entry(part) for part in text.split(",")] if "," in text else entry(text)
        stage_sizes(value)
        return value
    except ValueError:
        raise ValueError(f"a pale size is an int (7), a pair s_r x s_c (3x5) or one per "
                         f"stage (1,3,5,7); got {text!r}") from None


def _size_label(size):
    """Folder-name form: ``7``, ``3x5`` (a pair), ``1-3-5-7`` (one per stage)."""
    if not isinstance(size, (list, tuple)):
        return str(size)
    if len(size) == 2 and all(isinstance(s, int) for s in size):
        return "x".join(map(str, size))
    return "-".join(_size_label(s) for s in size)


def _config_pale_size(arch):
    """The pale size the config trains with: its own, the variant's, or the model's."""
    if arch.get("pale_size") is not None:
        return arch["pale_size"]
    return model_default(arch["name"], "pale_size")


def plan_rows(arch, modes=None, pale_sizes=None):
    """The runs of one ablation: one row per mode in ``modes`` at the config's pale size
    (Table 6) and one per size in ``pale_sizes`` with the config's mode (Table 5); a row
    in both is trained once. ``cross_shaped`` and ``axial`` ignore the pale size. With
    neither, the config's own mode and size.

    Returns dicts with ``row`` (the folder name), ``mode``, ``pale_size`` (None for the
    modes that ignore it), ``tables`` (``"modes"``, ``"pale_sizes"``) and ``positions``
    (the row's place in each table: the order of the command line).
    """
    mode = arch.get("attention_mode", DEFAULT_MODE)
    size = _config_pale_size(arch)
    wanted = [(m, size, "modes") for m in (modes or [])]
    wanted += [(mode, s, "pale_sizes") for s in (pale_sizes or [])]
    if not wanted:
        wanted = [(mode, size, "modes")]
    rows = {}
    counts = {}
    for row_mode, row_size, table in wanted:
        if row_mode not in MODES:
            raise ValueError(f"unknown attention mode {row_mode!r}; valid: {', '.join(MODES)}")
        # a mode whose region is not the pale size: one row whatever --pale-sizes says
        if get_mode(row_mode).size_arg != "pale_size":
            name, row_size = row_mode, None
        else:
            name = f"{row_mode}_s{_size_label(row_size)}"
        row = rows.setdefault(name, {"row": name, "mode": row_mode, "pale_size": row_size,
                                     "tables": [], "positions": {}})
        if table not in row["tables"]:
            row["tables"].append(table)
            row["positions"][table] = counts[table] = counts.get(table, -1) + 1
    return list(rows.values())


def _row_overrides(row, row_dir):
    # a resume of the recipe's own would start every row from one checkpoint: rows
    # resume only their own (see _run_row)
    overrides = [f"Arch.attention_mode={row['mode']}", f"Global.output_dir={row_dir}",
                 "Global.resume=null"]
    if row["pale_size"] is not None:
        overrides.append(f"Arch.pale_size={json.dumps(row['pale_size'])}")
    return overrides


def throughput_steps(model, input_size, batch, num_classes):
    """``(infer, train_step)``: closures that run ``model`` on random ``[batch, 3, H, W]``
    images, an eval forward without gradients, and forward + cross-entropy backward +
    AdamW step on a copy of the model (its own weights are left as they are)."""
    images = paddle.randn([batch, 3, *input_size])
    model.eval()

    def infer():
        with paddle.no_grad():
            model(images)

    trainee = copy.deepcopy(model)
    trainee.train()
    params = [p for p in trainee.parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=params)
    labels = paddle.randint(0, max(num_classes, 1), [batch])

    def train_step():
        loss = F.cross_entropy(trainee(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    return infer, train_step


def measure_rows(results, configs, batch, repeats=3):
    """Set ``infer_images_per_s`` and ``train_images_per_s`` of every result: the median
    over ``repeats`` interleaved rounds (each round times every row's inference and
    training step once, after one warm-up round). Each row's model is built from its
    config with its trained weights, in the form the trainer used (the CPU kernels on
    CPU)."""
    device = paddle.device.get_device()
    cases = []
    for result, config in zip(results, configs):
        model = build_model(config["Arch"])
        weights = os.path.join(config["Global"]["output_dir"], "latest.pdparams")
        if os.path.isfile(weights):
            load_weights(model, weights, exact=True)
        if device == "cpu":
            use_cpu_kernels(model)
        size = config["DataLoader"]["Eval"]["transforms"]["input_size"]
        cases.append(throughput_steps(model, (size, size), batch, model.num_classes))
    timed = run_benchmark([Case(str(index), None, infer, train_step)
                           for index, (infer, train_step) in enumerate(cases)],
                          batch, rounds=repeats, warmup=0)  # the first call warms up
    rate = {(row["name"], row["mode"]): row["images_per_s"] for row in timed}
    for index, result in enumerate(results):
        result.update(infer_images_per_s=rate[(str(index), "infer")],
                      train_images_per_s=rate[(str(index), "train")],
                      measure_batch=batch, measure_rounds=repeats, measure_device=device)
    return results


def _write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # a row is finished or not, never half-written


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _run_row(row, config, row_dir):
    from .engine import Engine

    fingerprint = dump_config(config)
    os.makedirs(row_dir, exist_ok=True)
    config_path = os.path.join(row_dir, ROW_CONFIG_FILE)
    previous = None
    if os.path.isfile(config_path):
        with open(config_path) as f:
            previous = f.read()
    latest = os.path.join(row_dir, "latest")
    if previous == fingerprint and read_states(latest) is not None:  # a whole save
        logger.info("row %s: resuming from %s", row["row"], latest)
        config = copy.deepcopy(config)
        config["Global"]["resume"] = latest
    elif previous is not None and previous != fingerprint:
        logger.warning("row %s: the config changed since its last run; training it afresh",
                       row["row"])
    if not config["Global"]["resume"]:
        # the row's folder is the sweep's own: a fresh row replaces what a run of another
        # config left there (said above)
        config = copy.deepcopy(config)
        config["Global"]["overwrite"] = True
    with open(config_path, "w") as f:
        f.write(fingerprint)
    tic = time.time()
    engine = Engine(config, mode="train")
    start_epoch = engine.start_epoch
    engine.train()
    seconds = time.time() - tic
    final = engine.evaluate()  # the weights after the last epoch
    plain = build_model(config["Arch"])  # FLOPs of the stock layers (the CPU kernels fuse)
    size = config["DataLoader"]["Eval"]["transforms"]["input_size"]
    macs, attention = attention_macs(plain, (size, size))
    model = engine.model
    return {
        "row": row["row"], "mode": row["mode"], "tables": row["tables"],
        "positions": row["positions"],
        "pale_size": [list(s) for s in model.pale_sizes],
        "stripe_width": [list(s) for s in model.stripe_widths],
        "top1": final["top1"], "best_top1": engine.best_top1,
        "params": count_params(plain), "macs": macs, "attention_macs": attention,
        "train_seconds": seconds, "epochs": config["Global"]["epochs"],
        "resumed_from_epoch": start_epoch, "device": engine.device, "config": fingerprint,
    }


def run_ablation(config_path, overrides=(), modes=None, pale_sizes=None, output_dir=None,
                 batch=None, repeats=3, title=None):
    """Train every row of :func:`plan_rows` that is not finished, then write
    ``ablation.md``, ``ablation.csv`` and ``ablation.png`` into ``output_dir`` (default:
    ``Global.output_dir/ablation``).

    Args:
        config_path, overrides: the recipe, as for ``tools/train.py``.
        modes: attention modes, one row each at the config's pale size (Table 6).
        pale_sizes: pale sizes (ints, pairs or per-stage lists), one row each with the
            config's attention mode (Table 5). See :func:`plan_rows`.
        batch: images per timed batch (default: ``DataLoader.Train.batch_size``).
        repeats: interleaved timing rounds (the img/s are their medians).

    Returns:
        ``(results, paths)``: one dict per row (see :data:`COLUMNS`), and the files
        written.
    """
    base = load_config(config_path, list(overrides))
    output_dir = output_dir or os.path.join(base["Global"]["output_dir"], "ablation")
    batch = batch or base["DataLoader"]["Train"]["batch_size"]
    rows = plan_rows(base["Arch"], modes, pale_sizes)
    results, configs = [], []
    for index, row in enumerate(rows):
        # the runner's own lines (each Engine logs to its row's train.log)
        setup_logging(0, os.path.join(output_dir, "ablation.log"))
        row_dir = os.path.join(output_dir, row["row"])
        config = load_config(config_path, list(overrides) + _row_overrides(row, row_dir))
        configs.append(config)
        result_path = os.path.join(row_dir, RESULT_FILE)
        done = _read_json(result_path)
        if done is not None and done.get("config") == dump_config(config):
            logger.info("row %d/%d %s: finished before (%s), not retrained", index + 1,
                        len(rows), row["row"], result_path)
            results.append(dict(done, tables=row["tables"], positions=row["positions"]))
            continue
        logger.info("row %d/%d %s: training", index + 1, len(rows), row["row"])
        result = _run_row(row, config, row_dir)
        _write_json(result_path, result)
        results.append(result)
    setup_logging(0, os.path.join(output_dir, "ablation.log"))
    logger.info("measuring images/s of %d row(s): batch %d, %d interleaved round(s)",
                len(rows), batch, repeats)
    measure_rows(results, configs, batch, repeats)
    for result, config in zip(results, configs):
        _write_json(os.path.join(config["Global"]["output_dir"], RESULT_FILE), result)
    paths = write_results(results, output_dir, title)
    logger.info("ablation of %d row(s) written: %s", len(results), ", ".join(paths))
    return results, paths


def _region_text(result):
    if result["mode"] == "axial":
        return "1 line"
    if result["mode"] == "cross_shaped":
        return "stripes " + " ".join(_pair_text(s) for s in result["stripe_width"])
    return " ".join(_pair_text(s) for s in result["pale_size"])


def _pair_text(pair):
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def markdown_table(results):
    """The Table-5/6-shaped markdown table of ``results``."""
    lines = ["| attention mode | pale size / region per stage | top-1 (%) | best top-1 (%) "
             "| params | FLOPs | infer img/s | train img/s | train time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['mode']} | {_region_text(r)} | {100 * r['top1']:.2f} | "
            f"{100 * r['best_top1']:.2f} | {r['params'] / 1e6:.2f}M | {format_macs(r['macs'])} "
            f"| {r['infer_images_per_s']:.1f} | {r['train_images_per_s']:.1f} | "
            f"{r['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


SECTIONS = (("modes", "Attention modes (Table 6)"), ("pale_sizes", "Pale sizes (Table 5)"))


def markdown(results, title=None):
    """``ablation.md``: one table, or one per table of the paper when the rows came
    from both ``modes`` and ``pale_sizes``."""
    parts = [title] if title else []
    sections = [(heading, sorted((r for r in results if key in r.get("tables", ["modes"])),
                                 key=lambda r, key=key: r.get("positions", {}).get(key, 0)))
                for key, heading in SECTIONS]
    sections = [(heading, rows) for heading, rows in sections if rows]
    if len(sections) == 1:
        parts.append(markdown_table(sections[0][1]))
    else:
        for heading, rows in sections:
            parts += [f"### {heading}", markdown_table(rows)]
    measured = results[0] if results else {}
    if "measure_batch" in measured:
        parts.append(f"top-1: after the last epoch (best: the best of the validations "
                     f"during training); img/s: batch {measured['measure_batch']}, median "
                     f"of {measured['measure_rounds']} interleaved round(s) over all rows on "
                     f"{measured['measure_device']}; train time: wall time of the row's "
                     f"training.")
    return "\n\n".join(parts) + "\n"


def write_results(results, output_dir, title=None):
    """Write ``ablation.md``, ``ablation.csv`` and ``ablation.png``; returns the paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, f"ablation.{ext}") for ext in ("md", "csv", "png")]
    with open(paths[0], "w") as f:
        f.write(markdown(results, title))
    with open(paths[1], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow(dict(r, tables=" ".join(r.get("tables", ["modes"])),
                                 pale_size=json.dumps(r["pale_size"]),
                                 stripe_width=json.dumps(r["stripe_width"])))
    bar_chart(results, paths[2], title)
    return paths


def bar_chart(results, path, title=None):
    """Top-1 per row (bars annotated with params and FLOPs) beside the measured images
    per second of inference and of a training step."""
    plt = pyplot()
    labels = [f"{r['mode']}\n{_region_text(r)}" for r in results]
    positions = np.arange(len(results))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.6 * len(results) + 1.8),
                                         gridspec_kw={"width_ratios": [3, 2]})
    top1 = [100 * r["top1"] for r in results]
    start = max(0.0, 10 * np.floor(min(top1) / 10) - 10)
    left.barh(positions, top1, color="#a6bddb")
    for y, r, value in zip(positions, results, top1):
        left.text(start, y, f"  {value:.2f}%   {r['params'] / 1e6:.2f}M params, "
                            f"{format_macs(r['macs'])} MACs", va="center", fontsize=8,
                  color="black")
    left.set_xlim(start, 100)
    left.set_yticks(positions, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("top-1 (%), last epoch")
    height = 0.38
    right.barh(positions - height / 2, [r["infer_images_per_s"] for r in results], height,
               label="inference", color="#55a868")
    right.barh(positions + height / 2, [r["train_images_per_s"] for r in results], height,
               label="training step", color="#c44e52")
    right.set_yticks(positions, [""] * len(results))
    right.invert_yaxis()
    right.set_xlabel("images / s (this machine)")
    right.legend(fontsize=8, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
