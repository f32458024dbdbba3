"""Train a PaddleDetection model with a Pale Transformer backbone.

    python tools/train_det.py -c configs/det/mask_rcnn_pale_t_fpn_1x_coco.yml --eval \\
        -o PaleTransformer.pretrained=PATH/pale_t.pdparams
    python -m paddle.distributed.launch --gpus 0,1,2,3,4,5,6,7 tools/train_det.py -c ...
"""
import argparse
import os
import sys

import cpu_env  # noqa: F401  (threads, MKL path: must precede paddle)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.adapters import ppdet_engine  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="ppdet config (.yml)")
    parser.add_argument("-o", "--opt", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. use_gpu=false TrainReader.batch_size=1")
    parser.add_argument("--eval", action="store_true",
                        help="evaluate on EvalDataset after every snapshot")
    parser.add_argument("-r", "--resume", default=None,
                        help="checkpoint prefix to resume from (weights + optimizer)")
    args = parser.parse_args(argv)
    cfg = ppdet_engine.load_config(args.config, ppdet_engine.parse_overrides(args.opt))
    ppdet_engine.train(cfg, validate=args.eval, resume=args.resume)


if __name__ == "__main__":
    main()
