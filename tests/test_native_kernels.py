"""The C++ CPU kernels (paddle_pale.kernels.native): 3x3 depth-wise convolution and the
softmax over the last axis, values and gradients against Paddle's own ops, and the
fallback to them."""
import shutil
import warnings

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_pale.kernels import native

HAS_COMPILER = any(shutil.which(name) for name in ("c++", "g++"))
needs_native = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler here")


@needs_native
def test_the_native_kernels_build_where_a_compiler_is():
    # otherwise every test below would pass through the fallback alone
    ops = native.native_ops()
    assert ops is not None, native._state["error"]
    assert native.native_kernels_loaded()
    assert hasattr(ops, "pale_depthwise_conv3x3_channels_last") and hasattr(ops, "pale_softmax_")


def _grads(function, *tensors):
    """Output and the gradients of ``tensors`` under a loss weighting every output
    element differently."""
    tensors = [t.clone() for t in tensors]
    for t in tensors:
        t.stop_gradient = False
    out = function(*tensors)
    weights = paddle.sin(paddle.arange(out.size, dtype="float32")).reshape(out.shape)
    (out * weights).sum().backward()
    return [out.numpy()] + [t.grad.numpy() for t in tensors]


def _naive_depthwise(tokens, weight):
    """Zero-padded 3x3 correlation written out in numpy on channels-last ``tokens``
    ``[B, H, W, C]``: ``[m, B, H, W, C]``, filter c m + j reading channel c."""
    batch, height, width, channels = tokens.shape
    multiplier = weight.shape[0] // channels
    padded = np.pad(tokens, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((multiplier, batch, height, width, channels), np.float64)
    for c in range(channels):
        for j in range(multiplier):
            for dy in range(3):
                for dx in range(3):
                    out[j, ..., c] += weight[c * multiplier + j, 0, dy, dx] * padded[
                        :, dy:dy + height, dx:dx + width, c]
    return out


def _channels_last_reference(x, weight, ones):
    """Paddle's NCHW convolution, each filter's output apart, channels last."""
    batch, height, width, channels = x.shape
    multiplier = weight.shape[0] // channels
    out = F.conv2d(x.transpose([0, 3, 1, 2]), weight, padding=1, groups=channels)
    out = out.reshape([batch, channels, multiplier, height, width]).transpose([2, 0, 3, 4, 1])
    if ones:
        out = paddle.concat([out, paddle.ones([*out.shape[:-1], 1])], axis=-1)
    return out


@needs_native
@pytest.mark.parametrize("shape,multiplier,ones", [((2, 5, 7, 3), 1, False),
                                                   ((2, 6, 5, 4), 3, True),
                                                   ((1, 1, 4, 2), 3, False),
                                                   ((3, 4, 1, 9), 1, True),
                                                   ((1, 1, 1, 1), 2, True),
                                                   ((2, 9, 8, 65), 3, True)])
def test_depthwise_conv_matches_a_naive_reference_and_paddle_with_gradients(shape, multiplier,
                                                                            ones):
    x = paddle.randn(shape)
    weight = paddle.randn([shape[-1] * multiplier, 1, 3, 3])
    out = native.depthwise_conv3x3_channels_last(x, weight, ones).numpy()
    np.testing.assert_allclose(out[..., :shape[-1]], _naive_depthwise(x.numpy(), weight.numpy()),
                               atol=1e-5)
    if ones:
        assert np.all(out[..., -1] == 1)
    got = _grads(lambda a, w: native.depthwise_conv3x3_channels_last(a, w, ones), x, weight)
    expected = _grads(lambda a, w: _channels_last_reference(a, w, ones), x, weight)
    for name, g, e in zip(("out", "d(x)", "d(weight)"), got, expected):
        np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-4, err_msg=name)


@needs_native
def test_depthwise_conv_reads_a_transposed_input_as_its_values():
    # a transpose may be a strided view (stride kernels on): the kernel reads the values
    x = paddle.randn([2, 4, 5, 6]).transpose([0, 2, 3, 1])  # [B, H, W, C]
    weight = paddle.randn([4, 1, 3, 3])
    np.testing.assert_allclose(native.depthwise_conv3x3_channels_last(x, weight).numpy(),
                               _channels_last_reference(x, weight, False).numpy(), atol=1e-5)


def test_depthwise_conv_names_wrong_filters():
    with pytest.raises(ValueError, match=r"\[C \* m, 1, 3, 3\] filters for C=4"):
        native.depthwise_conv3x3_channels_last(paddle.randn([1, 5, 5, 4]),
                                               paddle.randn([6, 1, 3, 3]))


