"""COCO bbox + segm evaluation of a PaddleDetection model with a Pale backbone.

    python tools/eval_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml \\
        -o weights=output/mask_rcnn_pale_t_fpn_1x_coco/model_final
"""
import argparse
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.adapters import ppdet_engine  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="ppdet config (.yml)")
    parser.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides; weights=PATH picks the checkpoint")
    args = parser.parse_args(argv)
    cfg = ppdet_engine.load_config(args.config, ppdet_engine.parse_overrides(args.opt))
    ppdet_engine.evaluate(cfg)


if __name__ == "__main__":
    main()
