"""Export (backbone / Paddle inference / ONNX) and predict, against the dygraph model."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_pale import create_model
from paddle_pale.data.transforms import build_eval_transform, load_image
from paddle_pale.export import export, load_checkpoint
from paddle_pale.inference import ImageClassifier
from paddle_pale.utils.io import load_weights
from paddle_pale.utils.tool import call_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a small pale_t: every stage pads its 16/8/4/2 rows and columns to the pale size 7
ARCH = dict(name="pale_t", num_classes=10, depths=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
            num_heads=[2, 2, 2, 4], drop_path_rate=0.1)
SIZE = 64
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
TOL = 1e-4


def _tiny(seed, **overrides):
    paddle.seed(seed)
    kwargs = {k: v for k, v in ARCH.items() if k != "name"}
    return create_model(ARCH["name"], **dict(kwargs, **overrides))


def _reference(path):
    """The dygraph model, rebuilt by hand from the checkpoint's weights file."""
    model = _tiny(0)
    model.set_state_dict(paddle.load(path))
    model.eval()
    return model


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools",
                                                                     name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _export_tool(argv):
    """tools/export.py as its command line runs it (a user error: one line, exit 2)."""
    return call_tool(_tool("export").main, argv, prog="export.py")


def _sample_images():
    import sklearn.datasets
    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    return [os.path.join(folder, name) for name in ("china.jpg", "flower.jpg")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A training checkpoint as the trainer writes it, EMA weights apart from the model's."""
    folder = tmp_path_factory.mktemp("run")
    prefix = str(folder / "best")
    paddle.save(_tiny(1).state_dict(), prefix + ".pdparams")
    paddle.save(_tiny(2).state_dict(), prefix + ".pdema")
    paddle.save({"epoch": 7, "best_top1": 0.5, "arch": ARCH, "input_size": SIZE,
                 "crop_pct": 0.875, "mean": MEAN, "std": STD}, prefix + ".pdstates")
    return prefix


@pytest.fixture(scope="module")
def inference_model(checkpoint, tmp_path_factory):
    """Exported through the command-line tool."""
    prefix = str(tmp_path_factory.mktemp("export") / "pale_t")
    _export_tool(["inference", "--checkpoint", checkpoint, "--output", prefix])
    return prefix


@pytest.fixture
def batch():
    return np.random.RandomState(3).randn(3, 3, SIZE, SIZE).astype("float32")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_inference_model_matches_dygraph_ema_weights(checkpoint, inference_model, batch,
                                                     batch_size):
    images = batch[:batch_size]
    expected = _reference(checkpoint + ".pdema")(paddle.to_tensor(images)).numpy()
    got = ImageClassifier(inference_model).logits(images)
    assert got.shape == (batch_size, ARCH["num_classes"])
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    # the EMA weights, not the raw ones, were exported
    raw = _reference(checkpoint + ".pdparams")(paddle.to_tensor(images)).numpy()
    assert np.abs(raw - got).max() > 100 * TOL


# sizes the pale size 7 does not divide at any stage (97x131) or only at some
SIZES = [(224, 224), (256, 256), (97, 131), (320, 480)]


@pytest.mark.parametrize("onednn", [True, False])
def test_one_inference_model_serves_every_image_size(checkpoint, inference_model, onednn):
    reference = _reference(checkpoint + ".pdema")
    classifier = ImageClassifier(inference_model, onednn=onednn)
    rng = np.random.RandomState(5)
    for height, width in SIZES:
        images = rng.randn(1, 3, height, width).astype("float32")
        expected = reference(paddle.to_tensor(images)).numpy()
        np.testing.assert_allclose(classifier.logits(images), expected, atol=TOL, rtol=0,
                                   err_msg=f"{height}x{width}")


def test_input_size_fixes_the_program_size(checkpoint, tmp_path, batch):
    prefix = str(tmp_path / "fixed")
    _export_tool(["inference", "--checkpoint", checkpoint, "--output", prefix,
                  "--input-size", "96"])
    with open(prefix + ".meta.json") as f:
        meta = json.load(f)
    assert meta["input_size"] == 96 and meta["input_shape"] == [-1, 3, 96, 96]
    classifier = ImageClassifier(prefix)
    images = np.random.RandomState(4).randn(2, 3, 96, 96).astype("float32")
    expected = _reference(checkpoint + ".pdema")(paddle.to_tensor(images)).numpy()
    np.testing.assert_allclose(classifier.logits(images), expected, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match=r"\[B, 3, 96, 96\], got \[3, 3, 64, 64\]"):
        classifier.logits(batch)


def test_inference_meta_records_checkpoint_preprocessing(checkpoint, inference_model):
    with open(inference_model + ".meta.json") as f:
        meta = json.load(f)
    assert meta["arch"] == ARCH and meta["num_classes"] == 10 and meta["epoch"] == 7
    assert meta["source_checkpoint"] == os.path.abspath(checkpoint)
    assert meta["weights"] == "best.pdema"
    assert meta["input_size"] == SIZE and meta["input_shape"] == [-1, 3, -1, -1]
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["crop_pct"] == 0.875 and meta["interpolation"] == "bicubic"


def test_onnx_matches_dygraph(checkpoint, batch, tmp_path, capfd):
    pytest.importorskip("paddle2onnx")
    ort = pytest.importorskip("onnxruntime")
    path, meta_path = export("onnx", checkpoint, str(tmp_path / "pale_t"))
    # its own sidecar: an inference export named pale_t keeps pale_t.meta.json
    assert path.endswith(".onnx") and meta_path == path + ".meta.json"
    assert os.path.isfile(meta_path)
    capfd.readouterr()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    # exported clean: onnxruntime finds no initializer to remove (it warned 71 times)
    assert "Removing initializer" not in capfd.readouterr().err
    assert session.get_inputs()[0].shape[2:] != [SIZE, SIZE]  # symbolic H and W
    reference = _reference(checkpoint + ".pdema")
    rng = np.random.RandomState(6)
    for images in (batch[:1], batch, rng.randn(2, 3, 97, 131).astype("float32")):
        got, = session.run(None, {session.get_inputs()[0].name: images})
        expected = reference(paddle.to_tensor(images)).numpy()
        np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)


