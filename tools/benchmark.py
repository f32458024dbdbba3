"""Benchmark Pale-T against its peers (images/s, peak memory, GFLOP/s), in one process.

    python tools/benchmark.py                       # batch 8, 224x224, sweep 224/448/896
    python tools/benchmark.py --json bench.json --rounds 5 --sweep

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
    from paddle_pale.benchmark import (MODEL_CASES, benchmark, format_report,
                                             save_json)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=positive_int, default=8)
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
    args = parser.parse_args(argv)
    sweep = () if args.sweep is None else (args.sweep or (224, 448, 896))
    models = [m for m in args.models if not (args.no_onednn and m.endswith("+onednn"))]
    report = benchmark(batch=args.batch, size=tuple(args.size), models=models,
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
