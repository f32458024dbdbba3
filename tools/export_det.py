"""Export a PaddleDetection model with a Pale backbone for Paddle Inference (any image
size), as PaddleDetection's tools/export_model.py does.

    python tools/export_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml \\
        --output_dir output_inference

exports the final checkpoint of training that config (or -o weights=PATH) into
output_inference/mask_rcnn_pale_t_fpn_1x_coco/.
"""
from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters import ppdet_engine
    return ppdet_engine.export_main(argv, description=__doc__)


if __name__ == "__main__":
    run_tool(main)
