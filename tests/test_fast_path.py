"""The layer's fused PS-Attention path, its backends, and its memory growth."""
import numpy as np
import paddle
import pytest

import paddle_pale
from paddle_pale.models import attention, pale
from paddle_pale.models.attention_reference import naive_pale_attention
from paddle_pale.models.pale import PaleAttention
from paddle_pale.utils.benchmark import attention_score_elements

SHAPES = [(14, 14, 16, 4, 7), (13, 17, 16, 4, (3, 5)), (9, 4, 8, 2, (2, 3))]


def _random_biases(layer):
    """Biases start at zero; random ones make the tests see where each bias lands."""
    for name, param in layer.named_parameters():
        if name.endswith("bias"):
            param.set_value(paddle.randn(param.shape))
    return layer


def _same_values_and_gradients(layer, ours, reference, x, atol):
    """``ours`` and ``reference`` on copies of ``x``: same outputs and gradients of x and of
    the layer's weight and bias (the loss weights every output element differently)."""
    results = []
    for forward in (ours, reference):
        x_in = x.clone()
        x_in.stop_gradient = False
        out = forward(x_in)
        (out * paddle.arange(out.size, dtype="float32").reshape(out.shape)).sum().backward()
        results.append([out.numpy(), x_in.grad.numpy(), layer.weight.grad.numpy(),
                        layer.bias.grad.numpy()])
        layer.clear_gradients()
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, atol=atol, rtol=1e-5)


