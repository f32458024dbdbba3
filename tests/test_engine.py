import os
import shutil

import numpy as np
import paddle
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.engine import Engine, NonFiniteLossError, topk_correct
from paddle_pale.engine.builder import build_lr_scheduler, build_optimizer, scaled_learning_rate
from paddle_pale.utils.io import CHECKPOINT_SUFFIXES as SUFFIXES
from paddle_pale.engine.cli import eval_main
from paddle_pale.models.registry import create_model
from paddle_pale.utils.io import load_state_dict, load_weights
from paddle_pale.engine.config import ConfigError, load_config


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
    missing, unexpected = load_weights(model, str(out / "latest"))
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
    with pytest.raises(ValueError, match=r"has 3 classes \(class_0, class_1, class_2\) but the "
                                         r"model has Arch.num_classes=2; set -o "
                                         r"Arch.num_classes=3"):
        engine_for(tmp_path, data_root, ["Arch.num_classes=2"])


# ------------------------------------------------------------------ class maps
def _copy_classes(source, target, names):
    import shutil
    for name in names:
        shutil.copytree(source / name, target / name)
    return target


def _top1_by_hand(model, root, classes):
    """Top-1 over an image folder whose folders are named like the training classes."""
    from paddle_pale.data import build_eval_transform, load_image
    transform = build_eval_transform(16, 1.0, [0.5] * 3, [0.25] * 3)
    hits = total = 0
    model.eval()
    for folder in sorted(os.listdir(root)):
        for name in sorted(os.listdir(root / folder)):
            image = paddle.to_tensor(transform(load_image(str(root / folder / name)))[None])
            with paddle.no_grad():
                predicted = int(model(image).argmax(-1))
            hits += predicted == classes.index(folder)
            total += 1
    return hits / total


def test_val_split_with_fewer_classes_is_scored_through_the_training_class_map(tmp_path,
                                                                                data_root):
    val = _copy_classes(data_root, tmp_path / "val", ["class_0", "class_2"])
    engine = engine_for(tmp_path, data_root, ["Global.epochs=3",
                                              f"DataLoader.Eval.dataset.root={val}"])
    result = engine.train()
    classes = ["class_0", "class_1", "class_2"]
    states = paddle.load(str(tmp_path / "out" / "latest.pdstates"))
    assert states["classes"] == classes and states["label_source"] == "folders"
    metrics = engine.evaluate()
    assert metrics["count"] == 16
    assert metrics["top1"] == pytest.approx(_top1_by_hand(engine.model, val, classes))
    assert result["top1"] == pytest.approx(metrics["top1"])
    # tools/eval.py takes the map from the checkpoint it evaluates
    evaluated = eval_main(["-c", tiny_config(tmp_path, data_root), "-o",
                           f"DataLoader.Eval.dataset.root={val}",
                           "-o", f"Global.pretrained={tmp_path / 'out' / 'latest'}"])
    assert evaluated["top1"] == pytest.approx(metrics["top1"])


def test_hidden_and_empty_folders_are_not_classes(tmp_path, data_root):
    import shutil
    shutil.copytree(data_root / "class_1", data_root / ".ipynb_checkpoints")
    (data_root / "empty").mkdir()
    (data_root / "class_0" / ".hidden").mkdir()
    shutil.copy(data_root / "class_1" / "img_0.JPEG", data_root / "class_0" / ".hidden")
    engine = engine_for(tmp_path, data_root, ["Global.epochs=1"])
    assert engine.classes == ["class_0", "class_1", "class_2"]
    labels = {os.path.basename(os.path.dirname(p)): l for p, l in engine.train_set.samples}
    assert labels == {"class_0": 0, "class_1": 1, "class_2": 2}
    assert len(engine.train_set) == 24


def test_val_class_unknown_to_training_is_an_error_naming_it(tmp_path, data_root):
    val = _copy_classes(data_root, tmp_path / "val", ["class_0", "class_1"])
    _copy_classes(data_root, tmp_path / "other", ["class_2"])
    os.rename(tmp_path / "other" / "class_2", val / "class_9")
    with pytest.raises(ValueError, match=r"class folder\(s\) 'class_9' in .*val' are not "
                                         r"among the 3 classes the model was trained on"):
        engine_for(tmp_path, data_root, [f"DataLoader.Eval.dataset.root={val}"])


def test_resume_refuses_a_training_split_with_other_classes(tmp_path, data_root):
    engine_for(tmp_path, data_root, ["Global.epochs=1"]).train()
    os.rename(data_root / "class_2", data_root / "class_x")  # same count, other classes
    with pytest.raises(ValueError, match=r"trained on 3 classes, DataLoader.Train now has 3; "
                                         r"only in the checkpoint: \['class_2'\], only in the "
                                         r"data: \['class_x'\]"):
        engine_for(tmp_path, data_root, ["Global.epochs=2",
                                         f"Global.resume={tmp_path / 'out' / 'latest'}"])


# ------------------------------------------------------- messages and refusals
def test_nan_before_any_save_says_no_checkpoint_was_written(tmp_path, data_root):
    engine = engine_for(tmp_path, data_root, ["Global.epochs=2"])
    with paddle.no_grad():
        engine.model.head.weight.set_value(engine.model.head.weight * float("nan"))
    with pytest.raises(NonFiniteLossError, match="No checkpoint of this run was written yet") \
            as error:
        engine.train()
    assert "is kept" not in str(error.value)


