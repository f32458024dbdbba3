import numpy as np
import paddle
import pytest

import paddle_pale
from paddle_pale.utils.io import load_weights

VARIANTS = paddle_pale.list_models()


def test_variants_are_registered():
    assert VARIANTS == ["pale_b", "pale_s", "pale_t"]


@pytest.mark.parametrize("name", VARIANTS)
def test_classifier_and_pyramid_shapes(name):
    model = paddle_pale.create_model(name, num_classes=7)
    model.eval()
    x = paddle.randn([2, 3, 64, 96])
    with paddle.no_grad():
        assert model(x).shape == [2, 7]
        features = model.forward_pyramid(x)
    channels = [info["num_chs"] for info in model.feature_info]
    strides = [info["reduction"] for info in model.feature_info]
    assert strides == [4, 8, 16, 32]
    assert model.feat_channels == channels
    assert [list(f.shape) for f in features] == [
        [2, c, 64 // s, 96 // s] for c, s in zip(channels, strides)]


@pytest.mark.parametrize("size,expected", [
    ((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
    ((97, 131), [(25, 33), (13, 17), (7, 9), (4, 5)]),
    ((512, 512), [(128, 128), (64, 64), (32, 32), (16, 16)]),
    ((800, 1216), [(200, 304), (100, 152), (50, 76), (25, 38)]),
    ((32, 45), [(8, 12), (4, 6), (2, 3), (1, 2)]),
])
def test_any_input_size(size, expected):
    # Pale-T widths, heads and pale size; one block per stage runs the same code paths
    model = paddle_pale.create_model("pale_t", depths=(1, 1, 1, 1))
    model.eval()
    with paddle.no_grad():
        features = model.forward_pyramid(paddle.randn([1, 3, *size]))
    assert [tuple(f.shape[2:]) for f in features] == expected
    assert all(np.isfinite(f.numpy()).all() for f in features)


def test_overrides_replace_variant_defaults():
    model = paddle_pale.create_model("pale_t", num_classes=10, in_channels=1, pale_size=(3, 5),
                                     drop_path_rate=0.3, depths=(1, 1, 1, 1))
    assert model.in_channels == 1 and model.num_classes == 10
    assert model.pale_sizes == [(3, 5)] * 4
    assert model.embed_dims == [64, 128, 256, 512]
    assert [len(stage) for stage in model.stages] == [1, 1, 1, 1]
    # stochastic depth grows linearly to the last block
    assert model.stages[3][0].drop_path.drop_prob == pytest.approx(0.3)
    assert isinstance(model.stages[0][0].drop_path, paddle.nn.Identity)
    assert model(paddle.randn([1, 1, 64, 64])).shape == [1, 10]


def test_per_stage_pale_size():
    model = paddle_pale.create_model("pale_t", pale_size=[1, 3, 5, (7, 9)], depths=(1,) * 4)
    assert model.pale_sizes == [(1, 1), (3, 3), (5, 5), (7, 9)]
    with pytest.raises(ValueError, match="pale_size"):
        paddle_pale.create_model("pale_t", pale_size=[1, 3, 5])


def test_backward_reaches_every_trainable_parameter():
    model = paddle_pale.create_model("pale_t", num_classes=5, depths=(1, 1, 2, 1),
                                     drop_path_rate=0.1)
    model.train()
    logits = model(paddle.randn([2, 3, 64, 64]))
    paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([1, 3])).backward()
    for name, param in model.named_parameters():
        if name.startswith("stage_norms."):
            assert param.stop_gradient, "stage norms are unused by the classifier"
            continue
        assert param.grad is not None, name
        assert np.isfinite(param.grad.numpy()).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


def test_drop_path_is_random_in_training_only():
    model = paddle_pale.create_model("pale_t", depths=(1, 1, 1, 1), drop_path_rate=0.9)
    x = paddle.randn([4, 3, 32, 32])
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    assert not np.allclose(model(x).numpy(), model(x).numpy())


def test_dense_backbone_owns_no_classifier():
    model = paddle_pale.create_model("pale_t", with_classifier=False, depths=(1,) * 4)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("norm.", "head.")) for n in names)
    assert all(not p.stop_gradient for p in model.parameters())
    with pytest.raises(ValueError, match="with_classifier=False"):
        model.forward_head(paddle.zeros([1, 1, 1, 512]))


@pytest.mark.parametrize("name,message", [("pale_x", "known models: pale_b, pale_s, pale_t"),
                                          ("", "unknown model")])
def test_unknown_model_lists_known_ones(name, message):
    with pytest.raises(ValueError, match=message):
        paddle_pale.create_model(name)


@pytest.mark.parametrize("shape", [[1, 1, 64, 64], [3, 64, 64], [1, 64, 64, 3]])
def test_bad_image_shape_names_expected_shape(shape):
    model = paddle_pale.create_model("pale_t", depths=(1,) * 4)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(paddle.zeros(shape))


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint8"])
def test_other_input_dtypes_name_the_expected_one(dtype):
    # float64 failed inside paddle (InvalidArgument); the model names what it takes
    model = paddle_pale.create_model("pale_t", depths=(1,) * 4, embed_dims=(8, 16, 16, 16),
                                     num_heads=(2, 2, 2, 2))
    image = paddle.to_tensor(np.zeros((1, 3, 32, 32), dtype))
    for forward in (model, model.forward_pyramid):
        with pytest.raises(ValueError, match=rf"expects float32 images .*got {dtype}: "
                                             r"convert with x.astype\('float32'\)"):
            forward(image)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_heads=(2, 4, 8, 15)), "even"),
    (dict(embed_dims=(64, 128, 250, 512)), "divide"),
    (dict(depths=(2, 2, 2)), "one entry per stage"),
])
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paddle_pale.create_model("pale_t", **kwargs)


