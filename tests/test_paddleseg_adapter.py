"""Pale in PaddleSeg: backbone registration, Paddle 3 fixes, UPerNet training and mIoU
evaluation through PaddleSeg's engine, classification checkpoints, FLOP report."""
import contextlib
import logging
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml
from PIL import Image

pytest.importorskip("paddleseg")

import paddleseg  # noqa: E402
from paddleseg.core import infer  # noqa: E402
from paddleseg.cvlibs import SegBuilder, manager  # noqa: E402

import paddle_pale  # noqa: E402
from paddle_pale.adapters import compat, paddleseg_compat  # noqa: E402
from paddle_pale.adapters.paddleseg import PaleTransformer  # noqa: E402
from paddle_pale.adapters.paddleseg_engine import (  # noqa: E402
    load_config, load_segmentation_weights, seg_model_report, train_main, val_main)
from paddle_pale.models import pale  # noqa: E402
from paddle_pale.models.registry import model_defaults  # noqa: E402
from paddle_pale.utils.config import read_yaml  # noqa: E402
from paddle_pale.utils.io import load_weights  # noqa: E402
from paddle_pale.utils.flops import count_flops  # noqa: E402

from conftest import ROOT  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "seg", "upernet_pale_t_ade20k_512x512_160k.yml")
TINY = dict(depths=[1, 1, 1, 1])
NUM_CLASSES = 150


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory):
    """ADE20K layout: images/{training,validation}/*.jpg, annotations/*.png, labels
    0..150 with 0 = unlabelled (PaddleSeg's ADE20K maps it to 255 = ignore)."""
    root = tmp_path_factory.mktemp("ADEChallengeData2016")
    rng = np.random.default_rng(0)
    for split, count in (("training", 4), ("validation", 2)):
        os.makedirs(root / "images" / split)
        os.makedirs(root / "annotations" / split)
        for i in range(count):
            image = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
            label = rng.integers(0, 4, (72, 96), dtype=np.uint8)  # classes 1..3 + ignore
            label[:8] = 0
            Image.fromarray(image).save(root / "images" / split / f"ADE_{i:03d}.jpg")
            Image.fromarray(label).save(root / "annotations" / split / f"ADE_{i:03d}.png")
    return str(root)


@pytest.fixture(scope="module")
def tiny_config(ade_root, tmp_path_factory):
    """The shipped Pale-T config with 64x64 crops and the tiny data set; returns
    (path, opts) where opts shrink the model as a user would on the command line."""
    config = read_yaml(CONFIG)  # with its _base_ merged in, as PaddleSeg merges it
    config["train_dataset"]["transforms"][1]["crop_size"] = [64, 64]
    config["val_dataset"]["transforms"][0]["target_size"] = [128, 64]
    path = str(tmp_path_factory.mktemp("cfg") / "tiny.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    opts = [f"train_dataset.dataset_root={ade_root}", f"val_dataset.dataset_root={ade_root}",
            "model.backbone.depths=[1,1,1,1]", "model.channels=32",
            "lr_scheduler.warmup_iters=1", "lr_scheduler.learning_rate=0.001"]
    return path, opts


def build_model(path, opts):
    return SegBuilder(load_config(path, opts=opts)).model


# ---------------------------------------------------------------- backbone contract
def test_registered_as_paddleseg_backbone():
    assert manager.BACKBONES["PaleTransformer"] is PaleTransformer
    assert issubclass(PaleTransformer, pale.PaleTransformer)


