"""Pictures of the attention modes.

    # Figure-1-style grid: the tokens one query attends to in every mode
    python tools/visualize.py regions --size 28 28 --query 13 10 --pale-size 7 \\
        --stripe-width 2 --output regions.png
    # a trained checkpoint on a real image: attention weights of one pixel per stage
    python tools/visualize.py attention --checkpoint output/demo/best --image china \\
        --query 120 200 --output attention.png
"""
import argparse
import os

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.ablation import parse_pale_size
    from paddle_pale.visualize import SAMPLE_IMAGES, attention_picture, draw_regions
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    regions = commands.add_parser("regions", help="the region of one query in every mode")
    regions.add_argument("--size", type=int, nargs=2, default=(28, 28), metavar=("H", "W"),
                         help="map size (default 28 28: Pale-T's stage 2 at 224)")
    regions.add_argument("--query", type=int, nargs=2, default=(13, 10), metavar=("ROW", "COL"))
    regions.add_argument("--pale-size", type=parse_pale_size, default=7,
                         help="pale size: 7 or s_r x s_c (3x5)")
    regions.add_argument("--stripe-width", type=parse_pale_size, default=2,
                         help="cross_shaped stripe width (default 2: CSWin-T's stage 2)")
    regions.add_argument("--cell-pixels", type=int, default=8)
    regions.add_argument("--output", default="regions.png")
    attention = commands.add_parser("attention", help="attention weights of a trained model")
    attention.add_argument("--checkpoint", required=True,
                           help="training checkpoint prefix (output/best) or .pdparams")
    attention.add_argument("--image", default="china",
                           help=f"an image file, or {' / '.join(SAMPLE_IMAGES)} "
                                "(scikit-learn's sample photographs)")
    attention.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                           help="input size (default: 224 high, the image's aspect ratio)")
    attention.add_argument("--query", type=int, nargs=2, metavar=("Y", "X"),
                           help="query pixel of the resized image (default: its centre)")
    attention.add_argument("--block", type=int, default=-1,
                           help="block of each stage (default -1: the last)")
    attention.add_argument("--no-ema", action="store_true", help="raw weights, not EMA")
    attention.add_argument("--dpi", type=int, default=100, help="picture resolution")
    attention.add_argument("--output", default="attention.png")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if args.command == "regions":
        draw_regions(args.output, *args.size, tuple(args.query), args.pale_size,
                     args.stripe_width, args.cell_pixels)
    else:
        attention_picture(args.checkpoint, args.output, args.image,
                          tuple(args.query) if args.query else None,
                          tuple(args.size) if args.size else None, args.block,
                          use_ema=not args.no_ema, dpi=args.dpi)
    print(f"written: {args.output}")


if __name__ == "__main__":
    run_tool(main)
