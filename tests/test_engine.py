import os

import numpy as np
import paddle
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.engine import Engine, NonFiniteLossError, topk_correct
from paddle_pale.engine.builder import build_lr_scheduler, build_optimizer, scaled_learning_rate
from paddle_pale.engine.checkpoint import SUFFIXES
from paddle_pale.engine.cli import eval_main
from paddle_pale.models.registry import create_model
from paddle_pale.utils.checkpoint import load_pretrained, load_state_dict
from paddle_pale.utils.config import ConfigError, load_config


@pytest.fixture
def data_root(tmp_path):
    write_image_folder(tmp_path / "data")
    return tmp_path / "data"


def engine_for(tmp_path, data_root, overrides=(), mode="train", **sections):
    return Engine(load_config(tiny_config(tmp_path, data_root, **sections), list(overrides)),
                  mode=mode)


def test_topk_correct_on_a_known_case():
    logits = paddle.to_tensor([[0.1, 0.7, 0.2],     # label 1: top-1
                               [0.5, 0.1, 0.4],     # label 2: top-2 only
                               [0.2, 0.3, 0.5],     # label 0: wrong even in top-2
                               [0.9, 0.0, 0.1]])    # unreadable image: left out
    labels = paddle.to_tensor([1, 2, 0, -1])
    assert topk_correct(logits, labels, [1, 2, 5]) == ([1, 2, 3], 3)


def test_linear_lr_scaling_and_warmup_cosine_schedule():
    lr_cfg = dict(name="Cosine", base_lr=1e-3, reference_batch=1024, warmup_epochs=2,
                  warmup_start_lr=1e-6, min_lr=1e-5)
    peak = scaled_learning_rate(lr_cfg, 256)
    assert peak == pytest.approx(2.5e-4)
    schedule = build_lr_scheduler(lr_cfg, peak, steps_per_epoch=10, epochs=6)
    values = []
    for _ in range(60):
        values.append(schedule())
        schedule.step()
    assert values[0] == pytest.approx(1e-6)
    assert values[20] == pytest.approx(peak)          # warm-up ends after 2 epochs
    assert values[20 + 20] == pytest.approx((peak + 1e-5) / 2, rel=1e-6)  # cosine midpoint
    assert all(a <= b for a, b in zip(values[:20], values[1:21]))
    assert all(a >= b for a, b in zip(values[20:], values[21:]))


def test_no_weight_decay_on_norms_and_biases():
    model = create_model("pale_t", depths=(1, 1, 1, 1), embed_dims=(8, 16, 16, 16),
                         num_heads=(2, 2, 2, 2), num_classes=3)
    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "pale_t.yaml"))
    optimizer = build_optimizer(config["Optimizer"], model, 1e-3)
    decays = {name: optimizer._apply_decay_param_fun(p.name)
              for name, p in model.named_parameters() if not p.stop_gradient}
    assert decays["head.weight"] and decays["stages.0.0.attn.proj.weight"]
    assert not decays["head.bias"] and not decays["norm.weight"]
    assert not decays["stages.0.0.norm1.weight"]
    # every bias is left out
    assert not any(decay for name, decay in decays.items() if name.endswith(".bias"))
    assert decays["stages.0.0.attn.query.linear.weight"] and decays["stages.0.0.mlp.fc1.weight"]
    assert all(not p.stop_gradient or "stage_norms" in n for n, p in model.named_parameters())
    assert len(optimizer._parameter_list) == len(decays)  # frozen stage norms left out