def test_disabled_depthwise_conv_falls_back_to_the_same_layout(monkeypatch):
    x, weight = paddle.randn([2, 5, 4, 3]), paddle.randn([9, 1, 3, 3])
    expected = _naive_depthwise(x.numpy(), weight.numpy())
    monkeypatch.setenv(native.DISABLE_VARIABLE, "0")
    out = native.depthwise_conv3x3_channels_last(x, weight, True).numpy()
    np.testing.assert_allclose(out[..., :3], expected, atol=1e-5)
    assert np.all(out[..., -1] == 1)


@needs_native
@pytest.mark.parametrize("shape", [(3, 5, 13), (2, 392), (4, 1, 8), (2, 2, 49), (1, 1)])
def test_softmax_matches_paddle_with_gradients_and_masked_keys(shape):
    x = paddle.randn(shape) * 4
    if shape[-1] > 2:  # padded keys: -inf scores get 0 probability
        mask = np.zeros(shape, np.float32)
        mask[..., 1::3] = -np.inf
        x = x + paddle.to_tensor(mask)
    expected = F.softmax(x, axis=-1).numpy()
    np.testing.assert_allclose(native.softmax(x).numpy(), expected, atol=1e-6, rtol=1e-5)
    assert np.all(native.softmax(x).numpy()[np.isinf(x.numpy())] == 0)
    if shape[-1] > 2:
        finite = paddle.randn(shape)  # a gradient of -inf entries is NaN in both
        got, expected_grads = (_grads(native.softmax, finite),
                               _grads(lambda t: F.softmax(t, axis=-1), finite))
        for g, e in zip(got, expected_grads):
            np.testing.assert_allclose(g, e, atol=1e-6, rtol=1e-5)


@needs_native
def test_inplace_softmax_writes_into_its_input_without_a_gradient():
    x = paddle.randn([3, 4, 37]) * 3
    expected = F.softmax(x, axis=-1).numpy()
    with paddle.no_grad():
        out = native.softmax_(x)
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-6, rtol=1e-5)
    assert out is x


def test_softmax_over_another_axis_is_paddles():
    x = paddle.randn([3, 4, 5])
    np.testing.assert_allclose(native.softmax(x, axis=1).numpy(),
                               F.softmax(x, axis=1).numpy(), atol=1e-7)


def test_disabled_by_the_environment_the_stock_kernels_run(monkeypatch):
    monkeypatch.setenv(native.DISABLE_VARIABLE, "0")
    x = paddle.randn([2, 3, 5, 5])
    assert native.native_ops() is None and not native.native_kernels_loaded()
    np.testing.assert_allclose(native.softmax(x).numpy(), F.softmax(x).numpy(), atol=1e-7)
    np.testing.assert_allclose(native.gelu(x).numpy(), F.gelu(x).numpy(), atol=1e-7)


def test_a_failed_build_warns_once_with_its_cause_and_the_stock_kernels_run(monkeypatch):
    import paddle.utils.cpp_extension as cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("cc: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(native, "_state", {"ops": None, "error": None})
    x = paddle.randn([2, 3, 4, 6])
    with pytest.warns(UserWarning, match="could not be built.*cc: command not found"):
        out = native.softmax(x)
    np.testing.assert_allclose(out.numpy(), F.softmax(x).numpy(), atol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next call is silent
        native.gelu(x)


def test_half_precision_inputs_take_the_stock_kernels():
    x = paddle.randn([2, 8]).astype("float16")
    assert native.available_for(x) is None


@needs_native
@pytest.mark.parametrize("shape", [(3, 7), (2, 4097), (5,), (2, 3, 4, 9)])
def test_gelu_matches_paddles_exact_gelu_with_gradients(shape):
    values = np.random.RandomState(0).randn(*shape).astype("float32") * 3
    values.flat[:2] = [-12.0, 12.0]  # the tails, where e^(-x^2) underflows
    x = paddle.to_tensor(values)
    got = _grads(native.gelu, x)
    expected = _grads(lambda t: F.gelu(t), x)
    for name, g, e in zip(("out", "d(x)"), got, expected):
        np.testing.assert_allclose(g, e, atol=1e-6, rtol=1e-5, err_msg=name)


@needs_native
@pytest.mark.parametrize("rows,channels", [(3, 5), (200, 64), (131, 9), (1, 1)])
def test_layer_norm_matches_paddles_with_gradients(rows, channels):
    x = paddle.randn([rows, channels]) * 2 + 1
    weight, bias = paddle.randn([channels]), paddle.randn([channels])
    got = _grads(lambda a, w, b: native.layer_norm(a, w, b, 1e-5), x, weight, bias)
    expected = _grads(lambda a, w, b: F.layer_norm(a, [channels], w, b, 1e-5), x, weight, bias)
    for name, g, e in zip(("out", "d(x)", "d(weight)", "d(bias)"), got, expected):
        np.testing.assert_allclose(g, e, atol=2e-5, rtol=1e-4, err_msg=name)
