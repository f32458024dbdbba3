"""Side-by-side speed and memory benchmark of Pale-T and its peers, in one process.

Every case is timed in interleaved rounds (round r runs case 1, case 2, ..., then round
r + 1 starts again), so a noisy neighbour on the machine slows all cases alike; the
figure reported is the median over rounds. Cases:

* ``pale_t`` (eager, with :func:`paddle_pale.kernels.use_cpu_kernels` on CPU),
  ``pale_t/plain`` (eager, the model as built) and
  ``pale_t/predictor`` (the plain model exported with ``paddle.jit.save`` and run by a
  Paddle Inference predictor): the backbone, ``forward_pyramid`` (4 normed NCHW maps),
* ``swin_t``: PaddleSeg's ``SwinTransformer_tiny_patch4_window7_224`` backbone, which
  returns the same 4 normed NCHW maps (so both run without a classifier),
* ``cswin_t``: CSWin-T (:mod:`paddle_pale.peers`, written from the CSWin paper for this
  benchmark), the same 4 normed NCHW maps; ``swin_t`` and ``cswin_t`` also as
  predictors (fixed-size exports), like ``pale_t``,
* ``ps_attention`` cores at the stage-1 shape (56x56x64, 2 heads at 224 input): the
  public ``pale_attention``, the CPU kernel's form of it (queries scaled in the
  projection, softmax in place), paddle's ``scaled_dot_product_attention`` on the same
  groups, and the naive masked reference.

FLOP figures are multiply-accumulates (the paper's convention) for FLOPs columns and
2 x MACs for GFLOP/s, the convention of the matmul figure beside them.

:func:`cost_estimate` is the device-independent side: FLOPs and bytes moved per image of
each model's static program (the exported forward, and the training step's forward +
backward), per op type, and a roofline **estimate** of GPU time on named devices
(:mod:`paddle_pale.utils.program_cost`), with and without flash attention.
"""
import copy
import json
import os
import statistics
import tempfile
import time
from collections import OrderedDict

import numpy as np
import paddle
import paddle.nn.functional as F

from .export import static_model
from .inference import create_predictor, default_cpu_threads, run_predictor
from .kernels import native, use_cpu_kernels
from .models.attention import (pale_attention, pale_attention_halves, pale_attention_macs,
                               split_halves)
from .models.attention_reference import naive_pale_attention
from .models.pale import PaleAttention
from .models.registry import create_model
from .peers import cswin_t
from .utils import program_cost
from .utils.flops import count_flops

__all__ = ["Case", "MODEL_CASES", "parse_case", "model_cases", "attention_cases",
           "run_benchmark", "matmul_gflops", "best_predictors", "format_report",
           "attention_score_elements", "resolution_sweep", "MemoryMeter", "cost_estimate",
           "format_cost_estimate", "ESTIMATE_MODELS", "MODELS", "PEERS", "eager_ratios"]


# ----------------------------------------------------------------------------- memory
class MemoryMeter:
    """Peak memory of a block of code: max allocated on GPU, peak RSS on CPU (Linux).

    On CPU the kernel's peak-RSS counter (VmHWM) is reset through
    ``/proc/self/clear_refs`` before the block, so each case gets its own peak.
    """

    def __init__(self):
        self.on_gpu = paddle.device.get_device().startswith("gpu")
        self.kind = "max_allocated" if self.on_gpu else "peak_rss"

    @staticmethod
    def _status(field):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} missing from /proc/self/status")

    def start(self):
        if self.on_gpu:
            paddle.device.cuda.reset_max_memory_allocated()
            self.base = paddle.device.cuda.memory_allocated()
            return
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.base = self._status("VmRSS")
        except OSError:  # not Linux: no per-case peak available
            self.base = None

    def stop(self):
        """``(peak_bytes, peak_minus_start_bytes)``; ``(None, None)`` where unknown."""
        if self.on_gpu:
            peak = paddle.device.cuda.max_memory_allocated()
        elif self.base is None:
            return None, None
        else:
            peak = self._status("VmHWM")
        return peak, peak - self.base


# ----------------------------------------------------------------------------- cases
class Case:
    """One benchmarked thing: ``infer()`` / ``train()`` each run one batch.

    Args:
        name: row label.
        macs: multiply-accumulates per image (None: unknown, no GFLOP/s reported).
        infer: callable running one inference batch, or None.
        train: callable running one training step (forward, backward, optimizer), or None.
        group: ``"model"`` or ``"attention"``; ratios are taken within a group.
    """

    def __init__(self, name, macs, infer=None, train=None, group="model"):
        self.name, self.macs, self.group = name, macs, group
        self.modes = OrderedDict((mode, fn) for mode, fn in (("infer", infer), ("train", train))
                                 if fn is not None)


