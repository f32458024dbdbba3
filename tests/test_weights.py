"""One loader fits weights to models: strict by default (only the classifier may be left
out of pretrained weights), one opt-out, a ``loaded N/M tensors`` report."""
import logging

import numpy as np
import paddle
import pytest

from engine_helpers import TINY_ARCH
from paddle_pale.models.registry import create_model
from paddle_pale.utils.io import load_weights

MODEL_ARGS = {k: v for k, v in TINY_ARCH.items() if k != "name"}


def _save(state, path):
    paddle.save(state, str(path))
    return str(path)


def test_pretrained_weights_lacking_most_tensors_are_an_error_listing_them(tmp_path):
    full = create_model("pale_t", **MODEL_ARGS).state_dict()
    kept = dict(list(full.items())[:3])
    path = _save(kept, tmp_path / "partial.pdparams")
    with pytest.raises(ValueError) as error:
        create_model("pale_t", pretrained=path, **MODEL_ARGS)
    message = str(error.value)
    missing = [k for k in full if k not in kept and not k.startswith(("norm.", "head."))]
    assert f"missing keys ({len(missing)})" in message
    assert missing[0] in message and missing[19] in message and missing[20] not in message
    assert f"(+{len(missing) - 20} more)" in message
    assert "strict=False" in message and "--allow_mismatched_weights" in message


def test_strict_false_loads_what_fits_and_says_how_much(tmp_path, caplog):
    source = create_model("pale_t", **MODEL_ARGS)
    keys = list(source.state_dict())[:3]
    path = _save({k: source.state_dict()[k] for k in keys}, tmp_path / "partial.pdparams")
    with caplog.at_level(logging.INFO, logger="paddle_pale"):
        model = create_model("pale_t", pretrained=path, strict=False, **MODEL_ARGS)
    total = len(model.state_dict())
    assert f"loaded 3/{total} tensors from {path}" in caplog.text
    assert "strict=False" in caplog.text  # the warning names what was not loaded
    for key in keys:
        np.testing.assert_array_equal(model.state_dict()[key].numpy(),
                                      source.state_dict()[key].numpy())


def test_a_classifier_of_another_size_or_absent_is_left_out(tmp_path, caplog):
    source = create_model("pale_t", **MODEL_ARGS)
    path = _save(source.state_dict(), tmp_path / "cls.pdparams")
    with caplog.at_level(logging.INFO, logger="paddle_pale"):
        other = create_model("pale_t", pretrained=path, **dict(MODEL_ARGS, num_classes=7))
    total = len(other.state_dict())
    assert f"loaded {total - 2}/{total} tensors" in caplog.text  # head.weight, head.bias
    assert "left out classifier weights: head.bias, head.weight" in caplog.text
    backbone = create_model("pale_t", pretrained=path, with_classifier=False, **MODEL_ARGS)
    np.testing.assert_array_equal(backbone.state_dict()["stages.0.0.norm1.weight"].numpy(),
                                  source.state_dict()["stages.0.0.norm1.weight"].numpy())
    # backbone weights into a classifier (fine-tuning): the classifier stays at init
    backbone_path = _save(backbone.state_dict(), tmp_path / "backbone.pdparams")
    assert load_weights(create_model("pale_t", **MODEL_ARGS), backbone_path) == ([], [])


def test_exact_loading_counts_the_classifier_too(tmp_path):
    source = create_model("pale_t", **MODEL_ARGS)
    path = _save(source.state_dict(), tmp_path / "cls.pdparams")
    with pytest.raises(ValueError, match=r"shape mismatches \(2\): head.weight"):
        load_weights(create_model("pale_t", **dict(MODEL_ARGS, num_classes=7)), path,
                     exact=True)


def test_an_unexpected_backbone_tensor_is_an_error(tmp_path):
    state = create_model("pale_t", **MODEL_ARGS).state_dict()
    state["stages.9.0.attn.qkv.weight"] = paddle.zeros([2, 2])
    path = _save(state, tmp_path / "extra.pdparams")
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): stages.9.0.attn.qkv.weight"):
        create_model("pale_t", pretrained=path, **MODEL_ARGS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from engine_helpers import tiny_config, write_image_folder
    from paddle_pale.engine import Engine
    from paddle_pale.engine.config import load_config
    tmp_path = tmp_path_factory.mktemp("run")
    write_image_folder(tmp_path / "data")
    config = tiny_config(tmp_path, tmp_path / "data", Global={"epochs": 1})
    Engine(load_config(config, ["DataLoader.Eval.transforms.input_size=32"]),
           mode="train").train()
    return tmp_path / "out" / "latest"


def test_safetensors_backbone_export_describes_itself_and_loads_into_seg_and_det(
        trained, tmp_path, caplog):
    import runpy
    import os
    from paddle_pale.utils.io import read_safetensors_metadata
    tool = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools",
                                       "export.py"), run_name="export_tool")
    tool["main"](["backbone", "--checkpoint", str(trained),
                  "--output", str(tmp_path / "pale_t.safetensors")])
    path = str(tmp_path / "pale_t.safetensors")
    with open(path, "rb") as f:
        assert b"__reduce__" not in f.read(4096)
    meta = read_safetensors_metadata(path)
    assert meta["variant"] == "pale_t" and meta["num_classes"] == 3
    assert meta["classes"] == ["class_0", "class_1", "class_2"]
    assert meta["arch"] == dict(TINY_ARCH) and meta["attention_mode"] == "pale"
    assert (meta["input_size"], meta["crop_pct"]) == (32, 1.0)
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.25, 0.25, 0.25]
    assert "source_checkpoint" not in meta  # a path of the exporting machine

    from paddle_pale.adapters.paddleseg import PaleTransformer as SegBackbone
    from paddle_pale.adapters.ppdet import PaleTransformer as DetBackbone
    source = paddle.load(str(trained) + ".pdparams")
    backbone_args = {k: v for k, v in MODEL_ARGS.items() if k != "num_classes"}
    for backbone_class in (SegBackbone, DetBackbone):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="paddle_pale"):
            backbone = backbone_class(arch="pale_t", pretrained=path, **backbone_args)
        total = len(backbone.state_dict())
        assert f"loaded {total}/{total} tensors from {path}" in caplog.text
        for key, value in backbone.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), source[key].numpy(), err_msg=key)
    # the classifier takes it too (fine-tuning: the head stays at its init)
    create_model("pale_t", pretrained=str(tmp_path / "pale_t"), **MODEL_ARGS)