def test_training_lowers_the_loss_and_writes_the_checkpoint_contract(tmp_path, data_root):
    # 6 epochs: at 4 the loss ratio ranged 0.65-0.73 over seeds, too close to the bound
    engine = engine_for(tmp_path, data_root, ["Global.epochs=6", "Global.eval_interval=6"])
    before = engine.evaluate()
    result = engine.train()
    after = engine.evaluate()
    assert after["loss"] < 0.7 * before["loss"]
    assert result["top1"] == after["top1"] and after["count"] == 24
    out = tmp_path / "out"
    for prefix in ("latest", "best"):
        assert {p.name for p in out.glob(prefix + ".*")} == {
            prefix + s for s in SUFFIXES if s != ".pdema"}
    states = paddle.load(str(out / "latest.pdstates"))
    assert states["epoch"] == 6 and states["best_top1"] == pytest.approx(after["top1"])
    assert states["arch"] == dict(engine.config["Arch"])
    assert (states["input_size"], states["crop_pct"]) == (16, 1.0)
    assert states["mean"] == [0.5] * 3 and states["std"] == [0.25] * 3
    model = create_model(**{"name": states["arch"]["name"]},
                         **{k: v for k, v in states["arch"].items() if k != "name"})
    missing, unexpected = load_pretrained(model, str(out / "latest"))
    assert missing == [] and unexpected == []
    assert not list(out.glob("*.tmp*"))
    assert (out / "train.log").read_text().count("global batch 4") == 1


def _final_weights(prefix):
    return {k: v.numpy() for k, v in load_state_dict(prefix).items()}


class Killed(Exception):
    pass


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, data_root):
    # every random stream matters here: augmentation, mixup, stochastic depth, EMA
    sections = {"EMA": {"enable": True, "decay": 0.9},
                "Arch": {"name": "pale_t", "num_classes": 3, "embed_dims": [8, 16, 16, 16],
                         "depths": [1, 1, 1, 1], "num_heads": [2, 2, 2, 2], "pale_size": 2,
                         "drop_path_rate": 0.3},
                "Optimizer": {"lr": {"warmup_epochs": 1, "base_lr": 5e-3,
                                     "reference_batch": 8}}}
    overrides = ["DataLoader.Train.mixup.prob=1.0",
                 "DataLoader.Train.transforms.randaugment.magnitude=9",
                 "DataLoader.Train.transforms.random_erasing=0.5"]
    straight = tmp_path / "straight"
    straight.mkdir()
    engine_for(straight, data_root, overrides, **sections).train()

    parts = tmp_path / "parts"
    parts.mkdir()
    engine = engine_for(parts, data_root, overrides, **sections)
    original = engine._train_one_epoch

    def killed_in_epoch_two(epoch):
        if epoch == 1:
            raise Killed
        return original(epoch)
    engine._train_one_epoch = killed_in_epoch_two
    with pytest.raises(Killed):
        engine.train()
    assert paddle.load(str(parts / "out" / "latest.pdstates"))["epoch"] == 1
    resumed = engine_for(parts, data_root,
                         overrides + [f"Global.resume={parts / 'out' / 'latest'}"], **sections)
    assert resumed.start_epoch == 1
    resumed.train()

    for suffix in (".pdparams", ".pdema"):
        expected = paddle.load(str(straight / "out" / ("latest" + suffix)))
        got = paddle.load(str(parts / "out" / ("latest" + suffix)))
        assert expected.keys() == got.keys()
        for key in expected:
            np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=key + suffix)
    initial = create_model("pale_t", **{k: v for k, v in sections["Arch"].items()
                                        if k != "name"}).state_dict()
    trained = paddle.load(str(straight / "out" / "latest.pdparams"))
    assert not np.allclose(trained["head.weight"].numpy(), initial["head.weight"].numpy())


