"""Benchmark tool: report structure (no timing assertions), exported predictor, CPU env."""
import ctypes
import json
import os
import platform
import re
import resource
import subprocess
import sys

import numpy as np
import paddle
import pytest

import paddle_pale
from paddle_pale import benchmark as bench
from paddle_pale.inference import run_predictor
from paddle_pale.utils import cpu as cpu_env

from conftest import ROOT

TINY = dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))


MODELS = ("pale_t", "swin_t", "pale_t/predictor+onednn", "swin_t/predictor",
          "pale_t/predictor-any-size")


@pytest.fixture(scope="module")
def report():
    return bench.benchmark(batch=2, size=(56, 56), models=MODELS, rounds=2, warmup=0,
                           sweep=(56, 112), model_overrides=TINY)


def test_report_has_every_case_and_mode(report):
    rows = {(r["name"], r["mode"]): r for r in report["results"]}
    expected = {("pale_t", "infer"), ("pale_t", "train"), ("swin_t", "infer"),
                ("swin_t", "train")}
    expected |= {(name, "infer") for name in MODELS if "/" in name}
    expected |= {(f"ps_attention/{kind}", mode) for kind in ("public", "cpu", "sdpa", "naive")
                 for mode in ("infer", "train")}
    assert set(rows) == expected
    for row in rows.values():
        assert len(row["round_ms"]) == 2
        assert row["ms_per_batch"] == pytest.approx(np.median(row["round_ms"]))
        assert row["images_per_s"] == pytest.approx(2e3 / row["ms_per_batch"])
        assert row["peak_mb"] > 0 and row["peak_growth_mb"] >= 0
        assert row["achieved_gflops"] == pytest.approx(
            2 * row["gmacs_per_image"] * row["images_per_s"])
    assert rows[("swin_t", "train")]["speedup"] == 1.0
    assert rows[("ps_attention/naive", "infer")]["speedup"] == 1.0
    assert rows[("pale_t", "infer")]["speedup_vs"] == "swin_t"
    assert report["matmul_gflops"] > 0


def test_flops_of_cases_follow_the_models(report):
    rows = {(r["name"], r["mode"]): r for r in report["results"]}
    model = paddle_pale.create_model("pale_t", with_classifier=False, **TINY)
    macs, _ = paddle_pale.utils.flops.count_flops(
        model, (56, 56), forward=lambda m, x: m.forward_pyramid(x))
    assert rows[("pale_t", "infer")]["gmacs_per_image"] == pytest.approx(macs / 1e9)
    assert rows[("swin_t", "infer")]["gmacs_per_image"] > 0
    assert rows[("ps_attention/cpu", "infer")]["gmacs_per_image"] == pytest.approx(
        paddle_pale.models.pale_attention_macs(14, 14, 64, 7) / 1e9)


def test_swin_flops_match_the_published_figure():
    # Swin-T: 4.5G MACs at 224 (Swin paper; Table 2 of the Pale paper), the classifier
    # it lacks here is 0.77M of them
    from paddleseg.models.backbones.swin_transformer import \
        SwinTransformer_tiny_patch4_window7_224
    macs = bench._swin_macs(SwinTransformer_tiny_patch4_window7_224(), (224, 224))
    assert macs / 1e9 == pytest.approx(4.5, rel=0.01)


def test_sweep_reports_score_sizes_and_text_table(report):
    sizes = [(r["name"], r["size"]) for r in report["sweep"]]
    assert sizes == [("pale_t", 56), ("swin_t", 56), ("pale_t", 112), ("swin_t", 112)]
    pale_rows = [r for r in report["sweep"] if r["name"] == "pale_t"]
    assert pale_rows[1]["max_score_elements"] == 8 * pale_rows[0]["max_score_elements"]
    assert pale_rows[1]["naive_score_elements"] == 16 * pale_rows[0]["naive_score_elements"]
    text = bench.format_report(report)
    assert "pale_t/predictor" in text and "resolution sweep" in text
    best = bench.best_predictors(report["results"])
    # the any-size export is left out: Swin-T has only fixed-size exports
    assert best["pale_t"]["name"] == "pale_t/predictor+onednn"
    assert best["swin_t"]["name"] == "swin_t/predictor"
    assert best["ratio"] == pytest.approx(best["pale_t"]["images_per_s"]
                                          / best["swin_t"]["images_per_s"])
    assert f"{best['ratio']:.2f}x" in text
    json.loads(json.dumps(report))  # JSON-ready as is


@pytest.mark.parametrize("fixed_size,onednn", [((64, 48), True), (None, True),
                                               ((64, 48), False)])
