"""Train a PaddleDetection model with a Pale Transformer backbone.

    python tools/train_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml --eval \\
        -o PaleTransformer.pretrained=PATH/pale_t.pdparams
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/train_det.py -c ...
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.adapters import ppdet_engine
    return ppdet_engine.train_main(argv, description=__doc__)


if __name__ == "__main__":
    run_tool(main)
