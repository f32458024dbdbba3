"""Train a PaddleSeg model (e.g. UPerNet) with a Pale backbone.

    python tools/train_seg.py --config configs/seg/upernet_pale_t_ade20k_512x512_160k.yml \
        --save_dir output/upernet_pale_t --do_eval
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/train_seg.py --config ...
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters.paddleseg_engine import train_main
    return train_main(argv)


if __name__ == "__main__":
    run_tool(main)
