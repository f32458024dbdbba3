"""Print params and FLOPs of a PaddleSeg config's model (e.g. UPerNet + Pale).

    python tools/flops_seg.py --config configs/seg/upernet_pale_t_ade20k_512x512_160k.yml \
        --size 512 2048
"""
import argparse

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters.paddleseg_engine import seg_model_report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(512, 2048), metavar=("H", "W"))
    parser.add_argument("--opts", nargs="+", default=None, metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    print(seg_model_report(args.config, tuple(args.size), opts=args.opts)["text"])


if __name__ == "__main__":
    run_tool(main)
