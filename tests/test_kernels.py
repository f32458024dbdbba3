"""The CPU kernels (paddle_pale.kernels): the same function as the plain model, swapped
in by one call, and the attention core's grouping and memory growth."""
import copy

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_pale
from paddle_pale.kernels import use_cpu_kernels, use_plain_layers, uses_cpu_kernels
from paddle_pale.kernels import cpu
from paddle_pale.models import attention, modes
from paddle_pale.models.attention_reference import naive_mode_attention, naive_pale_attention
from paddle_pale.models.layers import ConditionalPositionEncoding, LayerNorm
from paddle_pale.models.pale import PaleAttention
from paddle_pale.benchmark import attention_score_elements


def _random_biases(layer):
    """Biases start at zero; random ones make the tests see where each bias lands."""
    for name, param in layer.named_parameters():
        if name.endswith("bias"):
            param.set_value(paddle.randn(param.shape))
    return layer


def _values_and_gradients(model, forward, x):
    """Output and the gradients of ``x`` and of every trainable parameter, under a loss
    that weights each output element differently."""
    x = x.clone()
    x.stop_gradient = False
    out = forward(x)
    weights = paddle.arange(out.size, dtype="float32").reshape(out.shape) / out.size
    (out * weights).sum().backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()
             if not p.stop_gradient}
    model.clear_gradients()
    return out.numpy(), x.grad.numpy(), grads


def _assert_same_function(plain, fast, forward, x, atol, rtol=1e-4):
    expected = _values_and_gradients(plain, lambda t: forward(plain, t), x)
    got = _values_and_gradients(fast, lambda t: forward(fast, t), x)
    np.testing.assert_allclose(got[0], expected[0], atol=atol, rtol=rtol)
    np.testing.assert_allclose(got[1], expected[1], atol=atol, rtol=rtol)
    assert got[2].keys() == expected[2].keys()
    for name in expected[2]:
        np.testing.assert_allclose(got[2][name], expected[2][name], atol=atol, rtol=rtol,
                                   err_msg=name)


@pytest.mark.parametrize("name", paddle_pale.list_models())
@pytest.mark.parametrize("training", [True, False])
def test_cpu_kernels_compute_the_plain_model(name, training):
    # every variant's widths and heads, one block per stage; 61x45 pads every stage
    plain = _random_biases(paddle_pale.create_model(name, num_classes=5, depths=(1,) * 4))
    plain.train() if training else plain.eval()
    fast = use_cpu_kernels(copy.deepcopy(plain))
    assert uses_cpu_kernels(fast) and not uses_cpu_kernels(plain)
    assert list(fast.state_dict()) == list(plain.state_dict())
    _assert_same_function(plain, fast, lambda m, t: m(t), paddle.randn([2, 3, 61, 45]),
                          atol=2e-5)


@pytest.mark.parametrize("mode", ["pale_sequential", "pale_vanilla", "cross_shaped", "axial"])
def test_cpu_kernels_compute_the_plain_model_in_every_mode(mode):
    # the fused projections serve every attention region; stage 2 holds an odd block
    # (pale_sequential's columns), 61x45 pads every stage
    plain = _random_biases(paddle_pale.create_model(
        "pale_t", num_classes=5, depths=(1, 2, 1, 1), embed_dims=(16, 32, 48, 64),
        num_heads=(2, 2, 4, 4), attention_mode=mode, stripe_width=(2, 3, 2, 7)))
    plain.train()
    fast = use_cpu_kernels(copy.deepcopy(plain))
    _assert_same_function(plain, fast, lambda m, t: m(t), paddle.randn([2, 3, 61, 45]),
                          atol=2e-5)


def test_cpu_kernels_swap_in_place_once_and_back():
    model = paddle_pale.create_model("pale_t", depths=(1,) * 4, num_classes=3)
    plain_types = [type(layer) for layer in model.sublayers()]
    params = {name: id(p) for name, p in model.named_parameters()}
    assert use_cpu_kernels(model) is model
    fast_types = [type(layer) for layer in model.sublayers()]
    assert fast_types != plain_types
    assert {name: id(p) for name, p in model.named_parameters()} == params
    use_cpu_kernels(model)  # again: nothing changes
    assert [type(layer) for layer in model.sublayers()] == fast_types
    assert use_plain_layers(model) is model
    assert [type(layer) for layer in model.sublayers()] == plain_types


@pytest.mark.parametrize("height,width,channels,heads,pale_size",
                         [(14, 14, 16, 4, 7), (13, 17, 16, 4, (3, 5)), (9, 4, 8, 2, (2, 3))])
def test_fused_attention_matches_the_naive_reference(height, width, channels, heads,
                                                     pale_size):
    # the fused Q/K/V path (one grouped conv, bias rows, scaled queries, in-place
    # softmax) against the layer's own projections fed to the naive masked attention
    plain = _random_biases(PaleAttention(channels, heads, pale_size))
    fast = use_cpu_kernels(copy.deepcopy(plain))
    _assert_same_function(
        plain, fast,
        lambda m, t: m(t) if m is fast else m.proj(
            naive_pale_attention(*m.qkv_projection(t), heads, pale_size)),
        paddle.randn([2, height, width, channels]), atol=1e-4)