def _sync():
    if paddle.device.get_device().startswith("gpu"):
        paddle.device.synchronize()


class _Pyramid(paddle.nn.Layer):
    """Exports ``forward_pyramid`` as the forward of a layer."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.forward_pyramid(x)


def _train_step(model, forward, images):
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=model.parameters())

    def step():
        model.train()
        loss = paddle.add_n([out.mean() for out in forward(images)])
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    return step


def _infer(model, forward, images):
    def run():
        model.eval()
        with paddle.no_grad():
            forward(images)
    return run


def build_predictor(layer, fixed_size, directory, threads=None, onednn=True):
    """Export ``layer`` with :func:`paddle_pale.export.static_model` (any batch; H and W
    fixed to ``fixed_size``, or any size when None) and load it with Paddle Inference,
    configured as the predict tool's (:func:`paddle_pale.inference.create_predictor`)."""
    prefix = os.path.join(directory, "model")
    paddle.jit.save(static_model(layer, None if fixed_size is None else tuple(fixed_size)),
                    prefix)
    device = "gpu" if paddle.device.get_device().startswith("gpu") else "cpu"
    return create_predictor(prefix, device, threads, onednn=onednn)


def _predictor_infer(predictor, images):
    array = images.numpy()
    threads = default_cpu_threads()

    def run():
        run_predictor(predictor, array)
        # a predictor's run leaves the calling thread's math library at 1 thread (Paddle
        # 3.3.1; a 1024^3 matmul then takes 2x as long): give eager cases theirs back
        paddle.base.core.set_num_threads(threads)
    return run


def _swin_macs(model, size):
    """Swin MACs: conv/linear layers by hook, plus 2 N^2 C per window attention."""
    from paddleseg.models.backbones.swin_transformer import WindowAttention

    def window_macs(layer, inputs, output):
        windows, tokens, channels = inputs[0].shape
        return 2 * windows * tokens * tokens * channels

    total, _ = count_flops(model, (3, *size), extra_counters=((WindowAttention, window_macs),))
    return total


MODEL_CASES = ("pale_t", "pale_t/plain", "swin_t", "cswin_t", "pale_t/predictor",
               "swin_t/predictor", "cswin_t/predictor", "pale_t/predictor+onednn",
               "swin_t/predictor+onednn", "cswin_t/predictor+onednn",
               "pale_t/predictor-any-size+onednn")
# the models of the cases: Pale-T and its peers
MODELS = ("pale_t", "swin_t", "cswin_t")
PEERS = MODELS[1:]


def parse_case(name):
    """``"MODEL[/predictor[-any-size]][+onednn]"`` or ``"pale_t/plain"`` (eager, as built:
    no CPU kernels) -> ``(model, predictor, any_size, onednn)``; ValueError for anything
    else."""
    if name == "pale_t/plain":
        return "pale_t", False, False, False
    model, _, rest = name.partition("/")
    predictor = rest.split("+")[0]
    onednn = rest.endswith("+onednn")
    if model not in MODELS or predictor not in ("", "predictor", "predictor-any-size") or (
            onednn and not predictor) or rest.count("+") > int(onednn):
        raise ValueError(f"unknown model case {name!r}; expected MODEL, MODEL/predictor, "
                         f"MODEL/predictor+onednn or pale_t/predictor-any-size[+onednn] "
                         f"with MODEL one of {', '.join(MODELS)}")
    if model == "swin_t" and predictor == "predictor-any-size":
        raise ValueError("swin_t exports only with a fixed size: PaddleSeg's Swin pads "
                         "with F.pad amounts computed in Python from H and W")
    if model == "cswin_t" and predictor == "predictor-any-size":
        raise ValueError("cswin_t exports only with a fixed size: its stripes are "
                         "reshapes by the stripe counts, computed in Python from H and W")
    return model, bool(predictor), predictor.endswith("any-size"), onednn


def _build_model(model_name, model_overrides):
    """The backbone of a model. ``model_overrides``: keyword arguments of Pale-T's
    ``create_model``, and under the key ``"cswin_t"`` those of :func:`cswin_t`
    (Swin-T takes none)."""
    overrides = dict(model_overrides or {})
    cswin_overrides = overrides.pop("cswin_t", None) or {}
    if model_name == "pale_t":
        return create_model("pale_t", with_classifier=False, **overrides)
    if model_name == "cswin_t":
        return cswin_t(**cswin_overrides)
    from paddleseg.models.backbones.swin_transformer import \
        SwinTransformer_tiny_patch4_window7_224
    # no stochastic depth: Pale-T runs without it too
    return SwinTransformer_tiny_patch4_window7_224(drop_path_rate=0.0)


