"""Train a Pale Transformer classifier.

    python tools/train.py -c configs/pale_t.yaml [-o Section.key=value ...]
    python -m paddle.distributed.launch --devices 0,1,2,3,4,5,6,7 \
        tools/train.py -c configs/pale_t.yaml
"""

from paddle_pale.utils.tool import run_tool


def main(argv=None):
    # imported here, once run_tool() has set paddle's threads and kernels
    from paddle_pale.engine.cli import train_main
    return train_main(argv)


if __name__ == "__main__":
    run_tool(main)