def test_pretrained_round_trip_and_errors(tmp_path):
    small = dict(depths=(1, 1, 1, 1), num_classes=4)
    source = paddle_pale.create_model("pale_t", **small)
    source.eval()
    path = str(tmp_path / "weights.pdparams")
    paddle.save(source.state_dict(), path)
    x = paddle.randn([2, 3, 64, 64])

    loaded = paddle_pale.create_model("pale_t", pretrained=path, **small)
    loaded.eval()
    np.testing.assert_array_equal(loaded(x).numpy(), source(x).numpy())
    # the prefix form works too
    paddle_pale.create_model("pale_t", pretrained=str(tmp_path / "weights"), **small)

    # another num_classes: everything but the head loads
    other = paddle_pale.create_model("pale_t", depths=(1,) * 4, num_classes=9)
    assert load_weights(other, path) == ([], [])  # the head is left out, not missing

    # a backbone loads the classification weights with nothing missing
    backbone = paddle_pale.create_model("pale_t", depths=(1,) * 4, with_classifier=False)
    missing, unexpected = load_weights(backbone, path)
    assert missing == [] and unexpected == []
    np.testing.assert_array_equal(backbone.forward_pyramid(x)[3].numpy(),
                                  source.forward_pyramid(x)[3].numpy())

    with pytest.raises(ValueError, match="shape mismatch.*wrong variant"):
        paddle_pale.create_model("pale_s", pretrained=path, **small)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        paddle_pale.create_model("pale_t", pretrained=str(tmp_path / "missing.pdparams"))
    (tmp_path / "corrupt.pdparams").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        paddle_pale.create_model("pale_t", pretrained=str(tmp_path / "corrupt.pdparams"))


