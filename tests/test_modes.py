"""Attention modes (Table 6): each against global attention under its written mask, the
block and backbone plumbing, and errors."""
import numpy as np
import paddle
import pytest

import paddle_pale
from paddle_pale.models import modes
from paddle_pale.models.attention_reference import mode_masks, naive_mode_attention
from paddle_pale.models.pale import PaleAttention

MODES = ["pale", "pale_sequential", "pale_vanilla", "cross_shaped", "axial"]


def _qkv(batch, height, width, channels, grad=False):
    tensors = [paddle.randn([batch, height, width, channels]) for _ in range(3)]
    for t in tensors:
        t.stop_gradient = not grad
    return tensors


CASES = [
    # (H, W, C, heads, size, block_index); size: pale size or stripe width
    (14, 14, 16, 4, 7, 0),          # divisible, square
    (14, 21, 16, 2, 7, 1),          # divisible, not square, odd block
    (12, 20, 24, 6, (3, 5), 0),     # divisible, pair size
    (13, 17, 16, 4, (3, 5), 1),     # padded, not square, pair, odd block
    (7, 9, 8, 2, 4, 0),             # padded both ways
    (5, 6, 8, 4, 7, 0),             # size larger than the map (N_r = N_c = 1)
    (9, 4, 8, 2, (2, 3), 3),        # tall map, padded
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("height,width,channels,heads,size,block_index", CASES)
def test_mode_matches_masked_reference(mode, height, width, channels, heads, size,
                                       block_index):
    q, k, v = _qkv(2, height, width, channels)
    expected = naive_mode_attention(q, k, v, heads, mode, size, block_index)
    got = paddle_pale.mode_attention(q, k, v, heads, mode, size, block_index)
    assert got.shape == [2, height, width, channels]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode,size,block_index", [
    ("pale_vanilla", (3, 5), 0), ("pale_sequential", (3, 5), 1), ("cross_shaped", 2, 0),
    ("axial", None, 0)])
def test_mode_gradients_match_masked_reference(mode, size, block_index):
    grads = []
    for fn in (paddle_pale.mode_attention, naive_mode_attention):
        paddle.seed(1)
        q, k, v = _qkv(2, 13, 17, 16, grad=True)
        (fn(q, k, v, 4, mode, size, block_index) ** 2).sum().backward()
        grads.append([t.grad.numpy() for t in (q, k, v)])
    for got, expected in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_pale_mode_is_pale_attention_unchanged():
    q, k, v = _qkv(1, 13, 17, 16)
    np.testing.assert_array_equal(
        paddle_pale.mode_attention(q, k, v, 4, "pale", (3, 5)).numpy(),
        paddle_pale.pale_attention(q, k, v, 4, (3, 5)).numpy())


def test_masks_follow_the_written_definitions_on_a_small_map():
    # 4x6 map, token (1, 2) = index 8; pale size 2: N_r = 2, N_c = 3
    def region(mask, query=8):
        return sorted(np.nonzero(mask[query])[0].tolist())
    rows, cols = mode_masks("pale", 4, 6, 2)
    assert region(rows) == [6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23]  # rows 1 and 3
    assert region(cols) == [2, 5, 8, 11, 14, 17, 20, 23]  # columns 2 and 5
    (vanilla,) = mode_masks("pale_vanilla", 4, 6, 2)
    assert region(vanilla) == sorted(set(region(rows)) | set(region(cols)))
    assert mode_masks("pale_sequential", 4, 6, 2, block_index=3)[0][8].tolist() == \
        cols[8].tolist()
    rows, cols = mode_masks("cross_shaped", 4, 6, 2)
    assert region(rows) == list(range(12))  # rows 0 and 1
    assert region(cols) == [2, 3, 8, 9, 14, 15, 20, 21]  # columns 2 and 3
    rows, cols = mode_masks("axial", 4, 6)
    assert region(rows) == [6, 7, 8, 9, 10, 11] and region(cols) == [2, 8, 14, 20]


def test_vanilla_score_tensors_grow_with_the_pale_not_with_hw_squared(monkeypatch):
    # both parts of pale_vanilla: HW (s_r W + s_c H) scores per head, no (HW)^2 tensor
    recorded = []
    original = modes.attention_scores

    def spy(q, k, bias):
        out = original(q, k, bias)
        recorded.append(int(np.prod(out.shape)))
        return out
    monkeypatch.setattr(modes, "attention_scores", spy)
    height, width, heads, s_r, s_c = 12, 21, 2, 2, 3
    paddle_pale.mode_attention(*_qkv(1, height, width, 8), heads, "pale_vanilla", (s_r, s_c))
    tokens = height * width
    assert recorded == [heads * tokens * s_r * width, heads * tokens * s_c * height]
    assert max(recorded) * 6 == heads * tokens ** 2  # global attention: 6x here


