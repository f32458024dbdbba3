import subprocess
import sys

import pytest

import paddle_pale
from paddle_pale.models import PaleAttention
from paddle_pale.utils.flops import count_flops, count_params

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
    assert "params: 21.73M" in out.stdout
    assert "FLOPs (MACs): 4.20" in out.stdout
    assert out.stdout.count("stage") == 4
