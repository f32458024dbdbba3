"""CSWin-T (paddle_pale.peers), the benchmark's peer written from the CSWin paper: its
size against the paper's figures, its cross-shaped attention and LePE against a naive
numpy reference, its export, and its benchmark cases."""
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddle_pale import benchmark as bench
from paddle_pale.inference import run_predictor
from paddle_pale.peers import CrossShapedAttention, cswin_t, stripe_lepe
from paddle_pale.utils.flops import count_flops, count_params

from conftest import ROOT

# strides 4, 8, 16, 32 of a 64x32 input: 16x8, 8x4, 4x2, 2x1, stripes divide them all
TINY = dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2),
            stripe_widths=(2, 2, 2, 1))


def test_size_matches_the_paper():
    # CSWin paper, Table 2: CSWin-T 23M parameters, 4.3G FLOPs (MACs) at 224x224
    backbone = cswin_t()
    classifier = count_params(cswin_t(num_classes=1000))
    assert classifier - count_params(backbone) == 512 * 1000 + 1000
    # 22.32M here: 3.0% under 23M and at least 0.18M under anything that rounds to it,
    # so some part the paper's text does not name is missing (a known gap, not noise:
    # the count is exact); the MACs, which decide the benchmark, agree to 0.6%
    assert classifier / 1e6 == pytest.approx(23, rel=0.05)
    macs, stages = count_flops(backbone, (3, 224, 224))
    assert macs / 1e9 == pytest.approx(4.3, rel=0.05)
    assert list(stages) == ["stage1", "stage2", "stage3", "stage4"]


def test_tiny_forward_gives_four_normed_maps_at_strides_4_to_32():
    model = cswin_t(**TINY)
    model.eval()
    outputs = model(paddle.randn([2, 3, 64, 32]))
    assert [list(o.shape) for o in outputs] == [[2, 8, 16, 8], [2, 16, 8, 4],
                                                 [2, 32, 4, 2], [2, 64, 2, 1]]
    # each map through its own LayerNorm (default affine: zero mean over channels)
    for out in outputs:
        np.testing.assert_allclose(out.numpy().mean(axis=1), 0, atol=1e-5)
    logits = cswin_t(num_classes=5, **TINY)(paddle.randn([2, 3, 64, 32]))
    assert logits.shape == [2, 5]


def test_sizes_not_divisible_by_the_stripe_width_raise():
    layer = CrossShapedAttention(8, 2, 2)
    with pytest.raises(ValueError, match="height 5 is not a multiple of the stripe width 2"):
        layer(paddle.randn([1, 5, 4, 8]))


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _naive_branch(q, k, v, heads, same, weight, bias, stripe_of):
    """Masked attention of [H, W, c] over all tokens, each query only to the keys with
    ``same[i, j]``, plus the depth-wise 3x3 conv of v over neighbours of its stripe."""
    height, width, channels = q.shape
    d = channels // heads
    tokens = height * width
    qf, kf, vf = (t.reshape(tokens, heads, d).transpose(1, 0, 2) for t in (q, k, v))
    scores = qf @ kf.transpose(0, 2, 1) * d ** -0.5
    scores = np.where(same[None], scores, -np.inf)
    out = (_softmax(scores) @ vf).transpose(1, 0, 2).reshape(height, width, channels)
    lepe = np.zeros_like(v)
    for r in range(height):
        for c in range(width):
            acc = bias.copy()
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < height and 0 <= cc < width and \
                            stripe_of(rr, cc) == stripe_of(r, c):
                        acc += weight[:, 0, dr + 1, dc + 1] * v[rr, cc]
            lepe[r, c] = acc
    return out + lepe