def test_onnx_without_paddle2onnx_names_the_package(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="needs the paddle2onnx package"):
        export("onnx", checkpoint, str(tmp_path / "pale_t"))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("use_ema, weights", [(True, "pdema"), (False, "pdparams")])
def test_backbone_export_loads_without_missing_keys(checkpoint, tmp_path, use_ema, weights):
    path, meta_path = export("backbone", checkpoint, str(tmp_path / "backbone"),
                             use_ema=use_ema)
    assert path.endswith(".pdparams") and meta_path.endswith(".meta.json")
    exported = paddle.load(path)
    assert not [k for k in exported if k.startswith(("norm.", "head."))]
    source = paddle.load(f"{checkpoint}.{weights}")
    assert set(exported) == {k for k in source if not k.startswith(("norm.", "head."))}
    for key, value in exported.items():
        np.testing.assert_array_equal(value.numpy(), source[key].numpy(), err_msg=key)

    backbone = _tiny(5, with_classifier=False)
    missing, unexpected = load_weights(backbone, path)
    assert missing == [] and unexpected == []
    backbone.eval()
    image = paddle.to_tensor(np.random.RandomState(4).randn(1, 3, 96, 80).astype("float32"))
    for got, expected in zip(backbone.forward_pyramid(image),
                             _reference(f"{checkpoint}.{weights}").forward_pyramid(image)):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, rtol=0)

    with open(meta_path) as f:
        meta = json.load(f)
    assert meta["format"] == "backbone" and meta["variant"] == "pale_t"
    assert meta["arch"] == ARCH and meta["weights"] == f"best.{weights}"
    assert meta["source_checkpoint"] == os.path.abspath(checkpoint)
    assert meta["input_size"] == SIZE
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)