@pytest.mark.parametrize("mode", ["pale_sequential", "pale_vanilla", "cross_shaped"])
def test_backbone_blocks_run_the_mode_with_the_layer_projections(mode):
    # pale_sequential counts blocks within each stage: rows, columns, rows, ...
    model = paddle_pale.create_model("pale_t", attention_mode=mode, depths=(1, 1, 3, 1),
                                     embed_dims=(8, 16, 24, 32), num_heads=(2, 2, 4, 4),
                                     pale_size=(2, 3), stripe_width=[1, 2, 3, 4], num_classes=3)
    assert model.attention_mode == mode
    assert [[b.attn.block_index for b in stage] for stage in model.stages] == \
        [[0], [0], [0, 1, 2], [0]]
    assert model.stripe_widths == [(1, 1), (2, 2), (3, 3), (4, 4)]
    attn = model.stages[2][1].attn
    assert attn.attention_mode == mode
    assert attn.region == ((3, 3) if mode == "cross_shaped" else (2, 3))
    x = paddle.randn([2, 5, 7, 24])
    expected = attn.proj(naive_mode_attention(*attn.qkv_projection(x), 4, mode, attn.region,
                                              block_index=1))
    np.testing.assert_allclose(attn(x).numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)
    assert model(paddle.randn([1, 3, 45, 61])).shape == [1, 3]


def test_cross_shaped_defaults_to_cswin_t_stripe_widths():
    model = paddle_pale.create_model("pale_t", attention_mode="cross_shaped", depths=(1,) * 4)
    assert model.stripe_widths == [(1, 1), (2, 2), (7, 7), (7, 7)]
    assert [stage[0].attn.region for stage in model.stages] == model.stripe_widths
    axial = paddle_pale.create_model("pale_t", attention_mode="axial", depths=(1,) * 4)
    assert [stage[0].attn.region for stage in axial.stages] == [(1, 1)] * 4


def test_modes_share_parameters_and_every_one_trains():
    names = None
    for mode in MODES:
        paddle.seed(0)
        model = paddle_pale.create_model("pale_t", attention_mode=mode, depths=(1,) * 4,
                                         embed_dims=(8, 16, 16, 16), num_heads=(2,) * 4,
                                         num_classes=3)
        keys = list(model.state_dict())
        assert names is None or keys == names  # checkpoints are interchangeable
        names = keys
        logits = model(paddle.randn([2, 3, 37, 45]))
        paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([0, 2])).backward()
        for name, param in model.named_parameters():
            if not param.stop_gradient:
                assert param.grad is not None and np.isfinite(param.grad.numpy()).all(), name


def test_modes_with_all_heads_take_an_odd_head_count():
    q, k, v = _qkv(1, 6, 6, 12)
    for mode in ("pale_sequential", "pale_vanilla"):
        np.testing.assert_allclose(
            paddle_pale.mode_attention(q, k, v, 3, mode, 3).numpy(),
            naive_mode_attention(q, k, v, 3, mode, 3).numpy(), atol=1e-5)
    model = paddle_pale.create_model("pale_t", attention_mode="pale_vanilla", depths=(1,) * 4,
                                     embed_dims=(9, 16, 16, 16), num_heads=(3, 1, 2, 4))
    assert model.stages[0][0].attn.num_heads == 3


@pytest.mark.parametrize("mode,heads,size,block_index,message", [
    ("swin", 2, 7, 0, "attention_mode must be one of pale, pale_sequential, pale_vanilla, "
                      "cross_shaped, axial; got 'swin'"),
    ("cross_shaped", 2, 0, 0, "cross_shaped needs stripe_width as a positive int"),
    ("pale_vanilla", 2, -3, 0, "pale_vanilla needs pale_size as a positive int"),
    ("pale", 2, None, 0, "pale needs pale_size"),
    ("cross_shaped", 3, 7, 0, "cross_shaped attention needs an even num_heads"),
    ("axial", 1, None, 0, "axial attention needs an even num_heads"),
    ("pale_sequential", 3, 7, 0, "num_heads=3 must divide the channels C=8"),
    ("pale_sequential", 2, 7, -1, "block_index must be an int >= 0"),
])
def test_bad_mode_arguments_raise_value_errors(mode, heads, size, block_index, message):
    q, k, v = _qkv(1, 7, 7, 8)
    with pytest.raises(ValueError) as error:
        paddle_pale.mode_attention(q, k, v, heads, mode, size, block_index)
    assert message in str(error.value)


@pytest.mark.parametrize("shapes,message", [
    (([1, 7, 7, 8], [1, 7, 7, 8], [1, 49, 8]), "mode_attention expects v of shape [B, H, W, C]"),
    (([1, 7, 7, 8], [1, 7, 6, 8], [1, 7, 7, 8]), "q, k and v must have the same shape"),
])
def test_bad_shapes_name_mode_attention(shapes, message):
    q, k, v = (paddle.randn(shape) for shape in shapes)
    with pytest.raises(ValueError) as error:
        paddle_pale.mode_attention(q, k, v, 2, "pale_sequential", 7)
    assert message in str(error.value)


@pytest.mark.parametrize("kwargs,message", [
    (dict(attention_mode="global"), "attention_mode must be one of pale, pale_sequential"),
    (dict(attention_mode="cross_shaped", stripe_width=[1, 2, 0, 7]),
     "stripe_width must be a positive int"),
    (dict(attention_mode="axial", num_heads=(2, 4, 8, 15)), "axial attention needs an even"),
    (dict(attention_mode="pale_vanilla", num_heads=(2, 4, 8, 24)), "must divide the channels"),
])
def test_bad_model_arguments_name_the_mode(kwargs, message):
    with pytest.raises(ValueError, match=message):
        paddle_pale.create_model("pale_t", **kwargs)


def test_layer_names_the_mode_in_its_repr():
    layer = PaleAttention(8, 2, 7, attention_mode="pale_sequential", block_index=3)
    assert "attention_mode=pale_sequential" in repr(layer) and "block_index=3" in repr(layer)
    assert "attention_mode" not in repr(PaleAttention(8, 2, 7))