def model_cases(batch, size, names=MODEL_CASES, train=True, workdir=None,
                model_overrides=None):
    """Cases for the full backbones (see :func:`parse_case` for the names); predictors are
    exported from the plain model, eager Pale-T runs with the CPU kernels on CPU.
    ``model_overrides`` shrink Pale for smoke tests."""
    images = paddle.randn([batch, 3, *size])
    on_gpu = paddle.device.get_device().startswith("gpu")
    cases = []
    for name in names:
        model_name, predictor, any_size, onednn = parse_case(name)
        try:
            model = _build_model(model_name, model_overrides)
        except ImportError as error:
            print(f"skipping {name}: paddleseg is not importable ({error})")
            continue
        if model_name == "pale_t":
            forward = model.forward_pyramid
            macs, _ = count_flops(model, (3, *size), forward=lambda m, x: m.forward_pyramid(x))
        elif model_name == "cswin_t":
            # conv / linear layers by hook, plus each attention layer's functional_macs
            # (QK^T and AV within its stripes, and LePE)
            forward, macs = model, count_flops(model, (3, *size))[0]
        else:
            forward, macs = model, _swin_macs(model, size)
        if predictor:
            layer = _Pyramid(model) if model_name == "pale_t" else model
            directory = tempfile.mkdtemp(dir=workdir)
            built = build_predictor(layer, None if any_size else size, directory,
                                    onednn=onednn)
            cases.append(Case(name, macs, _predictor_infer(built, images)))
            continue
        if model_name == "pale_t" and not on_gpu and name != "pale_t/plain":
            use_cpu_kernels(model)
        cases.append(Case(name, macs, _infer(model, forward, images),
                          _train_step(model, forward, images) if train else None))
    return cases


def _attention_train(fn, tensors):
    def step():
        for tensor in tensors:
            tensor.stop_gradient = False
            tensor.clear_gradient()
        fn(*tensors).sum().backward()
    return step


def _attention_infer(fn, tensors):
    def run():
        with paddle.no_grad():
            fn(*tensors)
    return run


def attention_cases(batch, size, train=True, naive=True, channels=64, num_heads=2,
                    pale_size=7):
    """PS-Attention cores at the stage-1 shape of a ``size`` input (stride 4)."""
    height, width = size[0] // 4, size[1] // 4
    layer = PaleAttention(channels, num_heads, pale_size)
    layer.eval()
    x = paddle.randn([batch, height, width, channels])
    with paddle.no_grad():
        q, k, v = (t.contiguous() for t in layer.qkv_projection(x))
    macs = pale_attention_macs(height, width, channels, pale_size)
    scale = (channels // num_heads) ** -0.5
    funcs = OrderedDict()
    funcs["ps_attention/public"] = lambda q, k, v: pale_attention(q, k, v, num_heads, pale_size)
    funcs["ps_attention/cpu"] = lambda q, k, v: pale_attention_halves(
        *split_halves(q * scale, k, v), num_heads, pale_size, query_scale=1.0,
        softmax=F.softmax_)
    if height % pale_size == 0 and width % pale_size == 0:  # sdpa takes no padding mask
        funcs["ps_attention/sdpa"] = lambda q, k, v: pale_attention_halves(
            *split_halves(q, k, v), num_heads, pale_size, backend="sdpa")
    if naive:
        funcs["ps_attention/naive"] = lambda q, k, v: naive_pale_attention(
            q, k, v, num_heads, pale_size)
    return [Case(name, macs, _attention_infer(fn, (q, k, v)),
                 _attention_train(fn, [t.clone() for t in (q, k, v)]) if train else None,
                 group="attention") for name, fn in funcs.items()]


# ----------------------------------------------------------------------------- timing
def matmul_gflops(n=1024, repeats=5):
    """fp32 GFLOP/s (2 n^3 per product) of one n x n matmul, median of ``repeats``."""
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    paddle.matmul(a, b)
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        paddle.matmul(a, b)
        _sync()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn, iters, clock):
    _sync()
    start = clock()
    for _ in range(iters):
        fn()
    _sync()
    return (clock() - start) / iters