def test_predict_tool_prints_topk_of_sample_images(checkpoint, inference_model):
    images = _sample_images() + _sample_images()[:1]  # 3 files in batches of 2
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "predict.py"), "--model", inference_model,
         "--topk", "3", "--batch-size", "2", *images],
        capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 3
    results = [json.loads(line) for line in lines]

    reference = _reference(checkpoint + ".pdema")
    transform = build_eval_transform(SIZE, 0.875, MEAN, STD, "bicubic")
    pixels = paddle.to_tensor(np.stack([transform(load_image(p)) for p in images]))
    probs, ids = paddle.topk(F.softmax(reference(pixels), axis=-1), k=3)
    for path, result, row_ids, row_probs in zip(images, results, ids.numpy(), probs.numpy()):
        assert set(result) == {"image", "class_ids", "probs"}
        assert result["image"] == path
        assert result["class_ids"] == row_ids.tolist()
        np.testing.assert_allclose(result["probs"], row_probs, atol=1e-5, rtol=0)
        assert result["probs"] == sorted(result["probs"], reverse=True)
        assert 0 < result["probs"][-1] and result["probs"][0] <= 1
    # same file in another batch: same classes, probabilities to float32 precision
    assert results[0]["class_ids"] == results[2]["class_ids"]
    np.testing.assert_allclose(results[0]["probs"], results[2]["probs"], atol=1e-6)


def test_predict_reports_each_image_and_names_a_bad_one(inference_model, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    good = _sample_images()
    classifier = ImageClassifier(inference_model)
    results = classifier.predict([good[0], str(corrupt), str(tmp_path / "absent.png"),
                                  good[1]], k=2, batch_size=2)
    assert [r["image"] for r in results] == [good[0], str(corrupt),
                                             str(tmp_path / "absent.png"), good[1]]
    assert "corrupt.jpg" in results[1]["error"] and "absent.png" in results[2]["error"]
    assert set(results[1]) == set(results[2]) == {"image", "error"}
    # the good images get what they get alone
    for result, path in ((results[0], good[0]), (results[3], good[1])):
        alone = classifier.predict([path], k=2)[0]
        assert result["class_ids"] == alone["class_ids"]
        np.testing.assert_allclose(result["probs"], alone["probs"], atol=1e-6)


def _predict_tool(model, *images):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "predict.py"),
                           "--model", model, "--topk", "2", *images],
                          capture_output=True, text=True, check=False)


def test_predict_tool_exits_1_only_when_every_image_failed(inference_model, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"junk")
    run = _predict_tool(inference_model, str(corrupt), _sample_images()[0])
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 2 and "error" in lines[0] and len(lines[1]["class_ids"]) == 2
    assert "1 of 2 image(s) could not be read" in run.stderr
    run = _predict_tool(inference_model, str(corrupt), str(tmp_path / "absent.png"))
    assert run.returncode == 1
    assert [sorted(json.loads(line)) for line in run.stdout.splitlines()] == [
        ["error", "image"], ["error", "image"]]


@pytest.mark.parametrize("suffix", ["", ".json", ".pdiparams", ".meta.json", "/.."])
def test_the_model_is_found_from_its_prefix_any_of_its_files_or_its_folder(inference_model,
                                                                           suffix):
    # "/..": the folder holding it; ".meta.json" was read as "pale_t.meta" + ".json"
    name = inference_model + suffix if suffix != "/.." else os.path.dirname(inference_model)
    assert ImageClassifier(name).prefix == inference_model


def test_predict_without_model_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json.*tools/export.py inference"):
        ImageClassifier(str(tmp_path / "nothing"))


