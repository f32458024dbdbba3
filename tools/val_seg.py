"""Evaluate a PaddleSeg model with a Pale backbone (mIoU), single- or multi-scale.

    python tools/val_seg.py --config configs/seg/upernet_pale_t_ade20k_512x512_160k.yml \
        --model_path output/upernet_pale_t/best_model/model.pdparams
    # multi-scale + flip
    python tools/val_seg.py --config ... --model_path ... \
        --aug_eval --flip_horizontal --scales 0.5 0.75 1.0 1.25 1.5 1.75
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters.paddleseg_engine import val_main
    return val_main(argv)


if __name__ == "__main__":
    run_tool(main)
