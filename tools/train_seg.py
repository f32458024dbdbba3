"""Train a PaddleSeg model (e.g. UPerNet) with a Pale backbone.

    python tools/train_seg.py --config configs/seg/upernet_pale_t_ade20k_512x512_160k.yml \
        --save_dir output/upernet_pale_t --do_eval
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/train_seg.py --config ...
"""
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.adapters.paddleseg_engine import train_main  # noqa: E402

if __name__ == "__main__":
    train_main()
