"""The pictures (tools/visualize.py): the regions picture read back pixel by pixel
against the reference masks, and the attention weights of a model against the masked
softmax of its own projections."""
import os
import runpy

import matplotlib.image
import numpy as np
import paddle
import pytest

import paddle_pale
from paddle_pale.models.attention_reference import mode_masks
from paddle_pale.visualize import REGION_COLORS, attention_maps, draw_regions

from conftest import ROOT

TOOL = os.path.join(ROOT, "tools", "visualize.py")


def _cell_colours(picture, extent, height, width):
    """The colour at the centre of every cell of a panel, as REGION_COLORS keys."""
    left, top, right, bottom = extent
    names = list(REGION_COLORS)
    palette = np.array([REGION_COLORS[n] for n in names], dtype="float64")
    cells = np.empty((height, width), dtype=object)
    for r in range(height):
        for c in range(width):
            y = int(top + (r + 0.5) * (bottom - top) / height)
            x = int(left + (c + 0.5) * (right - left) / width)
            rgb = picture[y, x, :3] * 255.0
            distance = np.abs(palette - rgb).max(axis=1)
            assert distance.min() <= 2, f"cell {(r, c)}: colour {rgb} is no region colour"
            cells[r, c] = names[int(distance.argmin())]
    return cells


def test_regions_picture_draws_exactly_the_reference_masks(tmp_path):
    # 9x11: pale size (2, 3) pads both sides; the stripes of width 2 pad the rows
    height, width, query = 9, 11, (4, 7)
    path = str(tmp_path / "regions.png")
    runpy.run_path(TOOL, run_name="visualize")["main"](
        ["regions", "--size", str(height), str(width), "--query", "4", "7", "--pale-size",
         "2x3", "--stripe-width", "2", "--cell-pixels", "12", "--output", path])
    layout = draw_regions(str(tmp_path / "again.png"), height, width, query, [2, 3], 2, 12)
    picture = matplotlib.image.imread(path)
    assert [p["mode"] for p in layout["panels"]] == [
        "pale", "pale_sequential", "pale_sequential", "pale_vanilla", "cross_shaped", "axial"]
    index = query[0] * width + query[1]
    for panel in layout["panels"]:
        cells = _cell_colours(picture, panel["extent"], height, width)
        masks = [m[index].reshape(height, width) for m in mode_masks(
            panel["mode"], height, width, panel["size"], panel["block_index"])]
        assert cells[query] == "query"
        keys = np.ones((height, width), bool)
        keys[query] = False  # the query cell is drawn as such (it attends to itself)
        assert all(m[query] for m in masks)
        if len(masks) == 2:
            rows, cols = masks
            assert ((cells == "rows") | (cells == "both") == rows)[keys].all(), panel["title"]
            assert ((cells == "columns") | (cells == "both") == cols)[keys].all(), panel["title"]
        else:
            assert ((cells == "all") == masks[0])[keys].all(), panel["title"]
        assert ((cells == "none") == ~np.any(masks, axis=0))[keys].all(), panel["title"]


def _masked_softmax_weights(layer, x, token, mask):
    """Per head: softmax of the query's scores over the keys of ``mask``, from the
    layer's own projections (``[heads, HW]``)."""
    q, k, _ = (t.numpy()[0] for t in layer.qkv_projection(x))
    h, w, channels = q.shape
    heads = layer.num_heads
    d = channels // heads
    query = q[token].reshape(heads, d)
    keys = k.reshape(h * w, heads, d)
    scores = np.einsum("nd,knd->nk", query, keys) * d ** -0.5
    scores = np.where(mask[None], scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["pale", "pale_vanilla", "cross_shaped"])
def test_attention_weights_sum_to_one_over_the_region_and_are_zero_outside(mode):
    model = paddle_pale.create_model("pale_t", attention_mode=mode, depths=(1, 2, 1, 1),
                                     embed_dims=(8, 16, 16, 32), num_heads=(2, 4, 2, 4),
                                     pale_size=3, stripe_width=(2, 3, 2, 2))
    images = paddle.randn([1, 3, 64, 80])
    captured = []
    model.stages[1][1].attn.register_forward_pre_hook(
        lambda layer, inputs: captured.append(inputs[0]))
    maps = attention_maps(model, images, query=(37, 50))
    assert [m["size"] for m in maps] == [(16, 20), (8, 10), (4, 5), (2, 3)]
    assert [m["token"] for m in maps] == [(9, 12), (4, 6), (2, 3), (1, 1)]
    for stage in maps:
        h, w = stage["size"]
        layer = model.stages[stage["stage"]][-1].attn
        masks = mode_masks(mode, h, w, layer.region, layer.block_index)
        index = stage["token"][0] * w + stage["token"][1]
        heads = layer.num_heads
        weights = stage["weights"].reshape(heads, h * w)
        # the first half of the heads attends under the first mask, the second half
        # under the second (a mode that attends with all heads has one mask)
        per_head = [masks[0]] * heads if len(masks) == 1 else \
            [masks[0]] * (heads // 2) + [masks[1]] * (heads // 2)
        for head, mask in enumerate(per_head):
            region = mask[index]
            np.testing.assert_allclose(weights[head][region].sum(), 1.0, atol=1e-5)
            assert (weights[head][~region] == 0).all()
            assert (weights[head][region] > 0).all()
        groups = [group for _, group in stage["groups"]]
        assert groups == ([list(range(heads))] if len(masks) == 1 else [
            list(range(heads // 2)), list(range(heads // 2, heads))])
    # the weights are the layer's masked softmax (stage 2, last block: block_index 1)
    stage = maps[1]
    h, w = stage["size"]
    layer = model.stages[1][1].attn
    masks = mode_masks(mode, h, w, layer.region, 1)
    index = stage["token"][0] * w + stage["token"][1]
    expected = [_masked_softmax_weights(layer, captured[0], stage["token"], m[index])
                for m in masks]
    if len(expected) == 2:
        expected = np.concatenate([expected[0][:2], expected[1][2:]])
    else:
        expected = expected[0]
    np.testing.assert_allclose(stage["weights"].reshape(4, h * w), expected, atol=1e-6)


def test_attention_tool_draws_a_checkpoint_on_a_sample_photograph(tmp_path):
    arch = dict(name="pale_t", num_classes=10, depths=[1, 1, 1, 1],
                embed_dims=[16, 32, 48, 64], num_heads=[2, 2, 2, 4], pale_size=4,
                attention_mode="pale_sequential")
    model = paddle_pale.create_model(**{k: v for k, v in arch.items()})
    prefix = str(tmp_path / "best")
    paddle.save(model.state_dict(), prefix + ".pdparams")
    paddle.save({"epoch": 3, "arch": arch, "input_size": 32, "mean": [0.3] * 3,
                 "std": [0.35] * 3}, prefix + ".pdstates")
    path = str(tmp_path / "attention.png")
    runpy.run_path(TOOL, run_name="visualize")["main"](
        ["attention", "--checkpoint", prefix, "--image", "flower", "--size", "64", "96",
         "--query", "20", "70", "--output", path])
    picture = matplotlib.image.imread(path)
    # four stages, one panel each (pale_sequential attends with all heads)
    assert picture.shape[0] > picture.shape[1] and picture.std() > 0.05
    with pytest.raises(ValueError, match="outside the 64x96 map"):
        attention_maps(model, paddle.zeros([1, 3, 64, 96]), (64, 0))
