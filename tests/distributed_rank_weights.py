"""Run by test_distributed.py under paddle.distributed.launch: train like tools/train.py,
then let every rank save the weights it ended with, so ranks can be compared, and the
kind of the forward it trained through (inside the data-parallel wrapper)."""
import os
import sys

import paddle
import paddle.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paddle_pale.engine.cli import train_main  # noqa: E402

if __name__ == "__main__":
    weights_dir, argv = sys.argv[1], sys.argv[2:]
    from paddle_pale.engine import engine as engine_module
    built = []
    original_init = engine_module.Engine.__init__

    def remember(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        built.append(self)
    engine_module.Engine.__init__ = remember
    train_main(argv)
    engine = built[0]
    paddle.save(engine.model.state_dict(),
                os.path.join(weights_dir, f"rank{dist.get_rank()}.pdparams"))
    inner = getattr(engine.train_model, "_layers", engine.train_model)
    with open(os.path.join(weights_dir, f"rank{dist.get_rank()}.forward"), "w") as handle:
        handle.write(type(inner.forward).__name__)
