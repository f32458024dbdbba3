"""Export a PaddleSeg model with a Pale backbone for Paddle Inference (any image size).

    python tools/export_seg.py --config configs/seg/upernet_pale_t_ade20k_512x512_160k.yml \
        --model_path output/upernet_pale_t/best_model/model.pdparams \
        --save_dir export/upernet_pale_t
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters.paddleseg_engine import export_main
    return export_main(argv)


if __name__ == "__main__":
    run_tool(main)