@pytest.mark.parametrize("arch", paddle_pale.list_models())
def test_backbone_matches_classification_model(arch):
    backbone = PaleTransformer(arch=arch, **TINY)
    classifier = paddle_pale.create_model(arch, **TINY)
    # same parameter names as the classification model, minus its classifier
    expected = {k for k in classifier.state_dict() if not k.startswith(pale.CLASSIFIER_PREFIXES)}
    assert set(backbone.state_dict()) == expected
    assert backbone.feat_channels == list(model_defaults(arch)["embed_dims"])

    backbone.set_state_dict(classifier.state_dict())
    backbone.eval(), classifier.eval()
    x = paddle.randn([1, 3, 64, 96])
    features = backbone(x)
    reference = classifier.forward_pyramid(x)
    assert [list(f.shape) for f in features] == [
        [1, c, 64 // s, 96 // s] for c, s in zip(backbone.feat_channels, (4, 8, 16, 32))]
    for ours, theirs in zip(features, reference):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_out_indices_select_maps_and_channels():
    backbone = PaleTransformer(arch="pale_t", out_indices=[1, 3], **TINY)
    features = backbone(paddle.randn([1, 3, 64, 64]))
    assert backbone.feat_channels == [128, 512]
    assert [f.shape[1] for f in features] == [128, 512]
    assert [f.shape[2] for f in features] == [8, 2]


def test_attention_mode_reaches_the_backbone_from_the_config(tiny_config):
    path, opts = tiny_config
    backbone = build_model(path, opts + ["model.backbone.attention_mode=pale_vanilla"]).backbone
    assert {block.attn.attention_mode for stage in backbone.stages for block in stage} == \
        {"pale_vanilla"}
    classifier = paddle_pale.create_model("pale_t", attention_mode="pale_vanilla", **TINY)
    classifier.set_state_dict(backbone.state_dict())
    backbone.eval(), classifier.eval()
    x = paddle.randn([1, 3, 64, 96])
    for ours, theirs in zip(backbone(x), classifier.forward_pyramid(x)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(arch="pale_x"), "unknown model 'pale_x'"),
    (dict(out_indices=[0, 4]), "out_indices"),
    (dict(out_indices=[2, 1]), "out_indices"),
    (dict(num_classes=150), "no classifier"),
])
def test_bad_backbone_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaleTransformer(**dict(TINY, **kwargs))


