"""Train a PaddleDetection model with a Pale Transformer backbone.

    python tools/train_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml --eval \\
        -o PaleTransformer.pretrained=PATH/pale_t.pdparams
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/train_det.py -c ...
"""
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.adapters import ppdet_engine  # noqa: E402


def main(argv=None):
    return ppdet_engine.train_main(argv, description=__doc__)


if __name__ == "__main__":
    main()
