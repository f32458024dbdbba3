"""The model as Paddle's toolchain sees it, checked on CPU: the ops of its static program
against AMP's white lists, flash-attention selection with the model's real arguments,
EMA with half-precision parameters, initializers, and one graph whatever the kernels."""
import copy
import math
import os
import re

import numpy as np
import paddle
import pytest
from paddle.amp import amp_lists
from paddle.nn.functional import sdpa

import paddle_pale
from paddle_pale.engine.ema import ModelEMA
from paddle_pale.export import static_model
from paddle_pale.kernels import use_cpu_kernels
from paddle_pale.models import attention
from paddle_pale.models.layers import conv_fan_in

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ops that multiply matrices: each must run in half precision under AMP
GEMM_OPS = {"matmul", "matmul_v2", "mul", "linear", "linear_v2", "fc", "bmm", "mm", "addmm",
            "baddbmm", "einsum", "fused_gemm_epilogue"}
SMALL = dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 4),
             num_classes=3)


def _program_ops(model, size=56):
    static = static_model(model, size)
    program = static.forward.concrete_program.main_program
    return [op.name().split(".")[-1] for op in program.global_block().ops], static


def test_every_gemm_and_dense_conv_is_on_the_amp_white_lists():
    model = paddle_pale.create_model("pale_t", **SMALL)
    ops, _ = _program_ops(model)
    gemms = [op for op in ops if op in GEMM_OPS]
    # 4 blocks x (3 q/k/v + proj + 2 mlp linear + 4 attention matmuls) + the head
    assert len(gemms) >= 4 * 10 + 1, ops
    for white_list in (amp_lists.FP16_WHITE_LIST, amp_lists.BF16_WHITE_LIST):
        assert {op for op in gemms if op not in white_list} == set()
    convs = [op for op in ops if "conv" in op]
    assert "conv2d" in convs  # patch merging: dense, white-listed
    assert set(convs) <= {"conv2d", "depthwise_conv2d"}  # depth-wise: memory-bound
    assert "conv2d" in amp_lists.FP16_WHITE_LIST and "conv2d" in amp_lists.BF16_WHITE_LIST


@pytest.mark.parametrize("mode", ["pale", "pale_vanilla"])
def test_no_transpose_above_rank_six(mode):
    # paddle's transpose kernel takes a generic element loop from rank 7 on (grouping
    # q/k/v at stage 1: 42 ms at rank 7 against 0.6 ms at rank 6); pale_vanilla also
    # regroups its per-query maxima between the row and column layouts
    model = paddle_pale.create_model("pale_t", attention_mode=mode, **SMALL)
    static = static_model(model, 56)
    program = static.forward.concrete_program.main_program
    ranks = [len(op.operand_source(0).shape) for op in program.global_block().ops
             if op.name() == "pd_op.transpose"]
    assert len(ranks) > 10 and max(ranks) <= 6, ranks


def test_export_writes_the_same_graph_with_or_without_cpu_kernels():
    model = paddle_pale.create_model("pale_t", **SMALL)
    model.eval()
    fast = use_cpu_kernels(copy.deepcopy(model))
    plain_ops, plain_static = _program_ops(model)
    fast_ops, fast_static = _program_ops(fast)
    assert fast_ops == plain_ops
    assert not {"addmm", "baddbmm", "softmax_"} & set(plain_ops)
    x = paddle.randn([2, 3, 56, 56])
    with paddle.no_grad():
        np.testing.assert_allclose(fast_static(x).numpy(), model(x).numpy(), atol=1e-4)


def _flash_params(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                  training=True, backend=None, scale=None, **unused):
    """SDPParams exactly as ``F.scaled_dot_product_attention`` builds them."""
    return sdpa.SDPParams(
        query_shape=query.shape, key_shape=key.shape, value_shape=value.shape,
        attn_mask_shape=None if attn_mask is None else attn_mask.shape, dropout=dropout_p,
        is_causal=is_causal, scale=scale, query_stop_gradient=query.stop_gradient,
        dtype=(query.dtype, key.dtype, value.dtype), place=(query.place,) * 3)


def _record_sdpa_calls(monkeypatch):
    calls = []

    def record(query, key, value, *args, **kwargs):
        calls.append(dict(zip(("attn_mask", "dropout_p", "is_causal", "training"), args),
                          query=query, key=key, value=value, **kwargs))
        return paddle.zeros(query.shape, "float32")
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", record)
    return calls


def _pretend_gpu(monkeypatch):
    # what needs a CUDA device (an Ampere or newer one, for bfloat16); every other check
    # runs as in Paddle
    monkeypatch.setattr(sdpa, "check_all_tensors_on_device", lambda params: True)
    monkeypatch.setattr(sdpa, "check_flash_attention_hardware_support", lambda device: True)
    monkeypatch.setattr(paddle.device, "is_bf16_supported", lambda **kwargs: True)
    monkeypatch.setattr(sdpa, "_config", {})
    sdpa.init_config()  # as scaled_dot_product_attention does before selecting