def test_paddle_pale_imports_without_paddleseg():
    code = ("import sys; sys.modules['paddleseg'] = None\n"  # makes `import paddleseg` fail
            "import paddle_pale, paddle_pale.adapters\n"
            "m = paddle_pale.create_model('pale_t', depths=[1, 1, 1, 1])\n"
            "print('ok', 'paddle_pale.adapters.paddleseg' in sys.modules)\n"
            "try:\n"
            "    import paddle_pale.adapters.paddleseg\n"
            "except ImportError as error:\n"
            "    print('needs' in str(error))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["ok", "False", "True"]


# ------------------------------------------------------------- Paddle 3.x fixes
def _numpy_cross_entropy(logit, label, ignore_index=255):
    """Mean cross entropy over pixels whose label is not ignore_index. logit [N,C,H,W]."""
    shifted = logit - logit.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    valid = label != ignore_index
    n, _, h, w = logit.shape
    picked = log_prob[np.arange(n)[:, None, None], np.where(valid, label, 0),
                      np.arange(h)[None, :, None], np.arange(w)[None, None, :]]
    return -(picked * valid).sum() / valid.sum()


def _fails_if_needed(qualname, *raises_args, **raises_kwargs):
    """``pytest.raises(...)`` where the probe found the bug in the installed PaddleSeg,
    else a context that lets the unpatched call run (it must then work)."""
    if paddleseg_compat.needed(qualname):
        return pytest.raises(*raises_args, **raises_kwargs)
    return contextlib.nullcontext()


def test_fixes_installed_only_where_the_probe_finds_the_bug():
    for fix in paddleseg_compat.FIXES:
        owner, name = compat.locate(fix.module, fix.qualname)
        installed = hasattr(owner.__dict__[name], compat.ORIGINAL)
        assert installed == paddleseg_compat.needed(fix.qualname), fix.qualname


def test_cross_entropy_fix():
    from paddleseg.models.losses import CrossEntropyLoss
    logit = np.random.randn(2, 5, 4, 6).astype("float32")
    label = np.random.randint(0, 5, (2, 4, 6)).astype("int64")
    label[0, 0] = 255
    loss_fn = CrossEntropyLoss()
    # what forward hands to _post_process_loss
    logit_t = paddle.to_tensor(logit).transpose([0, 2, 3, 1])
    label_t = paddle.to_tensor(label)
    pixel_loss = paddle.nn.functional.cross_entropy(logit_t, label_t, ignore_index=255,
                                                    reduction="none")
    unpatched = paddleseg_compat.original("CrossEntropyLoss._post_process_loss")
    with _fails_if_needed("CrossEntropyLoss._post_process_loss", TypeError,
                          match="float32.*int64"):
        unpatched(loss_fn, logit_t, label_t, None, pixel_loss)
    value = float(loss_fn(paddle.to_tensor(logit), label_t))
    assert value == pytest.approx(_numpy_cross_entropy(logit, label), rel=1e-5)


def test_loss_computation_fix():
    import importlib
    train_module = importlib.import_module("paddleseg.core.train")
    from paddleseg.models.losses import CrossEntropyLoss
    logits = [paddle.randn([1, 3, 4, 4]), paddle.randn([1, 3, 4, 4])]
    labels = paddle.randint(0, 3, [1, 4, 4])
    losses = {"types": [CrossEntropyLoss(), CrossEntropyLoss()], "coef": [1.0, 0.4]}
    unpatched = paddleseg_compat.original("loss_computation")(logits, labels, None, losses)
    if paddleseg_compat.needed("loss_computation"):
        with pytest.raises(IndexError):  # what paddleseg 2.8.0's train() does when logging
            [loss.numpy()[0] for loss in unpatched]
    patched = train_module.loss_computation(logits, labels, None, losses)
    # what train() logs, either way: paddleseg 2.8.0 `loss.numpy()[0]`, later `float(loss)`
    assert [loss.size for loss in patched] == [1, 1]
    expected = [_numpy_cross_entropy(l.numpy(), labels.numpy()) * c
                for l, c in zip(logits, losses["coef"])]
    np.testing.assert_allclose([float(loss) for loss in patched], expected, rtol=1e-5)


def test_calculate_area_fix():
    from paddleseg.utils import metrics
    num_classes = 6
    pred = np.random.randint(0, num_classes, (2, 1, 9, 7))
    label = np.random.randint(0, num_classes, (2, 1, 9, 7))
    label[:, :, :2] = 255
    pred_t, label_t = paddle.to_tensor(pred, dtype="int32"), paddle.to_tensor(label)
    with _fails_if_needed("calculate_area", ValueError, match="axis is expected"):
        paddleseg_compat.original("calculate_area")(pred_t, label_t, num_classes)
    intersect, pred_area, label_area = metrics.calculate_area(pred_t, label_t, num_classes)
    valid = label != 255
    for c in range(num_classes):
        assert int(pred_area[c]) == np.sum((pred == c) & valid)
        assert int(label_area[c]) == np.sum(label == c)
        assert int(intersect[c]) == np.sum((pred == c) & (label == c))
    with pytest.raises(ValueError, match="should be equal"):  # PaddleSeg's own check
        metrics.calculate_area(pred_t[:, :, 1:], label_t, num_classes)


# ------------------------------------------------- training and evaluation (engine)
def _iou_of_an_unseen_class():
    """What the installed PaddleSeg counts as the IoU of a class neither predicted nor
    labelled: 0 in paddleseg 2.8.0, 1 on PaddleSeg's develop branch."""
    from paddleseg.utils import metrics
    zero = paddle.zeros([1], "int64")
    class_iou, _ = metrics.mean_iou(zero, zero, zero)
    return float(class_iou[0])


def _numpy_miou(model, dataset, ade_root):
    """mIoU from the model's predictions on the raw validation PNGs, PaddleSeg style:
    label 0 is ignored, labels shift down by one, classes never seen count as the
    installed PaddleSeg counts them (:func:`_iou_of_an_unseen_class`)."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    model.eval()
    for index, (_, label_path) in enumerate(dataset.file_list):
        data = dataset[index]
        with paddle.no_grad():
            pred, _ = infer.inference(model, paddle.to_tensor(data["img"][None]),
                                      trans_info=data["trans_info"])
        label = np.asarray(Image.open(label_path)).astype(np.int64) - 1
        pred = pred.numpy()[0, 0].astype(np.int64)
        assert pred.shape == label.shape
        valid = label >= 0
        confusion += np.bincount(label[valid] * NUM_CLASSES + pred[valid],
                                 minlength=NUM_CLASSES ** 2).reshape(NUM_CLASSES, NUM_CLASSES)
    intersect = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersect
    return np.mean(np.where(union > 0, intersect / np.maximum(union, 1),
                            _iou_of_an_unseen_class()))


def test_train_and_evaluate_upernet_pale_t(tiny_config, ade_root, tmp_path):
    path, opts = tiny_config
    save_dir = str(tmp_path / "run")
    paddle.seed(0)
    initial = build_model(path, opts).state_dict()
    train_main(["--config", path, "--device", "cpu", "--save_dir", save_dir, "--iters", "3",
                "--batch_size", "2", "--save_interval", "3", "--log_iters", "1",
                "--seed", "0", "--opts", *opts])
    weights = os.path.join(save_dir, "iter_3", "model.pdparams")
    trained = paddle.load(weights)
    assert set(trained) == set(initial)
    for key in ("backbone.stages.0.0.attn.query.linear.weight", "head.conv_seg.weight",
                "head.fpn_bottleneck._conv.weight"):
        assert not np.allclose(trained[key].numpy(), initial[key].numpy()), key

    miou, acc = val_main(["--config", path, "--device", "cpu", "--model_path", weights,
                          "--opts", *opts])
    model = build_model(path, opts)
    load_segmentation_weights(model, weights)
    dataset = SegBuilder(load_config(path, opts=opts)).val_dataset
    assert miou == pytest.approx(_numpy_miou(model, dataset, ade_root), abs=1e-9)
    assert 0.0 <= acc <= 1.0

    # multi-scale + flip runs through paddleseg's aug_inference
    miou_ms, _ = val_main(["--config", path, "--device", "cpu", "--model_path", weights,
                           "--aug_eval", "--flip_horizontal", "--scales", "0.75", "1.0",
                           "--opts", *opts])
    assert 0.0 <= miou_ms <= 1.0


def test_val_rejects_bad_weights_and_flags(tiny_config, tmp_path):
    path, opts = tiny_config
    classification = tmp_path / "cls.pdparams"
    paddle.save(paddle_pale.create_model("pale_t", **TINY).state_dict(), str(classification))
    with pytest.raises(ValueError,
                       match=r"missing keys \(\d+\): backbone.*model.backbone.pretrained"):
        val_main(["--config", path, "--device", "cpu", "--model_path", str(classification),
                  "--opts", *opts])
    with pytest.raises(FileNotFoundError, match="nowhere.pdparams"):
        val_main(["--config", path, "--device", "cpu", "--model_path",
                  str(tmp_path / "nowhere.pdparams"), "--opts", *opts])
    with pytest.raises(SystemExit):
        val_main(["--config", path, "--model_path", "x", "--scales", "0.5", "1.0"])
    with pytest.raises(FileNotFoundError, match="missing.yml"):
        load_config(str(tmp_path / "missing.yml"))


def test_missing_data_set_is_an_error_not_a_download(tiny_config, tmp_path, monkeypatch):
    """PaddleSeg's ADE20K downloads itself into a dataset_root that does not exist."""
    import paddleseg.datasets.ade as ade

    def no_download(*args, **kwargs):
        raise AssertionError("PaddleSeg started a download")
    monkeypatch.setattr(ade, "download_file_and_uncompress", no_download)
    path, opts = tiny_config
    weights = str(tmp_path / "model.pdparams")
    paddle.save(build_model(path, opts).state_dict(), weights)
    missing = str(tmp_path / "nowhere" / "ADEChallengeData2016")
    with pytest.raises(FileNotFoundError, match=r"val_dataset.dataset_root '.*nowhere.*' is "
                                                r"not a directory.*--opts val_dataset"):
        val_main(["--config", path, "--device", "cpu", "--model_path", weights,
                  "--opts", *opts, f"val_dataset.dataset_root={missing}"])
    with pytest.raises(FileNotFoundError, match=r"train_dataset.dataset_root '.*nowhere"):
        train_main(["--config", path, "--device", "cpu", "--save_dir", str(tmp_path / "run"),
                    "--iters", "1", "--opts", *opts, f"train_dataset.dataset_root={missing}"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no images/validation/"):
        val_main(["--config", path, "--device", "cpu", "--model_path", weights,
                  "--opts", *opts, f"val_dataset.dataset_root={empty}"])
    assert not os.path.exists(tmp_path / "nowhere") and not os.listdir(empty)


def test_val_evaluates_mismatched_weights_only_when_told(tiny_config, tmp_path):
    path, opts = tiny_config
    state = build_model(path, opts).state_dict()
    state.pop("head.conv_seg.weight")
    weights = str(tmp_path / "partial.pdparams")
    paddle.save(state, weights)
    with pytest.raises(ValueError, match=r"missing keys \(1\): head.conv_seg.weight.*"
                                         r"--allow_mismatched_weights"):
        val_main(["--config", path, "--device", "cpu", "--model_path", weights,
                  "--opts", *opts])
    miou, acc = val_main(["--config", path, "--device", "cpu", "--model_path", weights,
                          "--allow_mismatched_weights", "--opts", *opts])
    assert 0.0 <= miou <= 1.0 and 0.0 <= acc <= 1.0


# ----------------------------------------------------- classification checkpoints
def test_classification_checkpoint_loads_with_only_the_classifier_left_out(
        tiny_config, tmp_path, caplog):
    path, opts = tiny_config
    checkpoint = str(tmp_path / "best.pdparams")
    source = paddle_pale.create_model("pale_t", **TINY).state_dict()
    paddle.save(source, checkpoint)  # what tools/train.py writes as best.pdparams

    with caplog.at_level(logging.INFO, logger="paddle_pale"):
        model = build_model(path, opts + [f"model.backbone.pretrained={checkpoint}"])
    log = caplog.text
    assert "left out classifier weights: head.bias, head.weight, norm.bias, norm.weight" in log
    assert "missing keys" not in log and "unexpected keys" not in log
    for key, value in model.backbone.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), source[key].numpy(), err_msg=key)

    # the same report when called directly, and an exported backbone loads as well
    backbone = PaleTransformer(arch="pale_t", **TINY)
    assert load_weights(backbone, checkpoint) == ([], [])
    exported = str(tmp_path / "backbone.pdparams")
    paddle.save(backbone.state_dict(), exported)
    assert load_weights(PaleTransformer(arch="pale_t", **TINY), exported) == ([], [])


def test_checkpoint_of_another_variant_fails_loudly(tiny_config, tmp_path):
    path, opts = tiny_config
    checkpoint = str(tmp_path / "pale_s.pdparams")
    paddle.save(paddle_pale.create_model("pale_s", **TINY).state_dict(), checkpoint)
    with pytest.raises(Exception, match="shape mismatch.*wrong variant"):
        build_model(path, opts + [f"model.backbone.pretrained={checkpoint}"])


# --------------------------------------------------------------------- configs
@pytest.mark.parametrize("arch", paddle_pale.list_models())
def test_shipped_configs_hold_the_recipe(arch):
    path = os.path.join(ROOT, "configs", "seg", f"upernet_{arch}_ade20k_512x512_160k.yml")
    config = load_config(path)  # PaddleSeg's own checks (losses vs logits, keys) pass
    assert config.model_cfg["type"] == "UPerNet"
    assert config.model_cfg["backbone"]["type"] == "PaleTransformer"
    assert config.model_cfg["backbone"]["arch"] == arch
    # CSWin's stochastic depth for its T / S / B, the one value besides arch per file
    assert config.model_cfg["backbone"]["drop_path_rate"] == {
        "pale_t": 0.3, "pale_s": 0.4, "pale_b": 0.6}[arch]
    assert config.model_cfg["enable_auxiliary_loss"] is True
    assert len(config.loss_cfg["types"]) == len(config.loss_cfg["coef"]) == 2
    assert config.iters == 160000 and config.batch_size * 8 == 16
    assert config.optimizer_cfg["type"] == "AdamW"
    assert config.optimizer_cfg["weight_decay"] == 0.01
    assert config.lr_scheduler_cfg["learning_rate"] == 6e-5
    assert config.lr_scheduler_cfg["warmup_iters"] == 1500
    crop = config.train_dataset_cfg["transforms"][1]
    assert crop == dict(type="RandomPaddingCrop", crop_size=[512, 512])
    assert "embed_dims" not in config.model_cfg["backbone"]  # sizes live in the registry


# ---------------------------------------------------------------------- FLOPs
def test_seg_flop_report_adds_up(tiny_config):
    path, opts = tiny_config
    report = seg_model_report(path, (64, 96), opts=opts)
    backbone = PaleTransformer(arch="pale_t", **TINY)
    backbone_macs, _ = count_flops(backbone, (3, 64, 96))
    assert report["breakdown"]["backbone"] == backbone_macs
    assert report["flops"] == sum(report["breakdown"].values())
    assert report["breakdown"]["head"] > 0
    assert 0 < report["params_without_aux"] < report["params"]
    # PaddleSeg's UPerNetHead builds conv_last but never calls it
    assert "head.conv_last" in report["text"] and report["params_unused"] > 0


# ----------------------------------------------------------------- multi-process
def test_distributed_launch_two_cpu_processes(tiny_config, tmp_path):
    path, opts = tiny_config
    save_dir, log_dir = str(tmp_path / "run"), str(tmp_path / "log")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", log_dir, os.path.join(ROOT, "tools", "train_seg.py"),
               "--config", path, "--device", "cpu", "--save_dir", save_dir, "--iters", "2",
               "--batch_size", "1", "--save_interval", "2", "--log_iters", "1", "--opts", *opts]
    result = subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True)
    logs = {name: open(os.path.join(log_dir, name)).read() for name in os.listdir(log_dir)
            if name.startswith("workerlog")}
    assert result.returncode == 0, result.stdout[-3000:] + "\n".join(logs.values())[-3000:]
    assert sorted(logs) == ["workerlog.0", "workerlog.1"]
    assert "iter: 2/2" in logs["workerlog.0"]
    assert os.path.isfile(os.path.join(save_dir, "iter_2", "model.pdparams"))