@pytest.mark.parametrize("mode,size,block_index", [
    ("pale_sequential", (3, 5), 1), ("pale_vanilla", (3, 5), 0), ("cross_shaped", 2, 0),
    ("axial", 7, 0)])
def test_fused_attention_of_every_mode_matches_the_naive_reference(mode, size, block_index):
    plain = _random_biases(PaleAttention(16, 4, size, attention_mode=mode, stripe_width=size,
                                         block_index=block_index))
    fast = use_cpu_kernels(copy.deepcopy(plain))
    _assert_same_function(
        plain, fast,
        lambda m, t: m(t) if m is fast else m.proj(naive_mode_attention(
            *m.qkv_projection(t), 4, mode, m.region, block_index)),
        paddle.randn([2, 13, 17, 16]), atol=1e-4)


@pytest.mark.parametrize("mode", ["pale", "pale_vanilla"])
def test_attention_in_chunks_of_images_computes_the_whole_batch(monkeypatch, mode):
    # a score budget of two images splits a training batch of 5 into 2 + 2 + 1; values
    # and gradients as the plain layer's, and the attention core sees only chunks
    plain = _random_biases(PaleAttention(16, 4, (3, 5), attention_mode=mode))
    fast = use_cpu_kernels(copy.deepcopy(plain))
    x = paddle.randn([5, 13, 17, 16])
    per_image = fast.mode.score_elements(1, 4, 13, 17, fast.region) * 4
    monkeypatch.setattr(cpu, "SCORE_CHUNK_BYTES", 2 * per_image + 3)
    assert fast.images_per_chunk(x) == 2
    batches = []
    # the function of the mode's core that takes the grouped batch
    module, name = (attention, "row_attention") if mode == "pale" else (
        modes, "_vanilla_attention")
    original = getattr(module, name)

    def spy(q, *args, **kwargs):
        batches.append(q.shape[0])
        return original(q, *args, **kwargs)
    monkeypatch.setattr(module, name, spy)
    _assert_same_function(plain, fast, lambda m, t: m(t), x, atol=1e-4)
    assert batches == [5, 2, 2, 1]  # the plain layer's whole batch, then the chunks
    batches.clear()
    with paddle.no_grad():  # inference: the whole batch at once
        np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), atol=1e-4)
    assert batches == [5, 5]


@pytest.mark.parametrize("training", [True, False])
def test_linear_and_position_encoding_kernels(training):
    for plain, shape in ((paddle.nn.Linear(6, 5), [2, 3, 4, 6]),
                         (ConditionalPositionEncoding(6, 3), [2, 5, 7, 6])):
        _random_biases(plain)
        plain.train() if training else plain.eval()
        fast = use_cpu_kernels(copy.deepcopy(plain))
        assert type(fast) is not type(plain)
        _assert_same_function(plain, fast, lambda m, t: m(t), paddle.randn(shape), atol=1e-4)


@pytest.mark.parametrize("frozen", [False, True])
def test_layer_norm_backward_matches_paddle(frozen):
    # Paddle 3.3.1's CPU layer_norm_grad returns a wrong input gradient when its weight is
    # frozen, so the reference always runs with trainable copies of the parameters
    # the model's LayerNorm (which keeps its epsilon), at a non-default epsilon
    layer = _random_biases(LayerNorm(16, epsilon=1e-3))
    layer.weight.set_value(paddle.randn([16]))
    fast = use_cpu_kernels(copy.deepcopy(layer))
    weight, bias = (paddle.to_tensor(p.numpy(), stop_gradient=False)
                    for p in (layer.weight, layer.bias))
    for param in fast.parameters():
        param.stop_gradient = frozen
    x = paddle.randn([2, 3, 5, 16]) * 3 + 1
    upstream = paddle.randn([2, 3, 5, 16])
    results = []
    for forward, params in ((fast, (fast.weight, fast.bias)), (
            lambda t: F.layer_norm(t, [16], weight, bias, 1e-3), (weight, bias))):
        x_in = x.clone()
        x_in.stop_gradient = False
        out = forward(x_in)
        out.backward(upstream)
        results.append([out.numpy(), x_in.grad.numpy()] + (
            [] if frozen else [p.grad.numpy() for p in params]))
    assert not frozen or all(p.grad is None for p in fast.parameters())
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_sdpa_layout_matches_matmul_path():
    # the half-precision backend's tensor plumbing, checked with paddle's CPU kernel
    q, k, v = (paddle.randn([2, 14, 21, 16]) for _ in range(3))
    sdpa = attention.pale_attention_halves(*attention.split_halves(q, k, v), 4, 7,
                                           backend="sdpa")
    expected = naive_pale_attention(q, k, v, 4, 7)
    np.testing.assert_allclose(sdpa.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode,size,block_index", [
    ("cross_shaped", (2, 3), 0), ("pale_sequential", 7, 0), ("pale_sequential", 7, 1),
    ("axial", None, 0)])