def test_resume_takes_a_checkpoint_file_name_as_its_prefix(tmp_path, data_root):
    engine_for(tmp_path, data_root, ["Global.epochs=1"]).train()
    latest = tmp_path / "out" / "latest"
    resumed = engine_for(tmp_path, data_root, ["Global.epochs=2",
                                               f"Global.resume={latest}.pdparams"])
    assert resumed.start_epoch == 1 and resumed.last_saved == (str(latest), 1)


def test_min_lr_above_the_peak_lr_is_refused(tmp_path, data_root):
    # peak lr = base_lr 5e-3 x global batch 4 / reference 8 = 2.5e-3
    with pytest.raises(ConfigError, match=r"Optimizer.lr.min_lr must be in \[0, peak lr = "
                                          r"2.500e-03\].*got 3.000e-03"):
        engine_for(tmp_path, data_root, ["Optimizer.lr.min_lr=3e-3"])


def test_eval_tool_refuses_weights_that_do_not_fit_unless_told(tmp_path, data_root, capsys):
    engine_for(tmp_path, data_root, ["Global.epochs=1"]).train()
    config = tiny_config(tmp_path, data_root)
    weights = f"Global.pretrained={tmp_path / 'out' / 'latest'}"
    # a 4-class head on a 3-class checkpoint evaluated a random head before; the
    # checkpoint records its Arch, so the contradiction is named before anything loads
    with pytest.raises(ValueError, match=r"trained as pale_t with .*num_classes=3.*asks for "
                                         r"Arch.num_classes=4 \(the checkpoint was trained "
                                         r"with num_classes=3\).*--allow_mismatched_weights"
                       ) as error:
        eval_main(["-c", config, "-o", weights, "-o", "Arch.num_classes=4"])
    assert len(str(error.value)) < 600
    # bare weights carry no record: the config's Arch is built, and the shapes checked
    bare = tmp_path / "bare.pdparams"
    shutil.copy(tmp_path / "out" / "latest.pdparams", bare)
    with pytest.raises(ValueError, match=r"do not fit the configured model.*shape mismatches "
                                         r"\(2\): head.weight: checkpoint \[16, 3\] vs model "
                                         r"\[16, 4\].*--allow_mismatched_weights"):
        eval_main(["-c", config, "-o", f"Global.pretrained={bare}", "-o",
                   "Arch.num_classes=4"])
    metrics = eval_main(["-c", config, "-o", weights, "-o", "Arch.num_classes=4",
                         "--allow_mismatched_weights"])
    assert metrics["count"] == 24


def test_stale_files_of_killed_saves_are_removed_at_the_next_start(tmp_path, data_root):
    out = tmp_path / "out"
    out.mkdir()
    (out / "latest.pdparams.tmp12345").write_bytes(b"half a save")
    (out / ".best.ckpt.a1b2c3d4").mkdir()  # a save directory that never went live
    (out / "notes.txt").write_text("mine")
    engine_for(tmp_path, data_root, ["Global.epochs=1"])
    assert sorted(os.listdir(out)) == ["notes.txt", "train.log"]


def _live_children(pid):
    """Processes whose parent is ``pid`` (zombies are dead)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            children.append(int(entry))
    return children


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_loader_workers_end_when_the_trainer_is_killed(tmp_path, data_root):
    import signal
    import subprocess
    import sys
    import time
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = tiny_config(tmp_path, data_root)
    trainer = subprocess.Popen(
        [sys.executable, os.path.join(root, "tools", "train.py"), "-c", config,
         "-o", "Global.epochs=100000", "-o", "Global.eval_interval=100000",
         "-o", "DataLoader.Train.num_workers=2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # start-up: imports, model, first epoch
        while len(_live_children(trainer.pid)) < 2 and time.monotonic() < deadline:
            assert trainer.poll() is None, "the trainer ended early"
            time.sleep(0.5)
        workers = _live_children(trainer.pid)
        assert len(workers) >= 2, "no DataLoader workers appeared"
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    deadline = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # do not leave them running after the test
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], "DataLoader workers outlived the killed trainer"


def test_list_file_labels_are_not_matched_to_folder_names(tmp_path, data_root):
    samples = write_image_folder(tmp_path / "listed", per_class=2)
    list_file = tmp_path / "train.txt"
    list_file.write_text("".join(f"{path} {label}\n" for path, label in samples))
    overrides = ["DataLoader.Train.dataset.name=ImageList",
                 f"DataLoader.Train.dataset.root={tmp_path / 'listed'}",
                 f"DataLoader.Train.dataset.list_file={list_file}"]
    # a list file names no classes: its labels cannot be matched to val folder names
    with pytest.raises(ConfigError, match=r"labels come from a list file.*evaluate with a list "
                                          r"file too"):
        engine_for(tmp_path, data_root, overrides)
    engine = engine_for(tmp_path, data_root, overrides + [
        "DataLoader.Eval.dataset.name=ImageList",
        f"DataLoader.Eval.dataset.root={tmp_path / 'listed'}",
        f"DataLoader.Eval.dataset.list_file={list_file}"])
    assert engine.classes is None and engine.label_source == "list_file"
