"""Evaluate a Pale Transformer classifier: top-1/top-5 on the validation set.

    python tools/eval.py -c configs/pale_t.yaml -o Global.pretrained=output/pale_t/best

Weights that do not fit the configured model are refused unless
--allow-mismatched-weights is given; class folders are numbered through the class map
stored with the checkpoint.
"""
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.engine.cli import eval_main  # noqa: E402

if __name__ == "__main__":
    eval_main()
