"""Fine-tuning: layer-wise lr decay (Optimizer.layer_decay), a 224 checkpoint trained on
at another input size as it is, and a pretrained classifier of another num_classes."""
import os

import numpy as np
import paddle
import pytest

from engine_helpers import TINY_ARCH, tiny_config, write_image_folder
from paddle_pale.engine import Engine
from paddle_pale.engine.builder import build_optimizer
from paddle_pale.engine.config import load_config
from paddle_pale.models.registry import create_model
from paddle_pale.utils.io import load_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")

# depths (1, 2, 1, 1): 5 blocks, so the classifier is layer 6 and the stem layer 0; each
# stage's patch merging goes with the first block it feeds (timm's BEiT/ConvNeXt layout)
DEPTHS = (1, 2, 1, 1)
LAYER_OF_PREFIX = {"patch_embeds.0.": 0, "stages.0.0.": 1, "patch_embeds.1.": 2,
                   "stages.1.0.": 2, "stages.1.1.": 3, "patch_embeds.2.": 4, "stages.2.0.": 4,
                   "patch_embeds.3.": 5, "stages.3.0.": 5, "norm.": 6, "head.": 6}


def _tiny_model():
    return create_model("pale_t", num_classes=3, embed_dims=(8, 16, 16, 16), depths=DEPTHS,
                        num_heads=(2, 2, 2, 2), pale_size=2)


def _optimizer_config(**changes):
    config = load_config(os.path.join(CONFIGS, "pale_t.yaml"))["Optimizer"]
    config.update(changes)
    return config


def _expected_scale(name, decay):
    (layer,) = [v for k, v in LAYER_OF_PREFIX.items() if name.startswith(k)]
    return decay ** (6 - layer)


def test_layer_decay_gives_each_parameter_group_the_formula_lr():
    model = _tiny_model()
    optimizer = build_optimizer(_optimizer_config(layer_decay=0.5), model, 1e-3)
    names = {p.name: n for n, p in model.named_parameters()}
    groups = optimizer._param_groups
    assert len(groups) == 7  # one per depth
    seen = 0
    for group in groups:
        for param in group["params"]:
            scale = _expected_scale(names[param.name], 0.5)
            assert group["learning_rate"] == pytest.approx(scale), names[param.name]
            assert param.optimize_attr["learning_rate"] == pytest.approx(scale)
            seen += 1
    assert seen == sum(1 for p in model.parameters() if not p.stop_gradient)


def test_layer_decay_scales_the_first_adamw_update_of_every_parameter():
    # Adam's first step moves each weight by lr * g / (|g| + eps) ~ lr: with layer decay,
    # by lr * scale
    lr, decay = 1e-2, 0.7
    model = _tiny_model()
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    optimizer = build_optimizer(_optimizer_config(layer_decay=decay, weight_decay=0.0,
                                                  grad_clip=None, epsilon=1e-12), model, lr)
    paddle.seed(0)
    (model(paddle.randn([2, 3, 64, 64])).square().mean() * 1e6).backward()  # Adam: scale-free
    optimizer.step()
    checked = set()
    for name, param in model.named_parameters():
        if param.stop_gradient:
            continue
        moved = np.abs(param.numpy() - before[name])[np.abs(param.grad.numpy()) > 1e-8]
        if not moved.size:  # no gradient: key biases (softmax ignores a constant added
            continue        # to every key), and the like
        checked.add(LAYER_OF_PREFIX[next(k for k in LAYER_OF_PREFIX if name.startswith(k))])
        np.testing.assert_allclose(np.median(moved), lr * _expected_scale(name, decay),
                                   rtol=1e-3, err_msg=name)
    assert checked == set(range(7))


def test_without_layer_decay_every_parameter_trains_at_the_schedules_lr():
    model = _tiny_model()
    build_optimizer(_optimizer_config(), model, 1e-3)
    assert all(p.optimize_attr["learning_rate"] == 1.0 for p in model.parameters())


def test_a_small_input_checkpoint_fine_tunes_at_a_larger_size_with_a_new_head(tmp_path):
    # the 224 -> 384 step in small: train at 16x16 on 3 classes, fine-tune at 32x32 on 2
    write_image_folder(tmp_path / "data")
    first = Engine(load_config(tiny_config(tmp_path, tmp_path / "data"),
                               ["Global.epochs=1"]))
    first.train()
    checkpoint = str(tmp_path / "out" / "latest.pdparams")
    trained = load_state_dict(checkpoint)

    write_image_folder(tmp_path / "data2", num_classes=2, size=40, seed=1)
    tune_dir = tmp_path / "tune"
    tune_dir.mkdir()
    overrides = [f"Global.pretrained={checkpoint}", f"Global.output_dir={tmp_path / 'out2'}",
                 "Arch.num_classes=2", "Metric.topk=[1]", "Optimizer.layer_decay=0.75",
                 "Global.epochs=2"]
    for mode in ("Train", "Eval"):
        overrides += [f"DataLoader.{mode}.dataset.root={tmp_path / 'data2'}",
                      f"DataLoader.{mode}.transforms.input_size=32"]
    config = load_config(tiny_config(tune_dir, tmp_path / "data2"), overrides)
    engine = Engine(config)
    log = (tmp_path / "out2" / "train.log").read_text()
    assert "head.bias, head.weight re-initialised" in log
    assert "has no classifier of this shape" in log
    loaded = engine.model.state_dict()
    for key, value in trained.items():  # everything but the head, as it was trained
        if not key.startswith("head."):
            np.testing.assert_array_equal(loaded[key].numpy(), value.numpy(), err_msg=key)
    paddle.seed(config["Global"]["seed"])
    fresh = create_model(**dict(TINY_ARCH, num_classes=2)).state_dict()
    np.testing.assert_array_equal(loaded["head.weight"].numpy(), fresh["head.weight"].numpy())
    first_loss = engine._train_one_epoch(0)["loss"]
    last_loss = engine._train_one_epoch(1)["loss"]
    assert last_loss < first_loss
    assert engine.evaluate()["count"] == 16


def test_shipped_384_finetune_config_trains_from_the_224_run():
    config = load_config(os.path.join(CONFIGS, "pale_t_384_finetune.yaml"))
    first_stage = load_config(os.path.join(CONFIGS, "pale_t.yaml"))
    assert config["Global"]["pretrained"] == os.path.join(
        first_stage["Global"]["output_dir"], "best.pdparams")
    assert first_stage["DataLoader"]["Train"]["transforms"]["input_size"] == 224
    train, val = config["DataLoader"]["Train"], config["DataLoader"]["Eval"]
    assert train["transforms"]["input_size"] == val["transforms"]["input_size"] == 384
    # the first stage's global batch of 1024 on 8 GPUs
    assert 8 * train["batch_size"] * config["Global"]["accum_steps"] == 1024
    assert config["Optimizer"]["lr"]["name"] == "Constant"
    assert config["Arch"]["num_classes"] == first_stage["Arch"]["num_classes"]
