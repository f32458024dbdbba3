"""Train a Pale Transformer classifier.

    python tools/train.py -c configs/pale_t.yaml [-o Section.key=value ...]
    python -m paddle.distributed.launch --devices 0,1,2,3,4,5,6,7 \
        tools/train.py -c configs/pale_t.yaml
"""
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.engine.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main()
