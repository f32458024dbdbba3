"""COCO bbox + segm evaluation of a PaddleDetection model with a Pale backbone.

    python tools/eval_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml

evaluates the final checkpoint of training that config, where the installed ppdet wrote
it; -o weights=PATH picks another.
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters import ppdet_engine
    return ppdet_engine.eval_main(argv, description=__doc__)


if __name__ == "__main__":
    run_tool(main)
