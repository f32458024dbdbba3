import os
import runpy
import subprocess
import sys

import pytest

import paddle_pale
from paddle_pale.models import PaleAttention
from paddle_pale.models.attention_reference import mode_masks
from paddle_pale.engine.config import load_config
from paddle_pale.utils.flops import (attention_macs, count_flops, count_params,
                                     format_mode_flops_table, mode_flops_rows)

from conftest import ROOT

# Table 2 of the paper, 224x224: params (M), FLOPs (G, multiply-accumulates)
PAPER = {"pale_t": (22, 4.2), "pale_s": (48, 9.0), "pale_b": (85, 15.6)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_params_and_flops_match_table_2(name):
    model = paddle_pale.create_model(name)
    params, flops = PAPER[name]
    assert count_params(model) / 1e6 == pytest.approx(params, rel=0.04)
    total, breakdown = count_flops(model, (224, 224))
    assert total / 1e9 == pytest.approx(flops, rel=0.06)
    assert list(breakdown) == ["stage1", "stage2", "stage3", "stage4", "head"]
    assert sum(breakdown.values()) == total


@pytest.mark.parametrize("h,w,c,pale", [(14, 14, 64, 7), (28, 14, 32, (7, 2))])
def test_attention_module_matches_equation_5(h, w, c, pale):
    # Eq. 5: 4hwc^2 + hwc(s_c h + s_r w + 27), counting multiply-accumulates without biases
    s_r, s_c = (pale, pale) if isinstance(pale, int) else pale
    layer = PaleAttention(c, 4, pale)
    total, _ = count_flops(layer, (c, h, w), forward=lambda m, x: m(x.transpose([0, 2, 3, 1])))
    assert total == 4 * h * w * c * c + h * w * c * (s_c * h + s_r * w + 27)


def test_flops_tool_prints_breakdown():
    out = subprocess.run([sys.executable, "tools/flops.py", "--model", "pale_t", "--size",
                          "224", "224"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "params: 21.71M" in out.stdout
    assert "FLOPs (MACs): 4.20" in out.stdout
    assert out.stdout.count("stage") == 4


@pytest.mark.parametrize("mode,size,block_index", [
    ("pale", (7, 3), 0), ("pale_sequential", (7, 3), 0), ("pale_sequential", (7, 3), 1),
    ("pale_vanilla", (7, 3), 0), ("pale_vanilla", 1, 0), ("cross_shaped", 7, 0),
    ("cross_shaped", (2, 3), 0), ("axial", None, 0)])
def test_attention_macs_of_each_mode_count_its_region(mode, size, block_index):
    # QK^T and AV: 2 MACs per (query, key, channel) over the keys of each query's region,
    # taken from the reference mask (14 x 21: every size here divides); pale_vanilla
    # also computes the s_r s_c keys of the row-column intersection in both of its
    # parts (masked once)
    h, w, c = 14, 21, 16
    layer = PaleAttention(c, 4, size or 7, attention_mode=mode, stripe_width=size or 7,
                          block_index=block_index)
    total, _ = count_flops(layer, (c, h, w), forward=lambda m, x: m(x.transpose([0, 2, 3, 1])))
    masks = mode_masks(mode, h, w, size, block_index)
    region = sum(2 * (c // len(masks)) * int(mask.sum()) for mask in masks)
    if mode == "pale_vanilla":
        s_r, s_c = (size, size) if isinstance(size, int) else size
        region += 2 * c * h * w * s_r * s_c
    assert total == 4 * h * w * c * c + 27 * h * w * c + region


def test_flops_tool_prints_one_row_per_mode(capsys):
    small = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_classes=10)
    rows = mode_flops_rows([(mode, paddle_pale.create_model("pale_t", attention_mode=mode,
                                                             **small))
                            for mode in paddle_pale.MODES], (64, 64))
    assert [row["mode"] for row in rows] == list(paddle_pale.MODES)
    assert len({row["params"] for row in rows}) == 1  # only the region differs
    model = paddle_pale.create_model("pale_t", attention_mode="pale_vanilla", **small)
    assert (rows[2]["macs"], rows[2]["attention_macs"]) == attention_macs(model, (64, 64))
    assert rows[2]["attention_macs"] > rows[0]["attention_macs"] > rows[4]["attention_macs"]
    # the demo config's Arch (1.7M parameters) and its 32x32 input
    runpy.run_path(os.path.join(ROOT, "tools", "flops.py"), run_name="flops")["main"](
        ["-c", os.path.join(ROOT, "configs", "demo.yaml"), "--modes", "pale", "axial"])
    out = capsys.readouterr().out
    arch = dict(load_config(os.path.join(ROOT, "configs", "demo.yaml"))["Arch"])
    name = arch.pop("name")
    table = format_mode_flops_table(
        [(mode, paddle_pale.create_model(name, **dict(arch, attention_mode=mode)))
         for mode in ("pale", "axial")],
        f"{name} with the Arch of {os.path.join(ROOT, 'configs', 'demo.yaml')}", (32, 32))
    assert out.strip() == table
    assert out.count("| 1.67M |") == 2
