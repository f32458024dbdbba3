"""paddle.hub finds the variants in the repository's hubconf.py (source="local")."""
import os

import numpy as np
import paddle
import pytest

from engine_helpers import TINY_ARCH
from paddle_pale import create_model, list_models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ARGS = {k: v for k, v in TINY_ARCH.items() if k != "name"}


def test_hub_lists_every_variant_and_nothing_else():
    assert sorted(paddle.hub.list(ROOT, source="local")) == list_models()


def test_hub_help_documents_the_entry_point():
    text = paddle.hub.help(ROOT, "pale_t", source="local")
    assert text.startswith("pale_t:") and "pretrained" in text and "strict" in text


def test_hub_load_builds_the_variant_with_pretrained_weights(tmp_path):
    source = create_model("pale_t", **MODEL_ARGS)
    source.eval()
    path = str(tmp_path / "w.pdparams")
    paddle.save(source.state_dict(), path)
    model = paddle.hub.load(ROOT, "pale_t", source="local", pretrained=path, **MODEL_ARGS)
    model.eval()
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_array_equal(model(x).numpy(), source(x).numpy())
    # through the strict loader: weights of other sizes are an error
    with pytest.raises(ValueError, match="shape mismatches"):
        paddle.hub.load(ROOT, "pale_t", source="local", pretrained=path,
                        **dict(MODEL_ARGS, embed_dims=[8, 16, 16, 32]))