# ---------------------------------------------------------------- export and deploy
def _tool_module(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported_upernet(tiny_config, tmp_path_factory):
    """Trained-looking weights (random, saved as training writes them), exported by
    tools/export_seg.py the way PaddleSeg's tools/export.py exports: any image size."""
    path, opts = tiny_config
    folder = tmp_path_factory.mktemp("seg_export")
    paddle.seed(7)
    model = build_model(path, opts)
    weights = str(folder / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    written = _tool_module("export_seg").main(
        ["--config", path, "--model_path", weights, "--save_dir", str(folder / "infer"),
         "--output_op", "none", "--opts", *opts])
    return model, written


@pytest.mark.parametrize("onednn", [True, False])
def test_exported_upernet_matches_eager_logits_at_any_size(exported_upernet, onednn):
    from paddle_pale.inference import create_predictor
    model, (program, params, deploy) = exported_upernet
    with open(deploy) as f:
        info = yaml.safe_load(f)["Deploy"]
    assert info["input_shape"] == [-1, 3, -1, -1] and info["model"] == "model.json"
    assert info["transforms"][-1]["type"] == "Normalize"
    predictor = create_predictor(program[:-len(".json")], onednn=onednn)
    model.eval()
    rng = np.random.RandomState(0)
    for height, width in ((64, 96), (97, 131)):
        image = rng.randn(1, 3, height, width).astype("float32")
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(image.shape))
        handle.copy_from_cpu(image)
        predictor.run()
        got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        with paddle.no_grad():
            expected = model(paddle.to_tensor(image))[0].numpy()
        assert got.shape == (1, NUM_CLASSES, height, width)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_onednn_bilinear_interpolation_needs_the_placement_pass_left_out(exported_upernet):
    # Paddle 3.3.1's oneDNN bilinear_interp cannot run ("ConvertPirAttribute2Runtime
    # Attribute not support ArrayAttribute<DoubleAttribute>"); UPerNet upsamples with it
    from paddle import inference
    from paddle_pale.inference import onednn_passes_to_delete
    _, (program, params, _) = exported_upernet
    assert onednn_passes_to_delete(program) == ["onednn_placement_pass"]
    config = inference.Config(program, params)
    config.disable_gpu()
    config.enable_onednn()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape([1, 3, 64, 64])
    handle.copy_from_cpu(np.zeros([1, 3, 64, 64], "float32"))
    with pytest.raises(NotImplementedError, match="ArrayAttribute<pir::DoubleAttribute>"):
        predictor.run()


def test_exported_argmax_is_the_eager_prediction(tiny_config, exported_upernet, tmp_path):
    path, opts = tiny_config
    model, (_, weights_path, _) = exported_upernet
    weights = str(tmp_path / "model.pdparams")
    paddle.save(model.state_dict(), weights)
    program, _, _ = _tool_module("export_seg").main(
        ["--config", path, "--model_path", weights, "--save_dir", str(tmp_path / "infer"),
         "--opts", *opts])
    from paddle_pale.inference import create_predictor
    predictor = create_predictor(program[:-len(".json")])
    image = np.random.RandomState(1).randn(1, 3, 72, 96).astype("float32")
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(image.shape))
    handle.copy_from_cpu(image)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    model.eval()
    with paddle.no_grad():
        expected = model(paddle.to_tensor(image))[0].argmax(axis=1).numpy()
    assert got.dtype == np.int32 and (got == expected).mean() > 0.999
