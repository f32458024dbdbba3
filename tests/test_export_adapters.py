"""A backbone export loads into the PaddleSeg and PaddleDetection adapters, whole."""
import logging

import numpy as np
import paddle
import pytest

from paddle_pale import create_model
from paddle_pale.export import export

ARCH = dict(name="pale_t", num_classes=10, depths=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
            num_heads=[2, 2, 2, 4])
SIZE_ARGS = {k: v for k, v in ARCH.items() if k not in ("name", "num_classes")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training checkpoint (trainer layout) and the classifier it holds."""
    paddle.seed(11)
    model = create_model("pale_t", num_classes=10, **SIZE_ARGS)
    model.eval()
    prefix = str(tmp_path_factory.mktemp("run") / "best")
    paddle.save(model.state_dict(), prefix + ".pdparams")
    paddle.save({"epoch": 1, "best_top1": 0.1, "arch": ARCH, "input_size": 64,
                 "crop_pct": 0.875, "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225]}, prefix + ".pdstates")
    backbone_path, _ = export("backbone", prefix, str(tmp_path_factory.mktemp("out") / "bb"))
    return model, backbone_path


def _adapter(module_name):
    if module_name == "paddleseg":
        pytest.importorskip("paddleseg")
        from paddle_pale.adapters.paddleseg import PaleTransformer
        return PaleTransformer, lambda model, x: model(x)
    pytest.importorskip("ppdet")
    from paddle_pale.adapters.ppdet import PaleTransformer
    return PaleTransformer, lambda model, x: model({"image": x})


@pytest.mark.parametrize("module_name", ["paddleseg", "ppdet"])
def test_backbone_export_loads_into_adapter(trained, module_name, caplog):
    classifier, backbone_path = trained
    adapter_class, run = _adapter(module_name)
    with caplog.at_level(logging.INFO, logger="paddle_pale"):
        backbone = adapter_class(arch="pale_t", pretrained=backbone_path, drop_path_rate=0.0,
                                 **SIZE_ARGS)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "loaded" in messages
    assert "missing keys" not in messages and "unexpected keys" not in messages
    backbone.eval()
    image = paddle.to_tensor(np.random.RandomState(0).randn(1, 3, 96, 80).astype("float32"))
    for got, expected in zip(run(backbone, image), classifier.forward_pyramid(image)):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6, rtol=0)
