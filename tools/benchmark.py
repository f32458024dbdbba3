"""Benchmark Pale-T against its peers (images/s, peak memory, GFLOP/s), in one process.

    python tools/benchmark.py                       # batch 8, 224x224, sweep 224/448/896
    python tools/benchmark.py --json bench.json --rounds 5 --sweep
    python tools/benchmark.py --estimate            # GPU roofline ESTIMATE, no timing
    python tools/benchmark.py --estimate --gpus H200 --peak-tflops 989 --bandwidth-gbs 4800
    python tools/benchmark.py --loader /data/train --loader-workers 1 2 4   # loader alone
    python tools/benchmark.py --loader /tmp/jpegs --make-jpegs 256          # 500x375 JPEGs

The CPU environment (threads = physical cores, MKL's AVX2 path on AMD, stride kernels
off, glibc's allocator keeping freed memory) is set by
``paddle_pale.utils.cpu.configure_cpu()`` before paddle is imported; exported variables
win, e.g.
``OMP_NUM_THREADS=1 FLAGS_use_stride_kernel=1 python tools/benchmark.py``.
"""
import argparse

from paddle_pale.utils.tool import positive_int, run_tool


def main(argv=None, cpu=None):
    """``cpu``: what :func:`configure_cpu` applied, recorded with the figures."""
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.benchmark import (ESTIMATE_MODELS, MODEL_CASES, benchmark,
                                       cost_estimate, format_cost_estimate, format_report,
                                       save_json)
    from paddle_pale.utils.program_cost import GPU_PRESETS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=None,
                        help="images per batch (default 8; --estimate: 64)")
    parser.add_argument("--size", type=positive_int, nargs=2, default=(224, 224),
                        metavar=("H", "W"))
    parser.add_argument("--models", nargs="+", default=list(MODEL_CASES), choices=MODEL_CASES,
                        help="eager backbones, and their exported programs in Paddle "
                             "Inference (+onednn: with oneDNN; -any-size: exported with "
                             "symbolic H and W)")
    parser.add_argument("--no-onednn", action="store_true",
                        help="leave out the predictor cases that run with oneDNN")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case")
    parser.add_argument("--iters", type=positive_int, default=1, help="batches per case per round")
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--no-attention", action="store_true",
                        help="skip the PS-Attention core cases")
    parser.add_argument("--no-naive", action="store_true",
                        help="skip the naive masked-attention reference")
    parser.add_argument("--sweep", type=int, nargs="*", default=None, metavar="SIZE",
                        help="resolution sweep sizes (inference, --sweep-batch); "
                             "--sweep alone: 224 448 896")
    parser.add_argument("--sweep-batch", type=positive_int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time, stable on a busy machine with "
                             "OMP_NUM_THREADS=1 (before/after comparisons)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    estimate = parser.add_argument_group(
        "estimate", "FLOPs and bytes per image of each model's static program and a GPU "
        "roofline estimate (no timing; --batch, --size and --json apply)")
    estimate.add_argument("--estimate", action="store_true",
                          help="print the estimate instead of timing")
    estimate.add_argument("--estimate-models", nargs="+", default=list(ESTIMATE_MODELS),
                          choices=ESTIMATE_MODELS)
    estimate.add_argument("--gpus", nargs="+", default=list(GPU_PRESETS),
                          choices=list(GPU_PRESETS), help="device presets")
    estimate.add_argument("--peak-tflops", type=float,
                          help="with --bandwidth-gbs: a custom device (dense 16-bit peak)")
    estimate.add_argument("--bandwidth-gbs", type=float, help="HBM bandwidth, GB/s")
    estimate.add_argument("--compute-efficiency", type=float, default=0.6,
                          help="fraction of the peak FLOP/s matmuls reach")
    estimate.add_argument("--memory-efficiency", type=float, default=0.8,
                          help="fraction of the HBM bandwidth every op reaches")
    loader = parser.add_argument_group(
        "loader", "the training loader alone (no model): images/s and bytes per image the "
        "workers ship, with the recipe's training transforms")
    loader.add_argument("--loader", metavar="ROOT",
                        help="time the loader over this ImageNet-layout folder instead")
    loader.add_argument("--loader-workers", type=int, nargs="+", default=[1, 2])
    loader.add_argument("--loader-batch", type=positive_int, default=32)
    loader.add_argument("--make-jpegs", type=positive_int, metavar="N",
                        help="first write N photo-like 500x375 JPEGs (4 classes) into ROOT")
    args = parser.parse_args(argv)
    if args.loader:
        from paddle_pale.benchmark import (format_loader_report, loader_benchmark,
                                           write_photo_like_jpegs)
        if args.make_jpegs:
            write_photo_like_jpegs(args.loader, per_class=-(-args.make_jpegs // 4))
        if any(count < 0 for count in args.loader_workers):
            parser.error("--loader-workers must be >= 0")
        rows = loader_benchmark(args.loader, args.loader_workers, args.loader_batch)
        print(format_loader_report(rows))
        if args.json:
            save_json({"loader": rows}, args.json)
            print(f"wrote {args.json}")
        return rows
    if args.estimate:
        if (args.peak_tflops is None) != (args.bandwidth_gbs is None):
            parser.error("--peak-tflops and --bandwidth-gbs go together")
        devices = {name: GPU_PRESETS[name] for name in args.gpus}
        if args.peak_tflops is not None:
            devices = {"custom": (args.peak_tflops * 1e12, args.bandwidth_gbs * 1e9)}
        report = cost_estimate(args.estimate_models, args.batch or 64, tuple(args.size),
                               training=not args.no_train, devices=devices,
                               compute_efficiency=args.compute_efficiency,
                               memory_efficiency=args.memory_efficiency)
        print(format_cost_estimate(report))
        if args.json:
            save_json(report, args.json)
            print(f"wrote {args.json}")
        return
    sweep = () if args.sweep is None else (args.sweep or (224, 448, 896))
    models = [m for m in args.models if not (args.no_onednn and m.endswith("+onednn"))]
    report = benchmark(batch=args.batch or 8, size=tuple(args.size), models=models,
                       attention=not args.no_attention, naive=not args.no_naive,
                       train=not args.no_train, rounds=args.rounds, warmup=args.warmup,
                       iters=args.iters, sweep=sweep, sweep_batch=args.sweep_batch,
                       clock=args.clock, malloc_tuned=(cpu or {}).get("malloc"))
    print(format_report(report))
    if args.json:
        save_json(report, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_tool(main)