@pytest.mark.parametrize("height,width,channels,heads,pale_size", SHAPES)
def test_fused_layer_matches_naive_reference(height, width, channels, heads, pale_size):
    layer = _random_biases(PaleAttention(channels, heads, pale_size))
    x = paddle.randn([2, height, width, channels])
    q, k, v = layer.qkv_projection(x)
    expected = layer.proj(naive_pale_attention(q, k, v, heads, pale_size))
    unfused = layer.proj(paddle_pale.pale_attention(q, k, v, heads, pale_size))
    fused = layer(x)
    np.testing.assert_allclose(fused.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(unfused.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_fused_projection_is_three_separable_convolutions():
    # q/k/v: depth-wise 3x3 (filter j of channel c is output 3c + j) then W_j, b_j
    channels = 8
    layer = _random_biases(PaleAttention(channels, 2, 7))
    x = paddle.randn([1, 5, 6, channels])
    got = layer.qkv_projection(x)
    conv = layer.qkv.depthwise
    for j in range(3):
        taps = paddle.nn.functional.conv2d(
            x, conv.weight[j::3], conv.bias[j::3], padding=1, groups=channels,
            data_format="NHWC")
        expected = paddle.matmul(taps, layer.qkv.weight[j]) + layer.qkv.bias[j, 0]
        np.testing.assert_allclose(got[j].numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("height,width,channels,heads,pale_size", SHAPES[:2])
def test_fused_layer_gradients_match_naive_reference(height, width, channels, heads,
                                                     pale_size):
    layer = _random_biases(PaleAttention(channels, heads, pale_size))
    x = paddle.randn([2, height, width, channels])
    grads = []
    for fused in (True, False):
        x_in = x.clone()
        x_in.stop_gradient = False
        if fused:
            out = layer(x_in)
        else:
            out = layer.proj(naive_pale_attention(*layer.qkv_projection(x_in), heads,
                                                  pale_size))
        (out ** 2).sum().backward()
        # the biases reach the output through the matmul's extra bias row: check them too
        grads.append([x_in.grad.numpy(), layer.qkv.weight.grad.numpy(),
                      layer.qkv.depthwise.weight.grad.numpy(), layer.qkv.bias.grad.numpy(),
                      layer.qkv.depthwise.bias.grad.numpy()])
        layer.clear_gradients()
    for got, expected in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_sdpa_layout_matches_matmul_path():
    # the GPU backend's tensor plumbing, checked with paddle's CPU kernel
    q, k, v = (paddle.randn([2, 14, 21, 16]) for _ in range(3))
    packed = attention.pack_qkv(q, k, v, (16 // 4) ** -0.5)
    sdpa = attention.pale_attention_packed(packed, 4, 7, backend="sdpa")
    expected = naive_pale_attention(q, k, v, 4, 7)
    np.testing.assert_allclose(sdpa.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


def test_sdpa_backend_refuses_padding_and_unknown_backends():
    packed = attention.pack_qkv(*(paddle.randn([1, 13, 14, 8]) for _ in range(3)))
    with pytest.raises(ValueError, match="H=13.*multiples"):
        attention.pale_attention_packed(packed, 2, 7, backend="sdpa")
    with pytest.raises(ValueError, match="'flash'"):
        attention.pale_attention_packed(packed, 2, 7, backend="flash")


@pytest.mark.parametrize("on_gpu,dtype,padded,expected", [
    (True, paddle.float16, False, "sdpa"),
    (True, "bfloat16", False, "sdpa"),
    (True, paddle.float16, True, "matmul"),
    (True, paddle.float32, False, "matmul"),
    (False, paddle.float16, False, "matmul"),
    (False, "float32", False, "matmul"),
])
def test_attention_backend_choice(on_gpu, dtype, padded, expected):
    assert attention.attention_backend(on_gpu, dtype, padded) == expected


def test_layer_asks_for_a_backend_with_the_real_padding(monkeypatch):
    calls = []

    def record(on_gpu, dtype, padded):
        calls.append((on_gpu, padded))
        return "matmul"
    monkeypatch.setattr(pale, "attention_backend", record)
    layer = PaleAttention(8, 2, (7, 3))
    layer(paddle.randn([1, 14, 6, 8]))
    layer(paddle.randn([1, 14, 7, 8]))
    assert calls == [(False, False), (False, True)]


def test_attention_scores_grow_with_lines_not_with_hw_squared(monkeypatch):
    # no (HW)^2 tensor: the largest score tensor grows as HW * line length (x8 when
    # the side doubles), where global attention would grow x16
    recorded = []
    original = attention._attend

    def spy(q, k, v, bias, backend):
        recorded.append(int(np.prod(q.shape[:-1])) * k.shape[-2])
        return original(q, k, v, bias, backend)
    monkeypatch.setattr(attention, "_attend", spy)
    model = paddle_pale.create_model("pale_t", embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1),
                                     num_heads=(2, 2, 2, 2), with_classifier=False)
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


def test_onnx_compatible_ops_compute_the_same_model():
    # the export switch swaps NHWC convs and fused-bias GEMMs for portable ops: same math
    from paddle_pale.models.layers import onnx_compatible_ops
    model = paddle_pale.create_model("pale_t", depths=(1, 1, 1, 1), num_classes=5)
    model.eval()
    x = paddle.randn([2, 3, 61, 45])
    with paddle.no_grad():
        fast = model(x).numpy()
        with onnx_compatible_ops():
            portable = model(x).numpy()
        again = model(x).numpy()  # the switch is off again after the block
    np.testing.assert_allclose(portable, fast, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(again, fast)


@pytest.mark.parametrize("training", [True, False])
def test_linear_matches_paddle_linear_with_gradients(training):
    # with gradients on CPU, the bias reaches the output as a ones x b outer product (its
    # gradient is then a GEMM, not a slow column sum); without, it is added inside the
    # GEMM (addmm): same values and gradients as F.linear either way
    from paddle_pale.models.layers import Linear
    layer = _random_biases(Linear(6, 5))
    layer.train() if training else layer.eval()
    x = paddle.randn([2, 3, 4, 6])
    reference = lambda t: paddle.nn.functional.linear(t, layer.weight, layer.bias)  # noqa: E731
    _same_values_and_gradients(layer, layer, reference, x, atol=1e-4)
    with paddle.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_position_encoding_is_input_plus_depthwise_conv(training):
    # the residual lives in the filters' centre taps, and while training on CPU the
    # bias arrives as a GEMM: same values and gradients as x + conv(x) written out
    from paddle_pale.models.layers import ResidualDepthwiseConv2D
    layer = _random_biases(ResidualDepthwiseConv2D(6, 3))
    layer.train() if training else layer.eval()
    _same_values_and_gradients(
        layer, layer, lambda t: t + paddle.nn.functional.conv2d(
            t, layer.weight, layer.bias, padding=1, groups=6, data_format="NHWC"),
        paddle.randn([2, 5, 7, 6]), atol=1e-3)


@pytest.mark.parametrize("frozen", [False, True])
def test_layer_norm_backward_matches_paddle(frozen):
    # training on CPU the model's LayerNorm has its own backward: same gradients as
    # paddle's layer_norm, also with frozen parameters (no gradient asked for them). The
    # reference always runs with trainable copies: Paddle 3.3.1's CPU layer_norm_grad
    # returns a wrong input gradient when its weight is frozen.
    from paddle_pale.models.layers import LayerNorm
    layer = _random_biases(LayerNorm(16))
    layer.weight.set_value(paddle.randn([16]))
    weight, bias = (paddle.to_tensor(p.numpy(), stop_gradient=False)
                    for p in (layer.weight, layer.bias))
    for param in layer.parameters():
        param.stop_gradient = frozen
    x = paddle.randn([2, 3, 5, 16]) * 3 + 1
    upstream = paddle.randn([2, 3, 5, 16])
    results = []
    for forward, params in ((layer, (layer.weight, layer.bias)), (
            lambda t: paddle.nn.functional.layer_norm(t, [16], weight, bias, layer._epsilon),
            (weight, bias))):
        x_in = x.clone()
        x_in.stop_gradient = False
        out = forward(x_in)
        out.backward(upstream)
        results.append([out.numpy(), x_in.grad.numpy()] + (
            [] if frozen else [p.grad.numpy() for p in params]))
    assert all(p.grad is None for p in layer.parameters()) or not frozen
    for got, expected in zip(*results):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_patch_embedding_convs_match_paddle_conv(training):
    # biases are added after the layout transpose (and as a GEMM while training):
    # same values and gradients as a plain NCHW conv
    from paddle_pale.models.layers import ChannelsLastConv2D, ImageToChannelsLastConv2D
    for layer, nhwc_input in ((ImageToChannelsLastConv2D(3, 8, 7, 4, 3), False),
                              (ChannelsLastConv2D(8, 16, 3, 2, 1), True)):
        _random_biases(layer)
        layer.train() if training else layer.eval()
        _same_values_and_gradients(
            layer, lambda t: layer(t.transpose([0, 2, 3, 1]) if nhwc_input else t),
            lambda t: paddle.nn.functional.conv2d(
                t, layer.weight, layer.bias, layer._stride, layer._padding
            ).transpose([0, 2, 3, 1]),
            paddle.randn([2, layer._in_channels, 13, 11]), atol=1e-3)


def test_no_transpose_above_rank_six():
    # paddle's transpose kernel takes a generic element loop from rank 7 on (grouping
    # q/k/v at stage 1: 42 ms at rank 7 against 0.6 ms at rank 6): keep every layout
    # change of the model, as exported, at rank 6 or below
    from paddle_pale.export import static_model
    model = paddle_pale.create_model("pale_t", embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1),
                                     num_heads=(2, 2, 2, 2), num_classes=3)
    static = static_model(model, 56)  # held: the program belongs to this layer
    program = static.forward.concrete_program.main_program
    ranks = [len(op.operand_source(0).shape) for op in program.global_block().ops
             if op.name() == "pd_op.transpose"]
    assert len(ranks) > 10 and max(ranks) <= 6, ranks
