"""Two CPU processes through paddle.distributed.launch (gloo): the multi-GPU code path."""
import os
import subprocess
import sys

import numpy as np
import paddle

from engine_helpers import TINY_ARCH, tiny_config, write_image_folder
from paddle_pale.models.registry import create_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(tmp_path, config, name, *overrides):
    """Train on 2 processes; -> (per-rank logs, folder of the per-rank final weights)."""
    weights = tmp_path / f"weights_{name}"
    weights.mkdir()
    log_dir = tmp_path / f"log_{name}"
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(log_dir),
               os.path.join(ROOT, "tests", "distributed_rank_weights.py"), str(weights),
               "-c", config, *sum((["-o", o] for o in overrides), [])]
    run = subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=240)
    logs = {rank: (log_dir / f"workerlog.{rank}").read_text() for rank in (0, 1)}
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + logs[0][-3000:]
    return logs, weights


def test_two_process_launch_trains_one_model_and_only_rank_0_writes(tmp_path):
    write_image_folder(tmp_path / "data")
    config = tiny_config(tmp_path, tmp_path / "data")
    logs, weights = _launch(tmp_path, config, "plain", "Global.epochs=2")

    # 24 images / (2 ranks x batch 4) = 3 steps per epoch on each rank
    assert "2 process(es) x batch 4 x accum 1 = global batch 8" in logs[0]
    assert "lr 5.000e-03 = base_lr 5.000e-03 x 8 / 8" in logs[0]
    assert "epoch 2/2 iter 3/3" in logs[0]
    assert "epoch 2/2" not in logs[1] and "global batch" not in logs[1]  # rank 1 is quiet
    out = tmp_path / "out"
    # hidden entries: each checkpoint's live save directory and the link to it
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["best.pdopt", "best.pdparams", "best.pdstates", "config.yaml", "latest.pdopt",
         "latest.pdparams", "latest.pdstates", "train.log"])
    assert paddle.load(str(out / "latest.pdstates"))["world_size"] == 2

    rank0 = paddle.load(str(weights / "rank0.pdparams"))
    rank1 = paddle.load(str(weights / "rank1.pdparams"))
    saved = paddle.load(str(out / "latest.pdparams"))
    paddle.seed(3)  # Global.seed of the tiny config: the initial weights of the run
    initial = create_model(**TINY_ARCH).state_dict()
    for key in rank0:
        np.testing.assert_allclose(rank1[key].numpy(), rank0[key].numpy(), atol=1e-6,
                                   err_msg=key)
        np.testing.assert_array_equal(saved[key].numpy(), rank0[key].numpy())
    assert not np.allclose(rank0["head.weight"].numpy(), initial["head.weight"].numpy())


def test_gradient_checkpointing_under_data_parallel_gives_the_same_weights(tmp_path):
    # non-reentrant recompute: the data-parallel gradient hooks fire in the recomputed
    # backward too, without no_sync; drop path on, so the replayed RNG matters
    write_image_folder(tmp_path / "data")
    config = tiny_config(tmp_path, tmp_path / "data")
    overrides = ("Global.epochs=1", "Global.output_dir=" + str(tmp_path / "out_{}"),
                 "Arch.drop_path_rate=0.3")
    runs = {}
    for checkpointing in (False, True):
        name = "recompute" if checkpointing else "plain"
        options = [o.format(name) for o in overrides]
        options.append(f"Arch.grad_checkpointing={checkpointing}")
        logs, weights = _launch(tmp_path, config, name, *options)
        assert "epoch 1/1 iter 3/3" in logs[0]
        runs[name] = [paddle.load(str(weights / f"rank{r}.pdparams")) for r in (0, 1)]
    for key, value in runs["plain"][0].items():
        for rank in (0, 1):
            np.testing.assert_allclose(runs["recompute"][rank][key].numpy(), value.numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=key)


def test_static_graph_training_under_data_parallel_gives_the_eager_weights(tmp_path):
    # Global.to_static with 2 processes: the data-parallel wrapper holds the static
    # forward (not the eager model), and the ranks end where eager data parallel does
    write_image_folder(tmp_path / "data")
    config = tiny_config(tmp_path, tmp_path / "data")
    runs, forwards = {}, {}
    for static in (False, True):
        name = "static" if static else "eager"
        _, weights = _launch(tmp_path, config, name, "Global.epochs=1",
                             "Global.output_dir=" + str(tmp_path / f"out_{name}"),
                             f"Global.to_static={static}")
        runs[name] = [paddle.load(str(weights / f"rank{r}.pdparams")) for r in (0, 1)]
        forwards[name] = {(weights / f"rank{r}.forward").read_text() for r in (0, 1)}
    assert len(forwards["static"]) == 1 and "StaticFunction" in forwards["static"].pop()
    assert not any("StaticFunction" in kind for kind in forwards["eager"])
    for key, value in runs["eager"][0].items():
        for rank in (0, 1):
            np.testing.assert_allclose(runs["static"][rank][key].numpy(), value.numpy(),
                                       rtol=1e-4, atol=1e-6, err_msg=key)