def test_missing_checkpoint_is_named(tmp_path, capsys):
    missing = str(tmp_path / "no_run" / "best")
    with pytest.raises(FileNotFoundError, match="no_run/best.pdparams"):
        load_checkpoint(missing)
    with pytest.raises(SystemExit) as exit_info:
        _export_tool(["backbone", "--checkpoint", missing, "--output",
                      str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "no training checkpoint at" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out.pdparams")


def test_other_variant_than_checkpoint_is_refused(checkpoint):
    with pytest.raises(ValueError, match="trained as pale_t.*name='pale_s'.*wrong variant"):
        load_checkpoint(checkpoint, arch="pale_s")
    with pytest.raises(ValueError, match="num_classes=1000 .checkpoint has 10"):
        load_checkpoint(checkpoint, arch={"name": "pale_t", "num_classes": 1000})


@pytest.fixture
def bare_weights(checkpoint, tmp_path):
    """Only the .pdparams of the checkpoint, as after copying it alone."""
    shutil.copy(checkpoint + ".pdparams", tmp_path / "weights.pdparams")
    return str(tmp_path / "weights.pdparams")


def test_bare_weights_need_and_check_the_variant(checkpoint, bare_weights):
    with pytest.raises(ValueError, match="no .pdstates.*--model"):
        load_checkpoint(bare_weights)
    with pytest.raises(ValueError, match="shape mismatch.*wrong variant"):
        load_checkpoint(bare_weights, arch={"name": "pale_s", "depths": [1, 1, 1, 1]})
    arch = {k: v for k, v in ARCH.items() if k != "num_classes"}
    model, meta = load_checkpoint(bare_weights, arch=arch)
    assert meta["num_classes"] == 10  # read from the head's shape
    assert meta["input_size"] == 224 and meta["crop_pct"] == 0.875  # pretrained_cfg
    for key, value in paddle.load(checkpoint + ".pdparams").items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value.numpy())


def test_states_that_do_not_fit_the_weights_are_refused(checkpoint, tmp_path):
    prefix = str(tmp_path / "best")
    shutil.copy(checkpoint + ".pdparams", prefix + ".pdparams")
    paddle.save({"epoch": 1, "arch": dict(ARCH, depths=[1, 2, 1, 1]), "input_size": SIZE},
                prefix + ".pdstates")
    with pytest.raises(ValueError,
                       match=r"do not fit pale_t .*missing keys \(\d+\): .*stages\.1\.1"):
        load_checkpoint(prefix)


def test_export_never_overwrites_the_checkpoint(checkpoint):
    before = open(checkpoint + ".pdparams", "rb").read()
    with pytest.raises(ValueError, match="refusing to overwrite the source checkpoint"):
        export("backbone", checkpoint, checkpoint)
    assert open(checkpoint + ".pdparams", "rb").read() == before


@pytest.fixture
def own_checkpoint(checkpoint, tmp_path):
    """A copy of the checkpoint in a folder of its own, which the test may break."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for suffix in (".pdparams", ".pdema", ".pdstates"):
        shutil.copy(checkpoint + suffix, folder / ("best" + suffix))
    return folder


@pytest.mark.parametrize("output", [
    "link/best",          # a symbolic link to the checkpoint's folder
    "ckpt/sub/../best",   # .. back into it
    "hard/best",          # another name (hard link) of the checkpoint's weights file
])
def test_no_path_trick_overwrites_the_checkpoint(own_checkpoint, tmp_path, monkeypatch, capsys,
                                                 output):
    monkeypatch.chdir(tmp_path)
    os.symlink("ckpt", "link")
    (tmp_path / "ckpt" / "sub").mkdir()
    (tmp_path / "hard").mkdir()
    os.link(own_checkpoint / "best.pdparams", tmp_path / "hard" / "best.pdparams")
    before = {p.name: p.read_bytes() for p in own_checkpoint.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        _export_tool(["backbone", "--checkpoint", "ckpt/best", "--output", output])
    assert exit_info.value.code == 2
    assert "refusing to overwrite the source checkpoint file" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in own_checkpoint.iterdir() if p.is_file()} == before


def test_output_below_a_file_is_a_clear_error(checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as exit_info:
        _export_tool(["backbone", "--checkpoint", checkpoint, "--output",
                      str(tmp_path / "notes.txt" / "backbone")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err and "Traceback" not in err


def test_wrong_variant_error_is_short(checkpoint, tmp_path):
    # every tensor of another variant mismatches; the message named each (6-25 KB)
    weights = str(tmp_path / "pale_s.pdparams")
    paddle.save(create_model("pale_s", depths=[1, 1, 1, 1]).state_dict(), weights)
    with pytest.raises(ValueError, match=r"shape mismatch.*\(\+\d+ more\)") as error:
        load_weights(_tiny(0), weights)
    assert len(str(error.value)) < 3000  # 20 tensors named, then a count


def test_unknown_model_argument_in_states_is_named(checkpoint, tmp_path):
    prefix = str(tmp_path / "best")
    shutil.copy(checkpoint + ".pdparams", prefix + ".pdparams")
    paddle.save({"arch": dict(ARCH, window_size=7)}, prefix + ".pdstates")
    with pytest.raises(ValueError, match="cannot build pale_t .*window_size"):
        load_checkpoint(prefix)


@pytest.mark.parametrize("mode,extra", [("pale_vanilla", {}),
                                        ("cross_shaped", {"stripe_width": [2, 3, 2, 7]})])
def test_attention_modes_export_with_symbolic_sizes(mode, extra, tmp_path):
    # the mode travels in the checkpoint's arch; the program takes any H, W (64: stage
    # maps 16/8/4/2, 97x131: every stage padded), run by the predictor with oneDNN
    arch = dict(ARCH, attention_mode=mode, **extra)
    prefix = str(tmp_path / "best")
    paddle.seed(6)
    model = create_model("pale_t", **{k: v for k, v in arch.items() if k != "name"})
    model.eval()
    paddle.save(model.state_dict(), prefix + ".pdparams")
    paddle.save({"epoch": 1, "arch": arch, "input_size": SIZE}, prefix + ".pdstates")
    exported = str(tmp_path / "export" / mode)
    export("inference", prefix, exported)
    classifier = ImageClassifier(exported)
    rng = np.random.RandomState(7)
    for height, width in [(64, 64), (97, 131)]:
        images = rng.randn(1, 3, height, width).astype("float32")
        expected = model(paddle.to_tensor(images)).numpy()
        np.testing.assert_allclose(classifier.logits(images), expected, atol=TOL, rtol=0,
                                   err_msg=f"{mode} {height}x{width}")


def test_predict_tool_gives_a_decompression_bomb_an_error_line_and_classifies_the_rest(
        inference_model, tmp_path):
    from PIL import Image
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 48 KB on disk, 400 M pixels decoded
    run = _predict_tool(inference_model, _sample_images()[0], str(bomb), _sample_images()[1])
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["image"] for line in lines] == [_sample_images()[0], str(bomb),
                                                 _sample_images()[1]]
    assert "DecompressionBombError" in lines[1]["error"] and "bomb.png" in lines[1]["error"]
    assert len(lines[0]["class_ids"]) == len(lines[2]["class_ids"]) == 2
    assert "Traceback" not in run.stderr
def test_predict_tool_says_when_topk_exceeds_the_classes_and_prints_short_probs(
        inference_model):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "predict.py"),
                          "--model", inference_model, "--topk", "20", _sample_images()[0]],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "--topk 20 is more than the model's 10 classes: showing all 10" in run.stderr
    result = json.loads(run.stdout)
    assert len(result["probs"]) == 10 and sum(result["probs"]) == pytest.approx(1, abs=1e-4)
    # at most 6 significant digits each (float32 noise was printed to 17)
    assert all(float(f"{p:.6g}") == p for p in result["probs"])