def test_gradient_accumulation_matches_the_bigger_batch(tmp_path, data_root):
    runs = {}
    for name, batch, accum in (("big", 8, 1), ("accumulated", 4, 2)):
        root = tmp_path / name
        root.mkdir()
        engine = engine_for(root, data_root, [
            "Global.epochs=1", f"Global.accum_steps={accum}",
            f"DataLoader.Train.batch_size={batch}",
            "DataLoader.Train.transforms.scale=[1.0, 1.0]",
            "DataLoader.Train.transforms.ratio=[1.0, 1.0]",
            "DataLoader.Train.transforms.hflip=0.0"])
        assert engine.global_batch == 8 and engine.steps_per_epoch == 3
        engine.train()
        runs[name] = _final_weights(str(root / "out" / "latest"))
    # equal up to float reassociation (two sums of 4 images against one of 8), which
    # AdamW's division by the gradient's RMS can lift to ~1e-5 where a gradient is near
    # zero; a step taken at the wrong time moves weights by ~lr = 5e-3
    for key in runs["big"]:
        np.testing.assert_allclose(runs["accumulated"][key], runs["big"][key],
                                   rtol=1e-4, atol=1e-5, err_msg=key)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, data_root, monkeypatch):
    engine = engine_for(tmp_path, data_root, ["Global.epochs=1"])
    engine.train()
    prefix = str(tmp_path / "out" / "latest")
    before = _final_weights(prefix)
    with paddle.no_grad():
        for p in engine.model.parameters():
            p.set_value(p * 0 + 1)
    real_save = paddle.save

    def dies_before_the_states_file(obj, path, *args, **kwargs):
        if ".pdstates" in path:
            raise KeyboardInterrupt("killed mid-save")
        return real_save(obj, path, *args, **kwargs)
    monkeypatch.setattr(paddle, "save", dies_before_the_states_file)
    with pytest.raises(KeyboardInterrupt):
        engine.save("latest", 2)
    monkeypatch.setattr(paddle, "save", real_save)
    after = _final_weights(prefix)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert paddle.load(prefix + ".pdstates")["epoch"] == 1
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, data_root):
    engine = engine_for(tmp_path, data_root, ["Global.epochs=3"])
    original = engine._train_one_epoch

    def poisoned(epoch):
        if epoch == 1:
            with paddle.no_grad():
                engine.model.head.weight.set_value(engine.model.head.weight * float("nan"))
        return original(epoch)
    engine._train_one_epoch = poisoned
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, iteration 1.*"
                                                 r"last good checkpoint is kept"):
        engine.train()
    prefix = str(tmp_path / "out" / "latest")
    assert paddle.load(prefix + ".pdstates")["epoch"] == 1
    assert all(np.isfinite(v).all() for v in _final_weights(prefix).values())


def test_eval_tool_prints_the_metrics_of_a_checkpoint(tmp_path, data_root, capsys):
    engine = engine_for(tmp_path, data_root, ["Global.epochs=2"])
    expected = engine.train()
    config = tiny_config(tmp_path, data_root)
    metrics = eval_main(["-c", config, "-o", f"Global.pretrained={tmp_path / 'out' / 'best'}"])
    assert metrics["top1"] == pytest.approx(expected["best_top1"])
    printed = capsys.readouterr().out
    assert f"top1: {metrics['top1']:.4f}" in printed and "top2: " in printed


@pytest.mark.parametrize("dtype,level", [("float16", "O1"), ("bfloat16", "O1"),
                                         ("bfloat16", "O2")])
def test_amp_on_cpu_is_refused_instead_of_silently_doing_nothing(tmp_path, data_root, dtype,
                                                                 level):
    # Paddle's autocast is a no-op on CPU (a warning) and CPU has no bf16 matmul kernel
    with pytest.raises(ConfigError, match=rf"AMP.enable=True \({dtype}, {level}\) needs a "
                                          r"GPU.*AMP.enable=False"):
        engine_for(tmp_path, data_root, ["AMP.enable=True", f"AMP.dtype={dtype}",
                                         f"AMP.level={level}"])


def test_cpu_engine_trains_with_the_cpu_kernels(tmp_path, data_root):
    from paddle_pale.kernels import uses_cpu_kernels
    engine = engine_for(tmp_path, data_root, [])
    assert engine.device == "cpu" and uses_cpu_kernels(engine.model)


def test_labels_beyond_num_classes_are_an_error(tmp_path, data_root):
    with pytest.raises(ValueError, match=r"label 2 but the model has Arch.num_classes=2"):
        engine_for(tmp_path, data_root, ["Arch.num_classes=2"])