def test_sdpa_layout_of_every_mode_matches_the_reference(mode, size, block_index):
    # the layouts the half-precision backend gets on a GPU (CSWin's contiguous stripes,
    # sequential's single direction), checked with paddle's CPU kernel in fp32
    q, k, v = (paddle.randn([2, 14, 21, 16]) for _ in range(3))
    region = modes.region_size(mode, size)
    sdpa = modes.mode_attention_projected((q, k, v), 4, mode, region, block_index, "sdpa")
    expected = naive_mode_attention(q, k, v, 4, mode, size, block_index)
    np.testing.assert_allclose(sdpa.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_sdpa_backend_refuses_padding_and_unknown_backends():
    halves = attention.split_halves(*(paddle.randn([1, 13, 14, 8]) for _ in range(3)))
    with pytest.raises(ValueError, match="H=13.*multiples"):
        attention.pale_attention_halves(*halves, 2, 7, backend="sdpa")
    with pytest.raises(ValueError, match="'flash'"):
        attention.pale_attention_halves(*halves, 2, 7, backend="flash")


@pytest.mark.parametrize("fast", [False, True])
def test_attention_scores_grow_with_lines_not_with_hw_squared(monkeypatch, fast):
    # no (HW)^2 tensor: the largest score tensor grows as HW * line length (x8 when
    # the side doubles), where global attention would grow x16
    recorded = []
    original = attention._attend

    def spy(q, k, v, *args):
        recorded.append(int(np.prod(q.shape[:-1])) * k.shape[-2])
        return original(q, k, v, *args)
    monkeypatch.setattr(attention, "_attend", spy)
    model = paddle_pale.create_model("pale_t", embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1),
                                     num_heads=(2, 2, 2, 2), with_classifier=False)
    if fast:
        use_cpu_kernels(model)
    model.eval()
    largest, global_attention = {}, {}
    for size in (112, 224):
        recorded.clear()
        with paddle.no_grad():
            model.forward_pyramid(paddle.randn([1, 3, size, size]))
        largest[size] = max(recorded)
        analytic, global_attention[size] = attention_score_elements(model, (size, size))
        assert largest[size] == analytic
    assert largest[224] == 8 * largest[112]
    assert global_attention[224] == 16 * global_attention[112]


def test_fused_weights_carry_every_bias():
    # the bias row of the fused maps is the linear bias (the depth-wise convolutions
    # have none); queries are scaled, keys and values not
    layer = use_cpu_kernels(_random_biases(PaleAttention(8, 2, 7)))
    fused = layer._weights_with_bias_row(0.5).numpy()  # [3, C + 1, C]
    for j, projection in enumerate((layer.query, layer.key, layer.value)):
        scale = 0.5 if j == 0 else 1.0
        weight = projection.linear.weight.numpy()
        assert projection.depthwise.bias is None
        bias = projection.linear.bias.numpy() if j == 0 else np.zeros(8, "float32")
        assert (projection.linear.bias is None) == (j > 0)
        np.testing.assert_allclose(fused[j, :8], weight * scale, rtol=1e-6)
        np.testing.assert_allclose(fused[j, 8], bias * scale, rtol=1e-5, atol=1e-6)
    assert cpu.CPU_FORMS[PaleAttention] is type(layer)


@pytest.mark.parametrize("training", [True, False])
def test_channels_last_convolutions_compute_the_same_model(training):
    # one state dict, two layouts: values and gradients agree, and the CPU kernels serve
    # the channels-last model too
    plain = _random_biases(paddle_pale.create_model(
        "pale_t", num_classes=5, depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64)))
    plain.train() if training else plain.eval()
    channels_last = copy.deepcopy(plain).set_channels_last(True)
    formats = {name: layer._data_format for name, layer in channels_last.named_sublayers()
               if isinstance(layer, paddle.nn.Conv2D)}
    assert formats.pop("patch_embeds.0.proj") == "NCHW"  # the image stays NCHW
    assert set(formats.values()) == {"NHWC"} and len(formats) == 4 * 4 + 3
    assert list(channels_last.state_dict()) == list(plain.state_dict())
    x = paddle.randn([2, 3, 61, 45])
    _assert_same_function(plain, channels_last, lambda m, t: m(t), x, atol=2e-5)
    _assert_same_function(plain, use_cpu_kernels(channels_last), lambda m, t: m(t), x,
                          atol=2e-5)
    assert channels_last.set_channels_last(False) is channels_last
    assert not any(layer._data_format == "NHWC" for layer in channels_last.sublayers()
                   if isinstance(layer, paddle.nn.Conv2D))


def test_position_encoding_is_the_input_plus_its_depthwise_convolution():
    # Eq. 6, X + DWConv(X), against paddle's NCHW convolution and an add, in both layouts
    layer = _random_biases(paddle_pale.models.layers.ConditionalPositionEncoding(6))
    x = paddle.randn([2, 5, 7, 6])
    expected = x + F.conv2d(x.transpose([0, 3, 1, 2]), layer.weight, layer.bias, padding=1,
                            groups=6).transpose([0, 2, 3, 1])
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), atol=1e-5)
    paddle_pale.models.layers.set_channels_last(layer)
    np.testing.assert_allclose(layer(x).numpy(), expected.numpy(), atol=1e-5)