@pytest.mark.parametrize("split,stripe_width", [(True, 2), (True, 3), (False, 6)])
def test_attention_matches_a_naive_masked_reference(split, stripe_width):
    height, width, dim, heads = 6, 6, 8, 4
    layer = CrossShapedAttention(dim, heads, stripe_width, split)
    layer.eval()
    layer.lepe_bias.set_value(paddle.randn([dim]))
    x = np.random.randn(1, height, width, dim).astype("float32")
    with paddle.no_grad():
        got = layer(paddle.to_tensor(x)).numpy()[0]
    p = {name: t.numpy() for name, t in layer.named_parameters()}
    qkv = x[0] @ p["qkv.weight"] + p["qkv.bias"]
    q, k, v = np.split(qkv, 3, axis=-1)
    rows = np.repeat(np.arange(height), width)
    cols = np.tile(np.arange(width), height)
    weight, bias = p["lepe_weight"], p["lepe_bias"]
    if split:
        half = dim // 2
        same_row = rows[:, None] // stripe_width == rows[None] // stripe_width
        same_col = cols[:, None] // stripe_width == cols[None] // stripe_width
        out = np.concatenate([
            _naive_branch(q[..., :half], k[..., :half], v[..., :half], heads // 2, same_row,
                          weight[:half], bias[:half], lambda r, c: r // stripe_width),
            _naive_branch(q[..., half:], k[..., half:], v[..., half:], heads // 2, same_col,
                          weight[half:], bias[half:], lambda r, c: c // stripe_width)],
            axis=-1)
    else:
        everything = np.ones((height * width, height * width), bool)
        out = _naive_branch(q, k, v, heads, everything, weight, bias, lambda r, c: 0)
    want = out @ p["proj.weight"] + p["proj.bias"]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("axis", [1, 2])
def test_lepe_sees_nothing_of_the_next_stripe(axis):
    # v is 1 in the first stripe only: the conv of every other stripe is its bias alone,
    # and the first stripe's last line adds no neighbour from across its border
    v = np.zeros((1, 4, 4, 1), "float32")
    if axis == 1:
        v[:, :2] = 1
    else:
        v[:, :, :2] = 1
    weight = paddle.ones([1, 1, 3, 3])
    out = stripe_lepe(paddle.to_tensor(v), weight, paddle.full([1], 0.5), 2, axis).numpy()
    out = out[0, :, :, 0] if axis == 1 else out[0, :, :, 0].T
    np.testing.assert_allclose(out[2:], 0.5)
    # in-stripe neighbours of a 2-line stripe (zero padded): corners 4, edges 6
    np.testing.assert_allclose(out[:2], 0.5 + np.array([[4, 6, 6, 4], [4, 6, 6, 4]]))


@pytest.mark.parametrize("onednn", [False, True])
def test_exported_predictor_matches_eager(tmp_path, onednn):
    model = cswin_t(**TINY)
    model.eval()
    images = paddle.randn([2, 3, 64, 32])
    predictor = bench.build_predictor(model, (64, 32), str(tmp_path), onednn=onednn)
    outputs = run_predictor(predictor, images.numpy())
    with paddle.no_grad():
        expected = model(images)
    assert len(outputs) == 4
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)


def test_cases_parse_and_report_pale_over_cswin():
    assert bench.parse_case("cswin_t") == ("cswin_t", False, False, False)
    assert bench.parse_case("cswin_t/predictor+onednn") == ("cswin_t", True, False, True)
    with pytest.raises(ValueError, match="cswin_t exports only with a fixed size"):
        bench.parse_case("cswin_t/predictor-any-size")
    for name in ("cswin_t", "cswin_t/predictor", "cswin_t/predictor+onednn"):
        assert name in bench.MODEL_CASES
    assert "cswin_t" in bench.ESTIMATE_MODELS
    rows = [dict(name=name, mode=mode, images_per_s=ips) for name, mode, ips in (
        ("pale_t", "infer", 6.0), ("cswin_t", "infer", 4.0), ("pale_t", "train", 3.0),
        ("cswin_t", "train", 2.0), ("pale_t/predictor", "infer", 10.0),
        ("swin_t/predictor+onednn", "infer", 8.0), ("cswin_t/predictor", "infer", 5.0),
        ("cswin_t/predictor+onednn", "infer", 4.0))]
    best = bench.best_predictors(rows)
    assert best["cswin_t"]["name"] == "cswin_t/predictor"
    assert best["ratios"] == {"swin_t": 1.25, "cswin_t": 2.0} and best["ratio"] == 1.25
    assert bench.eager_ratios(rows) == {"infer": 1.5, "train": 1.5}


def test_benchmark_cases_of_a_tiny_cswin(tmp_path):
    overrides = {"cswin_t": TINY}
    cases = bench.model_cases(1, (64, 32), names=("cswin_t", "cswin_t/predictor+onednn"),
                              train=True, workdir=str(tmp_path), model_overrides=overrides)
    macs, _ = count_flops(cswin_t(**TINY), (3, 64, 32))
    assert [case.name for case in cases] == ["cswin_t", "cswin_t/predictor+onednn"]
    assert [case.macs for case in cases] == [macs, macs]
    assert list(cases[0].modes) == ["infer", "train"]
    for case in cases:
        for fn in case.modes.values():
            fn()


def test_cost_estimate_shows_pale_over_cswin():
    devices = {"A": (100e12, 1e12)}
    overrides = dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1),
                     num_heads=(2, 2, 2, 2), cswin_t=dict(TINY, stripe_widths=(2, 2, 2, 2)))
    report = bench.cost_estimate(("pale_t", "cswin_t"), batch=2, size=(64, 64),
                                 training=False, devices=devices, model_overrides=overrides)
    rows = {(row["name"], row["program"]): row for row in report["rows"]}
    pale, cswin = rows[("pale_t", "forward")], rows[("cswin_t", "forward")]
    assert cswin["gflops_per_image"] > 0
    assert pale["speedup_by_peer"]["cswin_t"]["A"] == pytest.approx(
        cswin["estimate_ms"]["A"] / pale["estimate_ms"]["A"])
    text = bench.format_cost_estimate(report)
    # no swin_t: the reference column is over pale_t, the table over cswin_t follows
    assert "estimated speedup of Pale-T over cswin_t" in text


def test_benchmark_tool_times_cswin_t():
    # 112x112: maps 28, 14, 7 at strides 4-16 (stripe widths 1, 2, 7), 4x4 full attention
    done = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--batch", "1", "--size", "112", "112",
         "--models", "pale_t", "cswin_t", "--no-train", "--no-attention", "--rounds", "1",
         "--warmup", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "eager pale_t over eager cswin_t: infer" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("cswin_t "))
    assert "infer" in row
