import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import paddle_pale
from paddle_pale.models import attention
from paddle_pale.models.attention_reference import naive_pale_attention


def _qkv(batch, height, width, channels, grad=False):
    tensors = [paddle.randn([batch, height, width, channels]) for _ in range(3)]
    for t in tensors:
        t.stop_gradient = not grad
    return tensors


CASES = [
    # (H, W, C, heads, pale_size)
    (14, 14, 16, 4, 7),          # divisible, square
    (14, 21, 16, 2, 7),          # divisible, not square
    (12, 20, 24, 6, (3, 5)),     # divisible, tuple pale size
    (13, 13, 16, 4, 7),          # padded, square
    (13, 17, 16, 4, (3, 5)),     # padded, not square, tuple
    (7, 9, 8, 2, 4),             # padded both, int
    (5, 6, 8, 4, 7),             # pale larger than the map
    (9, 4, 8, 2, (2, 3)),        # tall map, padded
]


@pytest.mark.parametrize("height,width,channels,heads,pale_size", CASES)
def test_matches_naive_reference(height, width, channels, heads, pale_size):
    q, k, v = _qkv(2, height, width, channels)
    expected = naive_pale_attention(q, k, v, heads, pale_size)
    got = paddle_pale.pale_attention(q, k, v, heads, pale_size)
    assert got.shape == [2, height, width, channels]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("height,width,channels,heads,pale_size", [CASES[0], CASES[4]])
def test_gradients_match_naive_reference(height, width, channels, heads, pale_size):
    grads = []
    for fn in (paddle_pale.pale_attention, naive_pale_attention):
        paddle.seed(1)
        q, k, v = _qkv(2, height, width, channels, grad=True)
        (fn(q, k, v, heads, pale_size) ** 2).sum().backward()
        grads.append([t.grad.numpy() for t in (q, k, v)])
    for got, expected in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_pale_covering_the_map_is_global_attention():
    # with s_r = H and s_c = W every group is the whole map: plain multi-head attention
    height, width, channels, heads = 6, 10, 16, 4
    q, k, v = _qkv(2, height, width, channels)
    got = paddle_pale.pale_attention(q, k, v, heads, (height, width))
    half, head_dim = channels // 2, channels // heads

    def mha(q, k, v):  # paddle's own kernel, layout [B, L, heads, d]
        shape = [2, height * width, heads // 2, head_dim]
        return F.scaled_dot_product_attention(q.reshape(shape), k.reshape(shape),
                                              v.reshape(shape))

    rows = mha(q[..., :half], k[..., :half], v[..., :half])
    cols = mha(q[..., half:], k[..., half:], v[..., half:])
    expected = paddle.concat([rows.reshape([2, height, width, half]),
                              cols.reshape([2, height, width, half])], axis=-1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5)


def test_rows_of_one_group_are_interlaced():
    # H=6, s_r=2 -> N_r=3: row 0 attends to rows 0 and 3 only. Make row 3's values
    # huge in the first half: only rows 0 and 3 (same group) may change.
    q, k, v = _qkv(1, 6, 4, 8)
    v2 = v.clone()
    v2[:, 3, :, :4] = v2[:, 3, :, :4] + 100.0
    before = paddle_pale.pale_attention(q, k, v, 2, 2).numpy()[..., :4]
    after = paddle_pale.pale_attention(q, k, v2, 2, 2).numpy()[..., :4]
    changed_rows = np.nonzero(np.abs(after - before).max(axis=(0, 2, 3)) > 1e-3)[0]
    assert changed_rows.tolist() == [0, 3]


def test_padded_keys_are_never_attended(monkeypatch):
    # padding is zeros; an unmasked zero key would get weight exp(0) and dilute the
    # output. Compare against attention computed on the real keys only.
    q, k, v = _qkv(1, 5, 5, 4)
    got = paddle_pale.pale_attention(q, k, v, 2, 3)  # pads 5 -> 6, N = 2
    # row group 1 holds rows 1, 3 (row 5 is padding); check token (1, 0), first half
    qr, kr, vr = q[0, :, :, :2], k[0, :, :, :2], v[0, :, :, :2]
    keys = paddle.concat([kr[1], kr[3]], axis=0)
    values = paddle.concat([vr[1], vr[3]], axis=0)
    weights = F.softmax((qr[1, 0:1] @ keys.T) * 2 ** -0.5, axis=-1)
    np.testing.assert_allclose(got[0, 1, 0, :2].numpy(), (weights @ values)[0].numpy(),
                               atol=1e-5)


def test_divisible_inputs_build_no_mask(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("mask built for a divisible input")
    monkeypatch.setattr(attention, "key_bias", fail)
    q, k, v = _qkv(1, 14, 21, 8)
    paddle_pale.pale_attention(q, k, v, 2, 7)
    with pytest.raises(AssertionError, match="mask built"):
        paddle_pale.pale_attention(*_qkv(1, 13, 21, 8), 2, 7)


@pytest.mark.parametrize("shapes,heads,pale_size,message", [
    (([2, 14, 16],) * 3, 2, 7, r"\[B, H, W, C\].*rank 3"),
    (([1, 7, 7, 8], [1, 7, 7, 8], [1, 7, 6, 8]), 2, 7, "same shape"),
    (([1, 7, 7, 12],) * 3, 3, 7, "even"),
    (([1, 7, 7, 12],) * 3, 8, 7, "num_heads=8 must divide the channels C=12"),
    (([1, 7, 7, 8],) * 3, 2, 0, "positive"),
    (([1, 7, 7, 8],) * 3, 2, (1, 2, 3), "pair"),
    (([1, 7, 7, 8],) * 3, 2, "7", "pale_size"),
])
def test_bad_inputs_raise_value_error(shapes, heads, pale_size, message):
    q, k, v = (paddle.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        paddle_pale.pale_attention(q, k, v, heads, pale_size)