def test_predictor_matches_eager_model(tmp_path, fixed_size, onednn):
    model = paddle_pale.create_model("pale_t", with_classifier=False, **TINY)
    model.eval()
    images = paddle.randn([2, 3, 64, 48])
    predictor = bench.build_predictor(bench._Pyramid(model), fixed_size, str(tmp_path),
                                      onednn=onednn)
    outputs = run_predictor(predictor, images.numpy())
    with paddle.no_grad():
        expected = model.forward_pyramid(images)
    assert len(outputs) == 4
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)


def test_predictor_case_leaves_eager_math_threads_as_it_found_them(tmp_path, monkeypatch):
    # a predictor's run drops the calling thread's MKL threads to 1, which would time the
    # eager cases after it single-threaded; MKL's own counter says what eager code gets
    mkl = ctypes.CDLL(os.path.join(os.path.dirname(paddle.__file__), "libs",
                                   "libmklml_intel.so"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    paddle.base.core.set_num_threads(2)
    (case,) = bench.model_cases(1, (32, 32), names=("pale_t/predictor",), train=False,
                                workdir=str(tmp_path), model_overrides=TINY)
    case.modes["infer"]()
    assert mkl.MKL_Get_Max_Threads() == 2


def test_sdpa_case_needs_a_map_divisible_by_the_pale_size():
    # 64 / 4 = 16 is not a multiple of 7: the unmasked sdpa kernel cannot run
    names = [case.name for case in bench.attention_cases(1, (64, 64), naive=False)]
    assert names == ["ps_attention/public", "ps_attention/cpu"]


def test_bad_timing_arguments_raise():
    with pytest.raises(ValueError, match="rounds=0"):
        bench.run_benchmark([], 1, rounds=0)
    with pytest.raises(ValueError, match="'gpu'"):
        bench.run_benchmark([], 1, clock="gpu")
    for bad in ("vit", "pale_t+onednn", "pale_t/predictor+onednn+onednn", "pale_t/onnx"):
        with pytest.raises(ValueError, match=f"unknown model case '{re.escape(bad)}'"):
            bench.model_cases(1, (32, 32), names=(bad,))
    with pytest.raises(ValueError, match="swin_t exports only with a fixed size"):
        bench.parse_case("swin_t/predictor-any-size")


def _cpuinfo(vendor, pairs):
    return "\n\n".join(f"processor\t: {i}\nvendor_id\t: {vendor}\nphysical id\t: {p}\n"
                       f"core id\t\t: {c}" for i, (p, c) in enumerate(pairs))


def test_cpu_env_counts_physical_cores_and_detects_amd(monkeypatch):
    monkeypatch.setattr(cpu_env.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    hyperthreaded = _cpuinfo("GenuineIntel", [(0, 0), (0, 1), (0, 0), (0, 1)])
    assert cpu_env.physical_cores(hyperthreaded) == 2
    assert cpu_env.recommended_env(hyperthreaded, environ={}, nvidia_gpu=True) == {
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    # stride kernels off only where no GPU could be using them
    assert cpu_env.recommended_env(hyperthreaded, {}, nvidia_gpu=False)[
        "FLAGS_use_stride_kernel"] == "0"
    amd = _cpuinfo("AuthenticAMD", [(0, 0), (0, 1), (1, 0), (1, 1)])
    assert cpu_env.recommended_env(amd, environ={})["MKL_DEBUG_CPU_TYPE"] == "5"
    assert cpu_env.recommended_env(amd, environ={})["OMP_NUM_THREADS"] == "4"


def test_cpu_env_shares_cores_among_launched_processes(monkeypatch):
    # paddle.distributed.launch sets PADDLE_LOCAL_SIZE: processes of a node split its cores
    monkeypatch.setattr(cpu_env.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    four_cores = _cpuinfo("AuthenticAMD", [(0, 0), (0, 1), (1, 0), (1, 1)])
    threads = [cpu_env.recommended_env(four_cores, {"PADDLE_LOCAL_SIZE": size})
               ["OMP_NUM_THREADS"] for size in ("1", "2", "8", "bad")]
    assert threads == ["4", "2", "1", "4"]


def test_cpu_env_never_overrides_the_user(monkeypatch):
    amd = _cpuinfo("AuthenticAMD", [(0, 0), (0, 1)])
    environ = {"OMP_NUM_THREADS": "1", "FLAGS_use_stride_kernel": "1"}
    applied = cpu_env.apply(environ, amd, nvidia_gpu=False)
    assert applied == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "2",
                       "MKL_DEBUG_CPU_TYPE": "5", "FLAGS_use_stride_kernel": "1"}
    assert environ == applied
    # an exported MALLOC_* variable already tuned glibc at start-up: mallopt is not called
    assert cpu_env.tune_malloc({"MALLOC_TRIM_THRESHOLD_": "0"}) == {}


_PAGE_FAULTS_PER_BLOCK = """
import ctypes, resource, sys
if sys.argv[1] == "tuned":
    from paddle_pale.utils.cpu import tune_malloc
    assert tune_malloc({}), "mallopt refused the settings"
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[2])
def fill():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
fill()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    fill()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's mallopt")
def test_tuned_allocator_reuses_blocks_over_the_largest_mmap_threshold():
    # a 48 MB block (a batch's attention scores are that large) freed and taken again:
    # glibc by default maps it fresh each time, one page fault per page it touches;
    # tuned, it comes back from the heap already faulted in
    size = 48 << 20  # over 32 MB, the largest mmap threshold glibc takes
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {}
    for mode in ("plain", "tuned"):
        done = subprocess.run([sys.executable, "-c", _PAGE_FAULTS_PER_BLOCK, mode, str(size)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        faults[mode] = float(done.stdout.split()[-1])
    pages = size // resource.getpagesize()
    assert faults["plain"] >= pages // 512, faults  # fresh pages (2 MB ones at the least)
    assert faults["tuned"] <= 16, faults


def test_importing_the_package_changes_nothing_in_the_process():
    # no module of the library sets variables, tunes the allocator or imports paddle when
    # imported; configure_cpu() is an explicit call (made by the tools)
    code = ("import os, sys, pkgutil, importlib\n"
            "before = dict(os.environ)\n"
            "import paddle_pale.utils.cpu, paddle_pale\n"
            "assert 'paddle' not in sys.modules, 'the CPU setup module imports paddle'\n"
            "import paddle\n"
            "with_paddle = dict(os.environ)\n"
            "for info in pkgutil.walk_packages(paddle_pale.__path__, 'paddle_pale.'):\n"
            "    if not info.name.startswith('paddle_pale.adapters.'):\n"
            "        importlib.import_module(info.name)\n"
            "assert dict(os.environ) == with_paddle, set(os.environ.items()) ^ "
            "set(with_paddle.items())\n"
            "print(sorted(set(with_paddle) - set(before)))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE",
                        "FLAGS_use_stride_kernel")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # paddle's own import sets OMP_NUM_THREADS; nothing of ours is added
    assert "MKL_DEBUG_CPU_TYPE" not in done.stdout and "FLAGS_use_stride_kernel" not in done.stdout


def test_benchmark_tool_sets_cpu_env_before_paddle_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    env["MKL_DEBUG_CPU_TYPE"] = "0"
    done = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--batch", "1", "--size", "28", "28",
         "--models", "pale_t", "--no-train", "--no-naive", "--rounds", "1", "--warmup", "0",
         "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["threads"] is not None and data["threads"] != "1" or os.cpu_count() == 1
    assert data["mkl_debug_cpu_type"] == "0"  # the user's value wins
    if "FLAGS_use_stride_kernel" not in env and not cpu_env.has_nvidia_gpu():
        assert data["stride_kernels"] is False
    if not any(name.startswith("MALLOC_") for name in env) and \
            platform.libc_ver()[0] == "glibc":
        assert data["malloc_tuned"] == {"MALLOC_MMAP_THRESHOLD_": 32 << 20,
                                        "MALLOC_MMAP_MAX_": 0,
                                        "MALLOC_TRIM_THRESHOLD_": 1 << 30}
    assert [r["name"] for r in data["results"]][:1] == ["pale_t"]
    assert "img/s" in done.stdout


def test_loader_benchmark_counts_the_uint8_images_the_workers_ship(tmp_path):
    from paddle_pale.benchmark import loader_benchmark, write_photo_like_jpegs
    root = write_photo_like_jpegs(str(tmp_path / "jpegs"), num_classes=2, per_class=6,
                                  size=(50, 40))
    assert len(os.listdir(os.path.join(root, "n00000001"))) == 6
    rows = loader_benchmark(root, workers=(0, 1), batch_size=4,
                            overrides=["DataLoader.Train.transforms.input_size=32"])
    for row in rows:
        assert row["images"] == 8  # 12 images, 3 full batches, the first left out
        assert row["image_dtype"] == "uint8"
        # a 32x32 uint8 image, its int64 label and its int64 count of skipped samples
        assert row["bytes_per_image"] == 3 * 32 * 32 + 8 + 8
        assert row["images_per_s"] > 0 and row["normalize_ms_per_image"] > 0
    assert [row["workers"] for row in rows] == [0, 1]
    assert not rows[0]["shared_memory"]  # no worker processes, nothing to share
