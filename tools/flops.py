"""Print parameters and FLOPs (multiply-accumulates) of a Pale model, per stage.

    python tools/flops.py --model pale_t --size 224 224
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.utils.flops import format_flops_report  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pale_t", help="registered variant name")
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    print(format_flops_report(args.model, tuple(args.size), num_classes=args.num_classes))


if __name__ == "__main__":
    main()
