"""Write token-labeling label maps of a training split with a trained classifier as
teacher (LV-ViT's dense score maps; see the README, "Token labeling").

    python tools/token_labels.py --checkpoint output/teacher/best \
        --root data/ILSVRC2012/train --output data/label_maps/train --input-size 448

Resumes: run the same command again after an interruption. The format is documented in
paddle_pale/data/token_labels.py.
"""
import argparse

from paddle_pale.utils.tool import positive_int, run_tool


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="teacher: a training checkpoint prefix (or its .pdparams)")
    parser.add_argument("--root", required=True, help="the training split (ImageFolder "
                        "root, or the path prefix of --list-file)")
    parser.add_argument("--list-file", default=None, help="PaddleClas list file (ImageList)")
    parser.add_argument("--output", required=True, help="folder of the label maps")
    parser.add_argument("--input-size", type=positive_int, default=None,
                        help="teacher input side, a multiple of 32 (default: the "
                             "checkpoint's eval size); the map has input-size/32 cells a side")
    parser.add_argument("--topk", type=positive_int, default=5, help="classes kept per cell")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--arch", default=None,
                        help="variant name, for a checkpoint without .pdstates")
    args = parser.parse_args(argv)
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.label_maps import make_label_maps
    from paddle_pale.utils.log import setup_logging
    setup_logging(0)
    result = make_label_maps(args.checkpoint, args.root, args.output, args.list_file,
                             args.input_size, args.topk, args.batch_size, args.num_workers,
                             args.arch)
    print(f"label maps: {result['output']} ({result['total']} images, grid "
          f"{result['grid'][0]}x{result['grid'][1]}, top-{result['topk']}; "
          f"{result['labeled']} labeled in {result['seconds']:.1f} s)")
    print(f"train with them: -o DataLoader.Train.dataset.label_maps={result['output']}")
    return 0


if __name__ == "__main__":
    run_tool(main)