def run_benchmark(cases, batch, rounds=3, warmup=1, iters=1, clock="wall"):
    """Time every case and mode in interleaved rounds; measure peak memory once each.

    ``clock="cpu"`` times with the process CPU time instead of the wall clock: with one
    thread (``OMP_NUM_THREADS=1``) it counts the work done, whatever else the machine
    runs, which makes before/after comparisons on a shared machine stable. Not for
    several threads (idle threads spin) nor for the predictor's own thread pool.

    Returns a list of dicts: name, group, mode, images_per_s, ms_per_batch (median),
    round_ms (all rounds), peak_mb, peak_growth_mb (peak minus memory at the start),
    gmacs_per_image, achieved_gflops.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if rounds < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, iters >= 1, warmup >= 0; got rounds={rounds}, "
                         f"iters={iters}, warmup={warmup}")
    meter = MemoryMeter()
    results = OrderedDict()
    for case in cases:
        for mode, fn in case.modes.items():
            meter.start()
            fn()  # first call: builds kernels and caches, measures peak memory
            _sync()
            peak, growth = meter.stop()
            for _ in range(warmup):
                fn()
            results[(case.name, mode)] = dict(
                name=case.name, group=case.group, mode=mode, round_ms=[],
                peak_mb=None if peak is None else peak / 2 ** 20,
                peak_growth_mb=None if growth is None else growth / 2 ** 20,
                gmacs_per_image=None if case.macs is None else case.macs / 1e9)
    for _ in range(rounds):
        for case in cases:
            for mode, fn in case.modes.items():
                results[(case.name, mode)]["round_ms"].append(
                    _time(fn, iters, CLOCKS[clock]) * 1e3)
    rows = []
    for row in results.values():
        row["ms_per_batch"] = statistics.median(row["round_ms"])
        row["images_per_s"] = batch / row["ms_per_batch"] * 1e3
        gmacs = row["gmacs_per_image"]
        row["achieved_gflops"] = None if gmacs is None else 2 * gmacs * row["images_per_s"]
        rows.append(row)
    return rows


def _add_ratios(rows, reference_by_group):
    """``speedup``: images/s over the group's reference case in the same mode."""
    for row in rows:
        reference = reference_by_group.get(row["group"])
        base = next((r for r in rows if r["name"] == reference and r["mode"] == row["mode"]),
                    None)
        row["speedup_vs"] = reference if base else None
        row["speedup"] = row["images_per_s"] / base["images_per_s"] if base else None


