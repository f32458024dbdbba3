"""Global.to_static: the training forward as a static graph gives the eager run's losses,
and checkpoints pass between static and eager runs both ways. One static engine (its
first steps compile the graph: tens of seconds on 2 cores)."""
import re

import numpy as np
import paddle
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.engine import Engine
from paddle_pale.engine.config import ConfigError, load_config

# mixup and random erasing on (random draws between graph calls); a constant lr, so a
# run's schedule does not depend on its number of epochs. Stochastic depth is off: the
# static graph draws its masks from another stream than eager's once other paddle random
# ops run between steps (docs/training.md, "Static-graph training")
OPTIONS = ["DataLoader.Train.mixup={}", "DataLoader.Train.transforms.random_erasing=0.5",
           "Optimizer.lr.name=Constant", "Global.epochs=3"]
# stated tolerance: float32 round-off of the same ops compiled in another order
RTOL, ATOL = 1e-4, 1e-5


def _engine(tmp_path, data_root, name, *overrides):
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return Engine(load_config(tiny_config(folder, data_root), OPTIONS + list(overrides))), \
        folder / "out"


def _epoch_losses(out):
    text = (out / "train.log").read_text()
    return {int(e): float(loss) for e, loss in
            re.findall(r"epoch (\d+)/\d+ done: loss ([0-9.]+)", text)}


def _assert_same_weights(expected, got):
    expected, got = paddle.load(str(expected)), paddle.load(str(got))
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=RTOL,
                                   atol=ATOL, err_msg=key)


def test_static_training_matches_eager_and_checkpoints_interchange(tmp_path):
    write_image_folder(tmp_path / "data")
    data = tmp_path / "data"
    straight, straight_out = _engine(tmp_path, data, "straight")  # eager, epochs 1-3
    straight.train()
    eager_1, out_1 = _engine(tmp_path, data, "eager_1", "Global.epochs=1")
    eager_1.train()
    # epoch 2 static, from the eager checkpoint of epoch 1
    static, out_2 = _engine(tmp_path, data, "static_2", "Global.to_static=True",
                            "Global.epochs=2", f"Global.resume={out_1 / 'latest'}")
    assert isinstance(static.train_model.forward, paddle.jit.api.StaticFunction)
    assert static.start_epoch == 1
    static.train()
    assert "the training forward runs as a static graph, input [None, 3, 16, 16] float32" in (
        out_2 / "train.log").read_text()
    # epoch 3 eager, from the static checkpoint of epoch 2
    eager_3, out_3 = _engine(tmp_path, data, "eager_3", f"Global.resume={out_2 / 'latest'}")
    eager_3.train()

    expected = _epoch_losses(straight_out)
    np.testing.assert_allclose(_epoch_losses(out_2)[2], expected[2], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_epoch_losses(out_3)[3], expected[3], rtol=RTOL, atol=ATOL)
    _assert_same_weights(straight_out / "latest.pdparams", out_3 / "latest.pdparams")


def test_to_static_with_gradient_checkpointing_is_refused(tmp_path):
    # Paddle 3.3.1: recompute inside a to_static graph fails in backward (IndexError)
    path = tiny_config(tmp_path, tmp_path / "data")
    with pytest.raises(ConfigError, match="Global.to_static=True and "
                                          "Arch.grad_checkpointing=True do not go together"):
        load_config(path, ["Global.to_static=True", "Arch.grad_checkpointing=True"])
