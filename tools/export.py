"""Export a training checkpoint: backbone weights, Paddle inference model or ONNX.

    python tools/export.py backbone  --checkpoint output/best --output export/pale_t_backbone
    python tools/export.py backbone  --checkpoint output/best --output export/pale_t.safetensors
    python tools/export.py inference --checkpoint output/best --output export/pale_t
    python tools/export.py onnx      --checkpoint output/best --output export/pale_t.onnx
"""
import argparse
import logging

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.export import EXPORT_FORMATS, export
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=EXPORT_FORMATS)
    parser.add_argument("--checkpoint", required=True,
                        help="training checkpoint prefix (output/best) or its .pdparams")
    parser.add_argument("--output", required=True,
                        help="output path; the extension (.pdparams/.json/.onnx) is added")
    parser.add_argument("--model", help="variant (pale_t, ...); needed when the checkpoint "
                                        "has no .pdstates, checked against it otherwise")
    parser.add_argument("--num-classes", type=int,
                        help="classifier size of a checkpoint without .pdstates "
                             "(default: read from its head)")
    parser.add_argument("--input-size", type=int,
                        help="eval crop size (default: the checkpoint's, then the variant's); "
                             "also fixes the exported program's H and W to it (default: "
                             "any size)")
    parser.add_argument("--no-ema", action="store_true",
                        help="export .pdparams even when .pdema (EMA weights) exists")
    parser.add_argument("--opset", type=int, default=13, help="ONNX opset version")
    parser.add_argument("--weights-format", choices=("pdparams", "safetensors"),
                        help="backbone: file format (default: the --output suffix, else "
                             "pdparams); .safetensors carries the metadata too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    arch = {key: value for key, value in (("name", args.model),
                                          ("num_classes", args.num_classes))
            if value is not None}
    paths = export(args.format, args.checkpoint, args.output, arch=arch,
                   use_ema=not args.no_ema, input_size=args.input_size,
                   opset_version=args.opset, weights_format=args.weights_format)
    for path in paths:
        print(path)


if __name__ == "__main__":
    run_tool(main)
