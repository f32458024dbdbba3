"""An attention mode is one object in one registry: a mode defined here alone trains,
exports, counts its MACs and draws its region, with no other file changed."""
import numpy as np
import paddle
import pytest

import paddle_pale
from paddle_pale.engine.config import RULES
from paddle_pale.export import export
from paddle_pale.inference import ImageClassifier
from paddle_pale.kernels import use_cpu_kernels
from paddle_pale.models import attention, modes
from paddle_pale.models.attention_reference import mode_masks, naive_mode_attention
from paddle_pale.utils.flops import count_flops
from paddle_pale.visualize import draw_regions

ARCH = dict(num_classes=3, depths=[1, 2, 1, 1], embed_dims=[16, 16, 16, 16],
            num_heads=[2, 2, 2, 2], pale_size=2)


class RowStripes(modes.AttentionMode):
    """Every head attends within stripes of ``s_r`` adjacent rows (CSWin's row half on
    all channels): a mode of this test only."""
    name = "toy_row_stripes"
    split = False

    def reference_masks(self, height, width, region, block_index=0):
        rows = np.repeat(np.arange(height), width)
        return (rows[:, None] // region[0] == rows[None, :] // region[0],)

    def compute(self, qkv, num_heads, region, block_index=0, backend="matmul",
                query_scale=None, softmax=None, halves=None, inplace=False):
        q, k, v = qkv
        if query_scale is None:
            query_scale = (q.shape[-1] // num_heads) ** -0.5
        return attention.row_attention(q, k, v, num_heads, region[0], backend, query_scale,
                                       softmax or paddle.nn.functional.softmax,
                                       contiguous=True)

    def macs(self, height, width, channels, region, block_index=0):
        padded = -(-height // region[0]) * region[0]
        return 2 * padded * width * region[0] * width * channels


@pytest.fixture
def toy_mode():
    mode = modes.register_mode(RowStripes())
    yield mode.name
    modes.unregister_mode(mode.name)


def test_a_registered_mode_is_known_everywhere(toy_mode):
    assert toy_mode in paddle_pale.MODES and toy_mode in list(modes.MODES)
    assert RULES[("Arch", "attention_mode")].check(toy_mode)
    with pytest.raises(ValueError, match="already registered"):
        modes.register_mode(RowStripes())


def test_toy_mode_matches_its_reference_mask(toy_mode):
    paddle.seed(0)
    q, k, v = (paddle.randn([2, 7, 5, 8]) for _ in range(3))  # 7 rows: padded at s_r=2
    np.testing.assert_allclose(
        paddle_pale.mode_attention(q, k, v, 2, toy_mode, 2).numpy(),
        naive_mode_attention(q, k, v, 2, toy_mode, 2).numpy(), atol=1e-5)


def test_toy_mode_trains_a_step_and_the_cpu_kernels_agree(toy_mode):
    paddle.seed(1)
    model = paddle_pale.create_model("pale_t", attention_mode=toy_mode, **ARCH)
    assert {b.attn.attention_mode for s in model.stages for b in s} == {toy_mode}
    x, labels = paddle.randn([2, 3, 32, 32]), paddle.to_tensor([0, 2])
    optimizer = paddle.optimizer.AdamW(1e-3, parameters=model.parameters())
    before = model.head.weight.numpy().copy()
    loss = paddle.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    optimizer.step()
    assert np.isfinite(float(loss)) and not np.allclose(model.head.weight.numpy(), before)
    model.eval()
    plain = model(x).numpy()
    np.testing.assert_allclose(use_cpu_kernels(model)(x).numpy(), plain, atol=1e-4)


def test_toy_mode_exports_with_symbolic_sizes(toy_mode, tmp_path):
    paddle.seed(2)
    model = paddle_pale.create_model("pale_t", attention_mode=toy_mode, **ARCH)
    model.eval()
    prefix = str(tmp_path / "best")
    paddle.save(model.state_dict(), prefix + ".pdparams")
    paddle.save({"epoch": 1, "arch": dict(ARCH, name="pale_t", attention_mode=toy_mode),
                 "input_size": 32}, prefix + ".pdstates")
    export("inference", prefix, str(tmp_path / "export"))
    classifier = ImageClassifier(str(tmp_path / "export"))
    for height, width in [(32, 32), (36, 44)]:  # 36x44: stage maps of odd rows, padded
        images = np.random.RandomState(3).randn(1, 3, height, width).astype("float32")
        np.testing.assert_allclose(classifier.logits(images),
                                   model(paddle.to_tensor(images)).numpy(), atol=1e-4)


def test_toy_mode_macs_count_its_region(toy_mode):
    h, w, c = 8, 6, 16  # s_r = 2 divides 8: no padded line
    layer = paddle_pale.models.pale.PaleAttention(c, 4, 2, attention_mode=toy_mode)
    total, _ = count_flops(layer, (c, h, w), forward=lambda m, x: m(x.transpose([0, 2, 3, 1])))
    (mask,) = mode_masks(toy_mode, h, w, 2)
    # projections as in tests/test_flops.py, plus 2 MACs per (query, key, channel)
    assert total == 4 * h * w * c * c + 27 * h * w * c + 2 * c * int(mask.sum())


def test_toy_mode_draws_its_region(toy_mode, tmp_path):
    result = draw_regions(str(tmp_path / "regions.png"), height=6, width=5, query=(3, 1),
                          pale_size=2)
    (panel,) = [p for p in result["panels"] if p["mode"] == toy_mode]
    assert panel["size"] == 2
    from test_visualize import _cell_colours
    import matplotlib.image
    cells = _cell_colours(matplotlib.image.imread(result["path"]), panel["extent"], 6, 5)
    expected = np.where(np.arange(6)[:, None] // 2 == 1, "all", "none").repeat(5, axis=1)
    expected = expected.astype(object)
    expected[3, 1] = "query"
    assert (cells == expected).all()