def _autocast(monkeypatch, dtype):
    # CPU autocast is a no-op in Paddle 3.3.1: report the state a GPU run would have
    monkeypatch.setattr(paddle.amp, "is_autocast_enabled", lambda *a: dtype is not None)
    monkeypatch.setattr(paddle.amp, "get_autocast_dtype", lambda *a: dtype or "float16")


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("stage", range(4))
def test_flash_attention_accepts_the_model_arguments_under_o1(monkeypatch, amp_dtype, stage):
    # Pale-T's stage widths and heads at 224 input (56, 28, 14, 7 tokens a side);
    # under O1 the layer's inputs may be float32: the attention runs in AMP's dtype
    dim, heads = (64, 128, 256, 512)[stage], (2, 4, 8, 16)[stage]
    side = 56 // 2 ** stage
    calls = _record_sdpa_calls(monkeypatch)
    _autocast(monkeypatch, amp_dtype)
    layer = paddle_pale.models.PaleAttention(dim, heads, 7)
    layer(paddle.randn([1, side, side, dim]))
    assert len(calls) == 2  # rows and columns
    _pretend_gpu(monkeypatch)
    for call in calls:
        assert call["query"].dtype == getattr(paddle, amp_dtype)
        assert call["query"].shape[-2:] == [heads // 2, dim // heads]
        assert sdpa.can_use_flash_attention(_flash_params(**call))
    # the check is real: an explicit scale, as the model once passed, is refused
    assert not sdpa.can_use_flash_attention(_flash_params(**dict(calls[0], scale=1.0)))


@pytest.mark.parametrize("dtype,amp_dtype,padded,expected", [
    (paddle.float32, None, False, ("matmul", paddle.float32)),  # fp32: export, CPU
    (paddle.float32, "float16", False, ("sdpa", paddle.float16)),  # O1
    (paddle.float32, "bfloat16", False, ("sdpa", paddle.bfloat16)),  # O1
    (paddle.float16, None, False, ("sdpa", paddle.float16)),  # O2 parameters
    (paddle.float32, "float16", True, ("matmul", paddle.float16)),  # padding needs a mask
])
def test_attention_backend_follows_the_amp_state(monkeypatch, dtype, amp_dtype, padded,
                                                 expected):
    _autocast(monkeypatch, amp_dtype)
    x = paddle.zeros([1], dtype)
    compute = attention.compute_dtype(x)
    assert (attention.attention_backend(compute, padded), compute) == expected


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_ema_updates_and_applies_to_half_precision_parameters(dtype):
    # AMP O2 keeps float16 / bfloat16 parameters; the averages stay float32
    model = paddle_pale.create_model("pale_t", **SMALL)
    model.to(dtype=dtype)
    ema = ModelEMA(model, decay=0.5)
    before = {name: value.astype("float32").numpy() for name, value in ema.state_dict().items()}
    for param in model.parameters():
        param.set_value((param.astype("float32") + 1.0).astype(dtype))
    ema.update(model)
    for name, value in model.state_dict().items():
        expected = 0.5 * before[name] + 0.5 * value.astype("float32").numpy()
        assert ema.shadow[name].dtype == paddle.float32
        np.testing.assert_allclose(ema.shadow[name].numpy(), expected, rtol=1e-6, atol=1e-6)
    trained = {name: value.numpy().copy() for name, value in model.state_dict().items()}
    with ema.applied_to(model):
        for name, value in model.state_dict().items():
            assert value.dtype == getattr(paddle, dtype), name
            np.testing.assert_array_equal(value.numpy(), ema.shadow[name].astype(dtype).numpy())
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), trained[name])


def test_every_convolution_starts_with_the_fan_in_of_its_groups():
    # uniform(+-1/sqrt(fan_in)) has std 1/sqrt(3 fan_in); a 3x3 depth-wise conv has fan-in
    # 9 (std 0.19) where Paddle's default counts C x 9 (std 0.0085 at C = 1024)
    model = paddle_pale.create_model("pale_b", depths=(1, 1, 1, 1))
    convs = [(name, layer) for name, layer in model.named_sublayers()
             if isinstance(layer, paddle.nn.Conv2D)]
    depthwise = [layer for _, layer in convs if layer._groups == layer._in_channels > 1]
    assert len(depthwise) == 4 * 4  # CPE + phi_Q, phi_K, phi_V per block
    for name, layer in convs:
        expected_fan_in = layer._in_channels // layer._groups * int(np.prod(layer._kernel_size))
        assert conv_fan_in(layer) == expected_fan_in
        weights = layer.weight.numpy()
        bound = 1.0 / math.sqrt(expected_fan_in)
        assert np.abs(weights).max() <= bound + 1e-7, name
        assert weights.std() == pytest.approx(bound / math.sqrt(3), rel=0.1), name
        # phi_Q, phi_K, phi_V's depth-wise convolutions have no bias (their linear map's
        # holds it)
        assert layer.bias is None if ".attn." in name else not layer.bias.numpy().any(), \
            name
    assert depthwise[-1].weight.numpy().std() == pytest.approx(1 / math.sqrt(27), rel=0.05)


def test_models_package_has_no_device_or_graph_mode_branches():
    # the paper lives in models/: one graph for every device, mode and exporter
    forbidden = re.compile(r"get_device\(|in_dynamic_mode\(|is_compiled_with_cuda|"
                           r"\baddmm\(|\bbaddbmm\(|softmax_\(")
    folder = os.path.join(ROOT, "paddle_pale", "models")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as handle:
                found = forbidden.findall(handle.read())
            assert not found, f"{name}: {found}"
