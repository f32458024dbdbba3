"""Export a PaddleSeg model with a Pale backbone for Paddle Inference (any image size).

    python tools/export_seg.py --config configs/seg/upernet_pale_t_ade20k_512x512_160k.yml \
        --model_path output/upernet_pale_t/best_model/model.pdparams \
        --save_dir export/upernet_pale_t
"""
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.adapters.paddleseg_engine import export_main  # noqa: E402

if __name__ == "__main__":
    export_main()
