"""Token labeling (Pale-T*/S*/B*): label maps through crop and flip, MixToken, the loss,
the starred checkpoint as a plain classifier / export / dense backbone, the tool."""
import json
import os
import random

import numpy as np
import paddle
import pytest
from PIL import Image

from paddle_pale import create_model
from paddle_pale.adapters.backbone import DenseBackbone
from paddle_pale.data import token_labels
from paddle_pale.data.mixup import Mixup
from paddle_pale.data.token_labels import (LabelMaps, LabelMapWriter, MixToken,
                                           TokenLabelTransform, crop_label_map,
                                           dense_label_map)
from paddle_pale.engine.builder import token_label_loss
from paddle_pale.export import export
from paddle_pale.utils.io import load_weights

from engine_helpers import TINY_ARCH, tiny_config, write_image_folder

ARCH = dict(num_classes=6, depths=[1, 1, 1, 1], embed_dims=[8, 16, 16, 16],
            num_heads=[2, 2, 2, 2], pale_size=2)


# ------------------------------------------------------------ crop and flip
def _position_image(height, width):
    """R = column, G = row: every pixel says where it came from."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return Image.fromarray(np.stack([cols, rows, np.zeros_like(rows)], -1).astype("uint8"))


def _position_map(grid_h, grid_w):
    """Top-1 map whose class at cell (r, c) is r * grid_w + c, score 1."""
    classes = np.arange(grid_h * grid_w).reshape(1, grid_h, grid_w)
    return classes, np.ones_like(classes, dtype="float32")


def _expected_targets(image, cell, grid_w, num_classes, token=32):
    """Per token of the output image, the fraction of its pixels from each source cell:
    read off the pixels themselves."""
    pixels = np.asarray(image).astype("int64")
    cls = (pixels[..., 1] // cell) * grid_w + pixels[..., 0] // cell  # [S, S]
    side = pixels.shape[0] // token
    expected = np.zeros((num_classes, side, side))
    for ty in range(side):
        for tx in range(side):
            block = cls[ty * token:(ty + 1) * token, tx * token:(tx + 1) * token]
            expected[:, ty, tx] = np.bincount(block.ravel(), minlength=num_classes) / block.size
    return expected


@pytest.mark.parametrize("flip", [False, True])
def test_label_map_follows_a_cell_aligned_crop_and_flip_exactly(flip, monkeypatch):
    height, width, cell = 192, 256, 32  # a 6x8 grid of 32-pixel cells
    indices, scores = _position_map(6, 8)
    box = (32, 64, 64, 64)  # top, left, h, w: rows 1-2, columns 2-3 of the grid
    monkeypatch.setattr(token_labels, "random_crop_box", lambda *args: box)
    transform = TokenLabelTransform(48, input_size=64, interpolation="nearest",
                                    hflip=1.0 if flip else 0.0)
    image, target = transform(_position_image(height, width), indices, scores)
    expected_classes = np.array([[10, 11], [18, 19]])
    if flip:
        expected_classes = expected_classes[:, ::-1]
    assert target.shape == (48, 2, 2)
    assert (target.argmax(0) == expected_classes).all()
    np.testing.assert_array_equal(target.max(0), np.ones((2, 2)))  # exactly one-hot
    # the image went through the same crop and flip: its pixels are those cells'
    expected = _expected_targets(image.transpose(1, 2, 0), cell, 8, 48)
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("seed", range(4))
def test_label_map_follows_random_crops_and_flips(seed):
    """Arbitrary boxes: each token's target is the share of its pixels coming from each
    cell, up to the nearest-neighbour resize's one-pixel rounding at cell edges."""
    random.seed(seed)
    np.random.seed(seed)
    height, width = 192, 256
    indices, scores = _position_map(6, 8)
    transform = TokenLabelTransform(48, input_size=128, scale=(0.1, 1.0),
                                    interpolation="nearest", hflip=0.5)
    image, target = transform(_position_image(height, width), indices, scores)
    expected = _expected_targets(image.transpose(1, 2, 0), 32, 8, 48)
    np.testing.assert_allclose(target.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(target, expected, atol=0.07)
    assert (target.argmax(0) == expected.argmax(0)).mean() >= 0.75


def test_crop_label_map_is_the_area_mean():
    """A 2x2 map, a crop of its left three quarters into one token: 2/3 of column 0."""
    dense = dense_label_map(*_position_map(2, 2), 4)
    out = crop_label_map(dense, (64, 64), (0, 0, 64, 48), (1, 1))
    np.testing.assert_allclose(out[:, 0, 0], [1 / 3, 1 / 6, 1 / 3, 1 / 6], rtol=1e-6)


def test_dense_map_renormalises_the_topk():
    indices = np.array([[[2]], [[0]]])
    scores = np.array([[[0.6]], [[0.2]]], "float32")
    np.testing.assert_allclose(dense_label_map(indices, scores, 3)[:, 0, 0], [0.25, 0, 0.75])


# ----------------------------------------------------------------- MixToken
def _constant_batch(batch, height, width, num_classes):
    images = paddle.to_tensor(np.arange(batch, dtype="float32")[:, None, None, None]
                              * np.ones((1, 3, height, width), "float32"))
    onehot = np.eye(num_classes, dtype="float32")[:batch]
    targets = paddle.to_tensor(onehot)
    token_targets = paddle.to_tensor(np.broadcast_to(
        onehot[:, :, None, None], (batch, num_classes, height // 32, width // 32)).copy())
    return images, targets, token_targets


@pytest.mark.parametrize("seed", range(4))
def test_mix_token_box_lies_on_token_boundaries(seed):
    batch, height, width = 4, 128, 96
    images, targets, token_targets = _constant_batch(batch, height, width, batch)
    mixer = MixToken(alpha=1.0, prob=1.0, seed=seed)
    box = None
    while box is None:  # draws until a box is not empty
        mixed, mixed_targets, mixed_tokens, box = mixer(images, targets, token_targets)
    mixed = mixed.numpy()
    for b in range(batch):
        pasted = mixed[b, 0] != b  # pixels from the mirror image (value batch-1-b)
        assert set(np.unique(mixed[b, 0])) <= {b, batch - 1 - b}
        cells = pasted.reshape(height // 32, 32, width // 32, 32)
        # every 32x32 cell is pasted whole or not at all
        assert (cells.all(axis=(1, 3)) == cells.any(axis=(1, 3))).all()
        token_mask = cells.all(axis=(1, 3))
        top, bottom, left, right = box
        expected_mask = np.zeros_like(token_mask)
        expected_mask[top:bottom, left:right] = True
        if b != batch - 1 - b:
            np.testing.assert_array_equal(token_mask, expected_mask)
        area = expected_mask.mean()
        expected = np.zeros(batch)
        expected[b] += 1 - area
        expected[batch - 1 - b] += area
        np.testing.assert_allclose(mixed_targets.numpy()[b], expected, atol=1e-6)
        tokens = mixed_tokens.numpy()[b]  # [K, h, w]
        np.testing.assert_array_equal(tokens.argmax(0),
                                      np.where(expected_mask, batch - 1 - b, b))
        np.testing.assert_allclose(tokens.mean(axis=(1, 2)), expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_mixup_mixes_token_targets_as_the_pixels(mode):
    """Constant one-hot maps: after mixing, the mean token target is the image target."""
    images, _, token_targets = _constant_batch(4, 64, 96, 4)
    labels = paddle.to_tensor(np.arange(4))
    mixup = Mixup(4, mixup_alpha=0.8 if mode == "mixup" else 0.0,
                  cutmix_alpha=1.0 if mode == "cutmix" else 0.0, label_smoothing=0.0, seed=1)
    mixed = 0
    for _ in range(8):
        _, targets, tokens = mixup(images, labels, token_targets)
        np.testing.assert_allclose(tokens.numpy().mean(axis=(2, 3)), targets.numpy(),
                                   atol=1e-6)
        mixed += not np.allclose(targets.numpy(), np.eye(4))
    assert mixed >= 4


# --------------------------------------------------------------------- loss
def test_token_label_loss_equals_a_naive_per_token_cross_entropy():
    rng = np.random.RandomState(0)
    batch, h, w, k = 3, 2, 3, 5
    logits = rng.randn(batch, k).astype("float32")
    token_logits = rng.randn(batch, h, w, k).astype("float32")
    targets = rng.dirichlet(np.ones(k), batch).astype("float32")
    token_targets = rng.dirichlet(np.ones(k), (batch, h, w)).transpose(0, 3, 1, 2)
    token_targets = token_targets.astype("float32")

    def ce(z, t):
        z = z.astype("float64")
        log_p = z - np.log(np.exp(z - z.max()).sum()) - z.max()
        return -(t * log_p).sum()
    image_term = np.mean([ce(logits[b], targets[b]) for b in range(batch)])
    token_term = np.mean([ce(token_logits[b, i, j], token_targets[b, :, i, j])
                          for b in range(batch) for i in range(h) for j in range(w)])
    got = token_label_loss(*map(paddle.to_tensor, (logits, token_logits, targets,
                                                   token_targets)), beta=0.5)
    np.testing.assert_allclose(float(got), image_term + 0.5 * token_term, rtol=1e-5)


# -------------------------------------------------------- model and weights
def test_token_inference_adds_half_the_max_over_tokens():
    paddle.seed(0)
    model = create_model("pale_t", token_head=True, **ARCH)
    model.eval()
    x = paddle.randn([2, 3, 64, 64])
    logits, token_logits = model.forward_tokens(x)
    assert token_logits.shape == [2, 2, 2, 6]
    np.testing.assert_allclose(model(x).numpy(), logits.numpy(), atol=1e-6)  # plain default
    model.token_inference = True
    expected = logits.numpy() + 0.5 * token_logits.numpy().reshape(2, 4, 6).max(1)
    np.testing.assert_allclose(model(x).numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError, match="token_inference=True needs token_head"):
        create_model("pale_t", token_inference=True, **ARCH)


@pytest.fixture(scope="module")
def starred(tmp_path_factory):
    """A starred training checkpoint (token head) and its model."""
    paddle.seed(1)
    model = create_model("pale_t", token_head=True, **ARCH)
    model.eval()
    prefix = str(tmp_path_factory.mktemp("star") / "best")
    paddle.save(model.state_dict(), prefix + ".pdparams")
    paddle.save({"epoch": 1, "best_top1": 0.5, "arch": dict(ARCH, name="pale_t",
                                                            token_head=True),
                 "input_size": 64, "crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.25] * 3},
                prefix + ".pdstates")
    assert any(k.startswith("aux_head.") for k in model.state_dict())
    return prefix, model


def test_starred_checkpoint_loads_into_the_plain_classifier(starred):
    prefix, model = starred
    x = paddle.randn([2, 3, 64, 64])
    for exact in (False, True):
        plain = create_model("pale_t", **ARCH)
        missing, unexpected = load_weights(plain, prefix + ".pdparams", exact=exact)
        assert missing == [] and unexpected == []
        assert not hasattr(plain, "aux_head")
        plain.eval()
        np.testing.assert_allclose(plain(x).numpy(), model(x).numpy(), atol=1e-6)
    # a starred model asking for an exact fit still needs its own head
    other = create_model("pale_t", token_head=True, **ARCH)
    plain_file = prefix + ".plain.pdparams"
    paddle.save({k: v for k, v in model.state_dict().items()
                 if not k.startswith("aux_head.")}, plain_file)
    with pytest.raises(ValueError, match="aux_head"):
        load_weights(other, plain_file, exact=True)
    load_weights(other, plain_file)  # fine-tuning a plain checkpoint: the head starts afresh


def test_starred_checkpoint_exports_and_serves_as_backbone(starred, tmp_path):
    prefix, model = starred
    path, _ = export("backbone", prefix, str(tmp_path / "backbone"))
    exported = paddle.load(path)
    assert not [k for k in exported if k.startswith(("norm.", "head.", "aux_head."))]
    x = paddle.randn([1, 3, 64, 96])
    expected = model.forward_pyramid(x)
    for weights in (path, prefix + ".pdparams"):  # exported backbone, or the checkpoint
        backbone = DenseBackbone("pale_t", pretrained=weights, drop_path_rate=0.0,
                                 **{k: v for k, v in ARCH.items() if k != "num_classes"})
        backbone.eval()
        for got, want in zip(backbone.forward_pyramid(x), expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    program = str(tmp_path / "inference" / "model")
    export("inference", prefix, program)
    config = paddle.inference.Config(program + ".json", program + ".pdiparams")
    config.disable_gpu()
    predictor = paddle.inference.create_predictor(config)
    image = np.random.RandomState(0).randn(2, 3, 64, 64).astype("float32")
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(image)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    np.testing.assert_allclose(got, model(paddle.to_tensor(image)).numpy(), atol=1e-4)


# ------------------------------------------------------------ on-disk format
def test_label_maps_round_trip_and_resume(tmp_path):
    folder = str(tmp_path / "maps")
    files = [f"c/{i}.png" for i in range(5)]
    writer = LabelMapWriter(folder, files, (2, 3), 2, 7, {"checkpoint": "t"})
    rng = np.random.RandomState(0)
    indices = rng.randint(0, 7, (5, 2, 2, 3))
    scores = rng.rand(5, 2, 2, 3).astype("float32")
    writer.write([0, 2], indices[[0, 2]], scores[[0, 2]], np.ones(2, "uint8"))
    with pytest.raises(ValueError, match="incomplete: 3 of 5"):
        LabelMaps(folder)
    again = LabelMapWriter(folder, files, (2, 3), 2, 7, {"checkpoint": "t"})
    assert again.pending() == [1, 3, 4]
    again.write([1, 3, 4], indices[[1, 3, 4]], scores[[1, 3, 4]], np.ones(3, "uint8"))
    with pytest.raises(ValueError, match="other teacher"):
        LabelMapWriter(folder, files, (2, 3), 2, 7, {"checkpoint": "other"})
    maps = LabelMaps(folder)
    for i in range(5):
        got_indices, got_scores = maps[i]
        np.testing.assert_array_equal(got_indices, indices[i])
        np.testing.assert_allclose(got_scores, scores[i], atol=1e-3)  # float16 on disk
    with open(os.path.join(folder, "meta.json")) as f:
        assert json.load(f)["grid"] == [2, 3]
    maps.check_files(files)
    with pytest.raises(ValueError, match="image 1 is 'c/x.png' in the split"):
        maps.check_files(files[:1] + ["c/x.png"] + files[2:])


# ------------------------------------------------------- tool and training
def test_tool_writes_maps_and_a_starred_run_trains(tmp_path):
    from paddle_pale.engine.config import load_config
    from paddle_pale.engine.engine import Engine
    from paddle_pale.label_maps import make_label_maps

    data = tmp_path / "data"
    write_image_folder(str(data), num_classes=3, per_class=4, size=40)
    arch = dict(TINY_ARCH)
    paddle.seed(0)
    teacher = create_model(**arch)
    prefix = str(tmp_path / "teacher" / "best")
    os.makedirs(os.path.dirname(prefix))
    paddle.save(teacher.state_dict(), prefix + ".pdparams")
    paddle.save({"arch": arch, "input_size": 64, "crop_pct": 1.0, "mean": [0.5] * 3,
                 "std": [0.25] * 3}, prefix + ".pdstates")
    maps = str(tmp_path / "maps")
    lines = []
    result = make_label_maps(prefix, str(data), maps, topk=2, batch_size=5, num_workers=0,
                             log=lines.append)
    assert result["labeled"] == 12 and result["grid"] == (2, 2)
    assert "12/12 images (100.0%)" in lines[-1]
    again = make_label_maps(prefix, str(data), maps, topk=2, num_workers=0, log=lines.append)
    assert again["labeled"] == 0  # resumed: nothing left
    # the teacher's own token scores are what was stored
    loaded = LabelMaps(maps)
    assert loaded.files[0] == "class_0/img_0.JPEG"

    path = tiny_config(tmp_path, data, Arch=dict(arch, token_head=True), DataLoader={
        "Train": {"dataset": {"label_maps": maps}, "transforms": {"input_size": 32},
                  "mix_token": {"enable": True}},
        "Eval": {"transforms": {"input_size": 32}}})
    config = load_config(path, ["Global.epochs=1"])
    engine = Engine(config)
    result = engine.train()
    assert np.isfinite(result["best_top1"])
    states = paddle.load(os.path.join(config["Global"]["output_dir"], "latest.pdstates"))
    assert states["arch"]["token_head"] is True
    assert "mix_token" in states["rng_states"][0]["generators"]


def test_token_labeling_config_errors(tmp_path):
    from paddle_pale.engine.config import ConfigError, load_config
    path = tiny_config(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="needs DataLoader.Train.dataset.label_maps"):
        load_config(path, ["DataLoader.Train.mix_token.enable=True"])
    with pytest.raises(ConfigError, match="Arch.token_head is not"):
        load_config(path, ["DataLoader.Train.dataset.label_maps=maps"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(path, ["DataLoader.Train.dataset.label_maps=maps", "Arch.token_head=True"])


def test_evaluation_may_switch_to_lvvit_inference(starred, tmp_path):
    """token_inference changes how the weights predict, not which: eval may set it."""
    from paddle_pale.engine.cli import checkpoint_arch
    prefix, _ = starred
    config = {"Global": {"pretrained": prefix}, "Arch": {"name": "pale_t"}}
    arch, _ = checkpoint_arch(config, ["Arch.token_inference=True"])
    assert arch["token_inference"] is True and arch["token_head"] is True
    model = create_model(**arch)
    load_weights(model, prefix + ".pdparams", exact=True)
    assert model.token_inference


@pytest.mark.parametrize("variant", ["t", "s", "b"])
def test_star_configs_train_the_token_head_with_mix_token(variant):
    from paddle_pale.engine.config import load_config
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, "configs", f"pale_{variant}_star.yaml"))
    plain = load_config(os.path.join(root, "configs", f"pale_{variant}.yaml"))
    assert config["Arch"] == dict(plain["Arch"], token_head=True, token_inference=False)
    train = config["DataLoader"]["Train"]
    assert train["dataset"]["label_maps"] and train["mix_token"]["enable"]
    assert train["mixup"] is None and config["Loss"]["token_beta"] == 0.5
