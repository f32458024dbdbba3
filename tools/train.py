"""Train a Pale Transformer classifier.

    python tools/train.py -c configs/pale_t.yaml [-o Section.key=value ...]
    python -m paddle.distributed.launch --devices 0,1,2,3,4,5,6,7 \
        tools/train.py -c configs/pale_t.yaml
"""

from paddle_pale.utils.cpu import configure_cpu


def main(argv=None):
    # imported here, once configure_cpu() has set paddle's threads and kernels
    from paddle_pale.engine.cli import train_main
    return train_main(argv)


if __name__ == "__main__":
    configure_cpu()
    main()