def _pale_t_layout():
    """Pale-T's state dict, key -> shape, written out from the architecture: the layout
    checkpoints are published in (frozen; docs/design.md, "State-dict layout")."""
    dims, depths, layout = (64, 128, 256, 512), (2, 2, 16, 2), {}
    for stage, (dim, depth) in enumerate(zip(dims, depths)):
        previous, kernel = (3, 7) if stage == 0 else (dims[stage - 1], 3)
        embed = f"patch_embeds.{stage}."
        layout.update({embed + "proj.weight": [dim, previous, kernel, kernel],
                       embed + "proj.bias": [dim], embed + "norm.weight": [dim],
                       embed + "norm.bias": [dim]})
        for index in range(depth):
            block = f"stages.{stage}.{index}."
            layout.update({block + "cpe.weight": [dim, 1, 3, 3], block + "cpe.bias": [dim],
                           block + "norm1.weight": [dim], block + "norm1.bias": [dim]})
            for name in ("query", "key", "value"):  # phi: depth-wise conv (no bias), linear
                layout.update({f"{block}attn.{name}.depthwise.weight": [dim, 1, 3, 3],
                               f"{block}attn.{name}.linear.weight": [dim, dim]})
            # the query's linear map alone has a bias (the keys' and values' are redundant)
            layout[f"{block}attn.query.linear.bias"] = [dim]
            layout.update({block + "attn.proj.weight": [dim, dim],
                           block + "attn.proj.bias": [dim],
                           block + "norm2.weight": [dim], block + "norm2.bias": [dim],
                           block + "mlp.fc1.weight": [dim, 4 * dim],
                           block + "mlp.fc1.bias": [4 * dim],
                           block + "mlp.fc2.weight": [4 * dim, dim],
                           block + "mlp.fc2.bias": [dim]})
        layout.update({f"stage_norms.{stage}.weight": [dim], f"stage_norms.{stage}.bias": [dim]})
    layout.update({"norm.weight": [512], "norm.bias": [512], "head.weight": [512, 1000],
                   "head.bias": [1000]})
    return layout


@pytest.mark.parametrize("channels_last", [False, True])
def test_pale_t_state_dict_layout_is_pinned(channels_last):
    model = paddle_pale.create_model("pale_t", channels_last=channels_last)
    got = {key: list(value.shape) for key, value in model.state_dict().items()}
    expected = _pale_t_layout()
    assert sorted(got) == sorted(expected)
    assert got == expected
    # 21.7M parameters (with the frozen stage norms): the paper's 22M for Pale-T
    assert sum(int(np.prod(shape)) for shape in expected.values()) / 1e6 == \
        pytest.approx(21.7, abs=0.05)


@pytest.mark.parametrize("mode,size", [("pale", (14, 14)), ("pale", (9, 11)),
                                       ("cross_shaped", (10, 12)), ("pale_vanilla", (9, 7)),
                                       ("pale_sequential", (11, 9))])
def test_attention_equals_three_bias_projections_with_the_value_bias_in_proj(mode, size):
    # keys' and values' biases are redundant (PaleAttention's docstring): the layer equals
    # the naive attention of q, k, v that all have a bias, once the value bias (through
    # the output projection) is added to proj's bias; padded sizes mask keys
    from paddle_pale.models.attention_reference import naive_mode_attention
    from paddle_pale.models.pale import PaleAttention
    paddle.seed(3)
    dim, heads = 16, 4
    layer = PaleAttention(dim, heads, pale_size=(3, 4), attention_mode=mode,
                          stripe_width=(2, 3))
    layer.eval()
    for param in layer.parameters():
        param.set_value(paddle.randn(param.shape) * 0.3)
    key_bias, value_bias = paddle.randn([dim]), paddle.randn([dim])
    x = paddle.randn([2, *size, dim])

    def projection(phi, bias):  # conv then linear, in stock ops
        taps = paddle.nn.functional.conv2d(x.transpose([0, 3, 1, 2]), phi.depthwise.weight,
                                           padding=1, groups=dim).transpose([0, 2, 3, 1])
        return paddle.matmul(taps, phi.linear.weight) + bias

    q = projection(layer.query, layer.query.linear.bias)
    k, v = projection(layer.key, key_bias), projection(layer.value, value_bias)
    size_arg = (2, 3) if mode == "cross_shaped" else (3, 4)
    expected = paddle.matmul(naive_mode_attention(q, k, v, heads, mode, size_arg),
                             layer.proj.weight) + layer.proj.bias
    with paddle.no_grad():
        layer.proj.bias.set_value(layer.proj.bias + paddle.matmul(value_bias, layer.proj.weight))
        out = layer(x)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
