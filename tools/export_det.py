"""Export a PaddleDetection model with a Pale backbone for Paddle Inference (any image
size), as PaddleDetection's tools/export_model.py does.

    python tools/export_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml \\
        -o weights=output/mask_rcnn_pale_t_fpn_1x_coco/model_final \\
        --output_dir output_inference
"""
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.adapters import ppdet_engine  # noqa: E402


def main(argv=None):
    return ppdet_engine.export_main(argv, description=__doc__)


if __name__ == "__main__":
    main()
