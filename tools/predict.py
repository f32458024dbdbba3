"""Classify image files with an exported inference model; one JSON line per image.

    python tools/predict.py --model export/pale_t --topk 5 cat.jpg dog.png
    {"image": "cat.jpg", "class_ids": [281, ...], "classes": ["tabby", ...], "probs": [0.71, ...]}
    {"image": "dog.png", "error": "cannot decode image 'dog.png': ..."}

"classes" appears when the export carries the training class names. A file that cannot
be read gets an error line and the others are still classified; the exit code is 1 only
when no image could be classified, 2 when the model cannot be loaded (one error line).
"""
import argparse
import json
import sys

from paddle_pale.utils.tool import positive_int, run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.inference import ImageClassifier
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True,
                        help="exported model prefix (export/pale_t) or its directory")
    parser.add_argument("--topk", type=positive_int, default=5)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="math library threads on CPU (default: OMP_NUM_THREADS)")
    parser.add_argument("--no-onednn", action="store_true",
                        help="on CPU, run Paddle's own kernels instead of oneDNN")
    args = parser.parse_args(argv)
    classifier = ImageClassifier(args.model, args.device, args.cpu_threads,
                                 onednn=not args.no_onednn)
    num_classes = classifier.meta["num_classes"]
    if args.topk > num_classes:
        print(f"{parser.prog}: --topk {args.topk} is more than the model's {num_classes} "
              f"classes: showing all {num_classes}", file=sys.stderr)
    results = classifier.predict(args.images, k=args.topk, batch_size=args.batch_size)
    for result in results:
        if "probs" in result:  # 6 digits tell every class apart that float32 does
            result = dict(result, probs=[float(f"{p:.6g}") for p in result["probs"]])
        print(json.dumps(result), flush=True)
    failed = sum("error" in result for result in results)
    if failed:
        print(f"{parser.prog}: {failed} of {len(results)} image(s) could not be read",
              file=sys.stderr)
    if failed == len(results):
        sys.exit(1)


if __name__ == "__main__":
    run_tool(main)