# ----------------------------------------------------------------------------- memory growth
def attention_score_elements(model, size, batch=1):
    """Largest attention score tensor (elements) of a Pale forward at ``size``, and the
    one a naive global-attention implementation would need, both from the shapes.

    Stage i runs at stride 4 * 2^i (convs with padding k // 2 round up).
    """
    height, width = size
    largest, naive = 0, 0
    for stage_index, stage in enumerate(model.stages):
        height, width = -(-height // (4 if stage_index == 0 else 2)), \
            -(-width // (4 if stage_index == 0 else 2))
        for block in stage:
            attn = block.attn
            largest = max(largest, attn.mode.score_elements(
                batch, attn.num_heads, height, width, attn.region, attn.block_index))
            heads = attn.mode.head_groups(attn.num_heads)[0][1]  # heads of one region
            naive = max(naive, batch * len(heads) * (height * width) ** 2)
    return largest, naive


def resolution_sweep(sizes=(224, 448, 896), batch=1, names=("pale_t", "swin_t"),
                     rounds=1, model_overrides=None):
    """Inference time and peak-memory growth per input size, plus score tensor sizes."""
    rows = []
    for size in sizes:
        cases = model_cases(batch, (size, size), names=names, train=False,
                            model_overrides=model_overrides)
        for row in run_benchmark(cases, batch, rounds=rounds, warmup=0):
            if row["name"] == "pale_t":
                model = create_model("pale_t", with_classifier=False,
                                     **(model_overrides or {}))
                pale, naive = attention_score_elements(model, (size, size), batch)
                row["max_score_elements"], row["naive_score_elements"] = pale, naive
            row["size"] = size
            rows.append(row)
        del cases
    return rows


# ----------------------------------------------------------------------------- report
def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def best_predictors(rows):
    """The fastest exported-program case of each model (fixed-size exports, which every
    model has) and Pale-T's ratios over its peers: ``{"pale_t": row, "swin_t": row,
    "cswin_t": row, "ratios": {"swin_t": float, "cswin_t": float}, "ratio": float}``
    (``ratio``: over Swin-T, the reference); a model without a predictor case has row
    None and no ratio."""
    best = {}
    for model in MODELS:
        candidates = [row for row in rows if row["mode"] == "infer"
                      and row["name"].startswith(model + "/predictor")
                      and not parse_case(row["name"])[2]]
        best[model] = max(candidates, key=lambda r: r["images_per_s"], default=None)
    best["ratios"] = OrderedDict(
        (peer, best["pale_t"]["images_per_s"] / best[peer]["images_per_s"])
        for peer in PEERS if best["pale_t"] and best[peer])
    if "swin_t" in best["ratios"]:
        best["ratio"] = best["ratios"]["swin_t"]
    return best


def eager_ratios(rows, peer="cswin_t"):
    """``{mode: float}``: eager Pale-T's images/s over eager ``peer``'s, per mode both
    ran (the ``speedup`` column is over Swin-T)."""
    by_case = {(row["name"], row["mode"]): row for row in rows}
    return OrderedDict(
        (mode, by_case[("pale_t", mode)]["images_per_s"] / by_case[(peer, mode)]["images_per_s"])
        for mode in ("infer", "train") if ("pale_t", mode) in by_case
        and (peer, mode) in by_case)


def format_report(report):
    """Plain-text tables of a :func:`benchmark` report."""
    lines = [f"device {report['device']}  threads {report['threads']}  batch {report['batch']}"
             f"  input {report['size'][0]}x{report['size'][1]}  rounds {report['rounds']}"
             f"  clock {report['clock']}  stride kernels {report.get('stride_kernels')}"
             f"  malloc tuned {bool(report.get('malloc_tuned'))}"
             f"  native CPU kernels {report.get('native_kernels')}",
             f"fp32 matmul 1024^3: {report['matmul_gflops']:.1f} GFLOP/s",
             "",
             f"{'case':<34}{'mode':<7}{'img/s':>9}{'ms/batch':>10}{'speedup':>9}  "
             f"{'vs':<20}{'GMACs/img':>10}{'GFLOP/s':>9}{'%matmul':>8}{'peak MB':>9}"
             f"{'+MB':>8}"]
    for row in report["results"]:
        share = None if row["achieved_gflops"] is None else \
            100 * row["achieved_gflops"] / report["matmul_gflops"]
        lines.append(
            f"{row['name']:<34}{row['mode']:<7}{row['images_per_s']:>9.2f}"
            f"{row['ms_per_batch']:>10.1f}{_fmt(row['speedup'], '.2f'):>9}  "
            f"{row['speedup_vs'] or '-':<20}{_fmt(row['gmacs_per_image'], '.3f'):>10}"
            f"{_fmt(row['achieved_gflops'], '.1f'):>9}{_fmt(share, '.0f'):>8}"
            f"{_fmt(row['peak_mb'], '.0f'):>9}{_fmt(row['peak_growth_mb'], '.0f'):>8}")
    best = best_predictors(report["results"])
    if best["ratios"]:
        lines += ["", f"best CPU predictor (fixed-size export): pale_t "
                      f"{best['pale_t']['images_per_s']:.2f} img/s ({best['pale_t']['name']})"]
        lines += [f"  over {peer} {best[peer]['images_per_s']:.2f} img/s ({best[peer]['name']}): "
                  f"{ratio:.2f}x" for peer, ratio in best["ratios"].items()]
    eager = eager_ratios(report["results"])
    if eager:
        lines += ["", "eager pale_t over eager cswin_t: " + ", ".join(
            f"{mode} {ratio:.2f}x" for mode, ratio in eager.items())]
    if report.get("sweep"):
        lines += ["", f"resolution sweep (inference, batch {report['sweep_batch']}; "
                  "+MB: peak RSS growth during one forward; scores: largest attention score "
                  "tensor, elements)",
                  f"{'case':<12}{'size':>6}{'ms/img':>10}{'+MB':>8}{'scores':>14}"
                  f"{'naive scores':>16}"]
        for row in report["sweep"]:
            lines.append(
                f"{row['name']:<12}{row['size']:>6}{1e3 / row['images_per_s']:>10.1f}"
                f"{_fmt(row['peak_growth_mb'], '.0f'):>8}"
                f"{_fmt(row.get('max_score_elements'), ',d'):>14}"
                f"{_fmt(row.get('naive_score_elements'), ',d'):>16}")
    return "\n".join(lines)


def benchmark(batch=8, size=(224, 224), models=MODEL_CASES,
              attention=True, naive=True, train=True, rounds=3, warmup=1, iters=1,
              sweep=(), sweep_batch=1, model_overrides=None, clock="wall", malloc_tuned=None):
    """Run the whole benchmark; return a JSON-ready dict (see :func:`format_report`).

    ``malloc_tuned``: the allocator settings the caller applied (``configure_cpu()["malloc"]``),
    recorded with the figures."""
    with tempfile.TemporaryDirectory() as workdir:
        cases = model_cases(batch, size, models, train, workdir, model_overrides)
        if attention:
            cases += attention_cases(batch, size, train, naive)
        matmul = matmul_gflops()
        results = run_benchmark(cases, batch, rounds, warmup, iters, clock)
    _add_ratios(results, {"model": "swin_t" if "swin_t" in models else None,
                          "attention": "ps_attention/naive" if naive else None})
    report = OrderedDict(
        device=paddle.device.get_device(), threads=os.environ.get("OMP_NUM_THREADS"),
        mkl_debug_cpu_type=os.environ.get("MKL_DEBUG_CPU_TYPE"),
        stride_kernels=paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"],
        malloc_tuned=malloc_tuned, batch=batch,
        # whether use_cpu_kernels ran the C++ kernels (False: Paddle's, or no eager Pale-T
        # case ran; see kernels.native): asked without starting a build
        native_kernels=native.native_kernels_loaded(),
        size=list(size), rounds=rounds, iters=iters, clock=clock, memory=MemoryMeter().kind,
        matmul_gflops=matmul, results=results, sweep_batch=sweep_batch,
        sweep=resolution_sweep(sweep, sweep_batch, model_overrides=model_overrides)
        if sweep else [])
    return report


def save_json(report, path):
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1, default=lambda o: o.item() if isinstance(
            o, np.generic) else str(o))


# ----------------------------------------------------------------------------- estimate
# pale_t/channels-last: Pale-T with channels-last convolutions (set_channels_last), as a
# GPU trains it; exports are NCHW, as pale_t
ESTIMATE_MODELS = ("pale_t", "pale_t/channels-last", "swin_t", "cswin_t")


def _estimate_programs(model_name, batch, size, training, model_overrides):
    """``{"forward": Program[, "train": Program]}`` of a model's plain form."""
    if model_name == "pale_t/channels-last":
        model = _build_model("pale_t", dict(model_overrides or {}, channels_last=True))
    else:
        model = _build_model(model_name, model_overrides)
    forward = (lambda m, x: m.forward_pyramid(x)) if model_name.startswith("pale_t") \
        else None
    shape = [batch, 3, *size]
    programs = {"forward": program_cost.forward_program(copy.deepcopy(model), shape, forward)}
    if training:
        programs["train"] = program_cost.training_program(copy.deepcopy(model), shape,
                                                          forward)
    return programs


def cost_estimate(models=ESTIMATE_MODELS, batch=64, size=(224, 224), training=True,
                  devices=None, compute_efficiency=0.6, memory_efficiency=0.8,
                  element_bytes=2, model_overrides=None):
    """Per image FLOPs and bytes of each model's static program, by op type, and the
    roofline estimate on ``devices`` (name -> ``(peak FLOP/s, bytes/s)``, default
    :data:`~paddle_pale.utils.program_cost.GPU_PRESETS`) at the given efficiencies.

    Programs are the plain models (what GPUs and exporters run) at ``batch`` (weights
    read once per batch), 16-bit elements. ``export/cpu``: the forward program as a CPU
    build of Paddle writes it; ``forward`` and ``train`` (forward + backward): as a CUDA
    build runs them, every ``nn.Linear`` one GEMM with its bias
    (:func:`~paddle_pale.utils.program_cost.fuse_linear_bias`); ``+flash``: with
    every attention (and its backward) fused as flash attention does. Returns a
    JSON-ready dict; times in ms per image, ``speedup`` (estimated) and ``bytes_ratio``
    over Swin-T's same program when ``swin_t`` is among ``models``, else the first
    model's.
    """
    devices = OrderedDict(program_cost.GPU_PRESETS if devices is None else devices)
    rows = []
    for name in models:
        try:
            programs = _estimate_programs(name, batch, size, training, model_overrides)
        except ImportError as error:
            print(f"skipping {name}: paddleseg is not importable ({error})")
            continue
        exported = program_cost.op_costs(programs["forward"], element_bytes)
        forward = program_cost.fuse_linear_bias(exported, element_bytes)
        variants = [("export/cpu", exported), ("forward", forward),
                    ("forward+flash", program_cost.fuse_attention(forward, element_bytes))]
        if "train" in programs:
            train = program_cost.fuse_linear_bias(
                program_cost.op_costs(programs["train"], element_bytes), element_bytes)
            variants += [("train", train),
                         ("train+flash", program_cost.fuse_attention(train, element_bytes))]
        for program, costs in variants:
            flops, moved = program_cost.program_totals(costs)
            row = OrderedDict(name=name, program=program, gflops_per_image=flops / batch / 1e9,
                              mb_per_image=moved / batch / 1e6, ops=len(costs),
                              mb_by_op_type=OrderedDict(
                                  (op_type, entry["bytes"] / batch / 1e6) for op_type, entry
                                  in program_cost.by_op_type(costs).items()),
                              estimate_ms=OrderedDict(), memory_bound_share=OrderedDict())
            for device, (peak, bandwidth) in devices.items():
                seconds, share = program_cost.roofline(
                    costs, peak * compute_efficiency, bandwidth * memory_efficiency)
                row["estimate_ms"][device] = seconds / batch * 1e3
                row["memory_bound_share"][device] = share
            rows.append(row)
    names = [row["name"] for row in rows]
    reference = "swin_t" if "swin_t" in names else (names[0] if names else None)
    for row in rows:
        base = next(r for r in rows if r["name"] == reference
                    and r["program"] == row["program"])
        row["speedup_vs"] = reference
        row["speedup"] = OrderedDict((device, base["estimate_ms"][device] / ms)
                                     for device, ms in row["estimate_ms"].items())
        row["bytes_ratio"] = row["mb_per_image"] / base["mb_per_image"]
        # over every peer present, not only the reference: Pale-T / CSWin-T too
        row["speedup_by_peer"] = OrderedDict()
        for peer in PEERS:
            other = next((r for r in rows if r["name"] == peer
                          and r["program"] == row["program"]), None)
            if other is not None:
                row["speedup_by_peer"][peer] = OrderedDict(
                    (device, other["estimate_ms"][device] / ms)
                    for device, ms in row["estimate_ms"].items())
    return OrderedDict(batch=batch, size=list(size), element_bytes=element_bytes,
                       compute_efficiency=compute_efficiency,
                       memory_efficiency=memory_efficiency,
                       devices=OrderedDict((d, list(v)) for d, v in devices.items()),
                       rows=rows)


def format_cost_estimate(report, top=8):
    """Plain-text tables of a :func:`cost_estimate` report, labelled as an estimate."""
    devices = list(report["devices"])
    lines = [f"ESTIMATE (roofline from the static program, not a measurement): batch "
             f"{report['batch']}, input {report['size'][0]}x{report['size'][1]}, "
             f"{8 * report['element_bytes']}-bit elements, each op at max(FLOPs / "
             f"{report['compute_efficiency']:.0%} of peak, bytes / "
             f"{report['memory_efficiency']:.0%} of HBM bandwidth), no fusion but "
             f"nn.Linear's bias (CUDA builds: linear_v2); export/cpu: the CPU build's "
             f"program as is; +flash: attentions fused",
             "",
             f"{'model':<22}{'program':<15}{'GFLOP/img':>10}{'MB/img':>9}{'bytes x':>8}"
             + "".join(f"{d + ' est ms':>13}{'x':>6}" for d in devices)
             + f"{'mem-bound':>10}"]
    for row in report["rows"]:
        lines.append(
            f"{row['name']:<22}{row['program']:<15}{row['gflops_per_image']:>10.2f}"
            f"{row['mb_per_image']:>9.1f}{row['bytes_ratio']:>8.2f}"
            + "".join(f"{row['estimate_ms'][d]:>13.3f}{row['speedup'][d]:>6.2f}"
                      for d in devices)
            + f"{row['memory_bound_share'][devices[-1]]:>10.0%}")
    lines += ["", f"x: over {report['rows'][0]['speedup_vs'] if report['rows'] else '-'} "
                  f"(bytes: ratio of MB/img; time: estimated speedup); mem-bound: share of "
                  f"the estimated {devices[-1]} time in memory-bound ops"]
    reference = report["rows"][0]["speedup_vs"] if report["rows"] else None
    present = {row["name"] for row in report["rows"]}
    other_peers = [peer for peer in PEERS if peer != reference and peer in present]
    for peer in other_peers:
        lines += ["", f"estimated speedup of Pale-T over {peer} (its time / Pale-T's)",
                  f"{'model':<22}{'program':<15}" + "".join(f"{d + ' x':>13}" for d in devices)]
        for row in report["rows"]:
            if row["name"].startswith("pale_t") and peer in row["speedup_by_peer"]:
                lines.append(f"{row['name']:<22}{row['program']:<15}" + "".join(
                    f"{row['speedup_by_peer'][peer][d]:>13.2f}" for d in devices))
    lines += ["", f"MB per image by op type (top {top}; estimate inputs)"]
    for row in report["rows"]:
        if row["program"] in ("forward+flash", "train+flash", "export/cpu"):
            continue
        parts = [f"{op} {mb:.1f}" for op, mb in list(row["mb_by_op_type"].items())[:top]]
        lines.append(f"{row['name']:<22}{row['program']:<8}" + ", ".join(parts))
    return "\n".join(lines)


# ------------------------------------------------------------------ the training loader
def write_photo_like_jpegs(root, num_classes=4, per_class=64, size=(500, 375), seed=0):
    """An ImageNet-layout folder of ``size`` (width, height) JPEGs at quality 90 that
    compress like photographs (a smooth colour field plus noise: 30-60 KB each), for
    timing the loader where no ImageNet is at hand. Existing files are kept."""
    from PIL import Image
    rng = np.random.RandomState(seed)
    width, height = size
    for label in range(num_classes):
        folder = os.path.join(root, f"n{label:08d}")
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            path = os.path.join(folder, f"{index:04d}.JPEG")
            field = rng.randint(0, 256, (12, 16, 3)).astype("uint8")
            noise = rng.randint(-12, 12, (height, width, 3))
            if os.path.exists(path):
                continue
            smooth = np.asarray(Image.fromarray(field).resize((width, height),
                                                              Image.BICUBIC), "int16")
            Image.fromarray(np.clip(smooth + noise, 0, 255).astype("uint8")).save(
                path, quality=90)
    return root


def loader_benchmark(root, workers=(1, 2), batch_size=32, overrides=()):
    """The training loader alone, no model: the recipe's training transforms
    (``engine/defaults.yaml``, i.e. the paper's) over the ImageNet-layout folder
    ``root``, for each number of worker processes in ``workers``.

    Per row: images/s the main process receives (the first batch, which waits for the
    workers to start, left out), bytes per image crossing from the workers (every array
    of a batch), whether shared memory carried them, and the milliseconds per image of
    :class:`~paddle_pale.data.train_transforms.BatchNormalize`, the end of the recipe
    that runs in the main process (on the training device)."""
    from .data.builder import build_dataloader
    from .data.train_transforms import BatchNormalize
    from .engine.config import load_config
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        config_path = os.path.join(scratch, "loader.yaml")
        with open(config_path, "w") as handle:
            handle.write("Arch: {name: pale_t}\n")
        for count in workers:
            config = load_config(config_path, [f"DataLoader.Train.dataset.root={root}",
                                               f"DataLoader.Train.num_workers={count}",
                                               f"DataLoader.Train.batch_size={batch_size}",
                                               *overrides])
            train_cfg = config["DataLoader"]["Train"]
            loader = build_dataloader(train_cfg, "Train")
            normalize = BatchNormalize.from_config(train_cfg["transforms"])
            batches = iter(loader)
            next(batches)
            images = nbytes = 0
            normalize_s = 0.0
            start = time.perf_counter()
            for batch in batches:
                images += batch[0].shape[0]
                nbytes += sum(part.numpy().nbytes for part in batch)
                tic = time.perf_counter()
                normalize(batch[0])
                normalize_s += time.perf_counter() - tic
            elapsed = time.perf_counter() - start
            if not images:
                raise ValueError(f"{root!r} holds too few images for two batches of "
                                 f"{batch_size}: nothing was timed")
            rows.append(OrderedDict(
                workers=count, images=images, images_per_s=images / elapsed,
                bytes_per_image=nbytes / images,
                image_dtype=str(batch[0].dtype).split(".")[-1],
                shared_memory=bool(getattr(loader, "use_shared_memory", False)),
                normalize_ms_per_image=1000 * normalize_s / images))
    return rows


def format_loader_report(rows):
    lines = [f"{'workers':>8}{'images/s':>10}{'bytes/image':>13}{'dtype':>8}{'shm':>6}"
             f"{'normalize ms/img':>18}"]
    for row in rows:
        lines.append(f"{row['workers']:>8}{row['images_per_s']:>10.1f}"
                     f"{row['bytes_per_image']:>13.0f}{row['image_dtype']:>8}"
                     f"{'yes' if row['shared_memory'] else 'no':>6}"
                     f"{row['normalize_ms_per_image']:>18.2f}")
    return "\n".join(lines)
