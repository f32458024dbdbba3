"""The static-program cost measure: bytes and FLOPs of tiny programs against hand counts,
the flash-attention fusion, the roofline arithmetic and the benchmark's estimate report."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from paddle_pale import benchmark as bench
from paddle_pale.utils import program_cost as pc

TINY = dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2))


class ConvLinearSoftmax(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(4, 4, 3, padding=1, groups=4)  # depth-wise, with bias
        self.fc = nn.Linear(4, 6)

    def forward(self, x):  # [2, 4, 5, 5]
        y = self.conv(x).transpose([0, 2, 3, 1])  # [2, 5, 5, 4]
        return F.softmax(self.fc(y), axis=-1)  # [2, 5, 5, 6]


def _by_type(costs):
    table = {}
    for cost in costs:
        table.setdefault(cost.op_type, []).append((cost.flops, cost.bytes))
    return table


def test_bytes_and_flops_of_a_tiny_program_match_hand_counts():
    program = pc.forward_program(ConvLinearSoftmax(), [2, 4, 5, 5])
    table = _by_type(pc.op_costs(program, element_bytes=2))
    # elements: x 200, filters 4 x 9 = 36, conv out 200, fc weight 24, fc out 300
    assert table["depthwise_conv2d"] == [(2 * 200 * 9, 2 * (200 + 36 + 200))]
    assert table["transpose"] == [(200, 2 * (200 + 200))]
    assert table["matmul"] == [(2 * 300 * 4, 2 * (200 + 24 + 300))]
    # the two bias adds: conv bias (4, as [1, 4, 1, 1]) and linear bias (6)
    assert sorted(table["add"]) == [(200, 2 * (200 + 4 + 200)), (300, 2 * (300 + 6 + 300))]
    assert table["softmax"] == [(300, 2 * (300 + 300))]
    assert "reshape" not in table  # views move nothing
    # 4 bytes per element: every byte count doubles, FLOPs stay
    wide = _by_type(pc.op_costs(program, element_bytes=4))
    assert wide["matmul"] == [(2 * 300 * 4, 4 * (200 + 24 + 300))]


class Attention(nn.Layer):
    def forward(self, x):  # [1, 2, 3, 12]: heads 2, L 3, q | k | v of d 4
        q, k, v = paddle.split(x, 3, axis=-1)
        scores = paddle.matmul(q, k, transpose_y=True) * 0.5  # [1, 2, 3, 3]
        return paddle.matmul(F.softmax(scores, axis=-1), v)  # [1, 2, 3, 4]


def test_flash_attention_prices_one_kernel_reading_qkv_and_writing_the_output():
    costs = pc.op_costs(pc.forward_program(Attention(), [1, 2, 3, 12]))
    unfused = _by_type(costs)
    assert sorted(unfused["matmul"]) == [(2 * 18 * 4, 2 * (24 + 24 + 18)),
                                         (2 * 24 * 3, 2 * (18 + 24 + 24))]
    fused = _by_type(pc.fuse_attention(costs))
    assert "softmax" not in fused and "matmul" not in fused and "scale" not in fused
    # q, k, v and the output, 24 elements each; FLOPs: both products, scale and softmax
    assert fused["attention (flash)"] == [(144 + 18 + 18 + 144, 2 * 4 * 24)]
    assert fused["split_with_num"] == unfused["split_with_num"]


def test_flash_attention_backward_reads_qkv_output_and_its_gradient():
    costs = pc.fuse_attention(pc.op_costs(pc.training_program(Attention(), [1, 2, 3, 12])))
    table = _by_type(costs)
    assert "softmax_grad" not in table and "matmul_grad" not in table
    (forward,) = table["attention (flash)"]
    assert forward == (144 + 18 + 18 + 144, 2 * 4 * 24)
    # reads q, k, v, out, d(out) (24 each), writes d(q), d(k), d(v); FLOPs: the four
    # gradient products (2 x 144 each pair), Q K^T recomputed (144), softmax_grad and
    # scale (18 each)
    assert table["attention_grad (flash)"] == [(4 * 144 + 144 + 18 + 18, 2 * 8 * 24)]


def test_training_program_counts_one_product_per_gradient():
    program = pc.training_program(nn.Linear(4, 6, bias_attr=False), [2, 4])
    table = _by_type(pc.op_costs(program))
    assert table["matmul"] == [(2 * 12 * 4, 2 * (8 + 24 + 12))]
    # d(x) and d(weight) (InputSpec takes gradients by default), each a product of the
    # forward's size; reads x, w, d(out), writes d(x), d(w)
    assert table["matmul_grad"] == [(2 * 96, 2 * (8 + 24 + 12 + 8 + 24))]


def test_roofline_prices_each_op_at_its_bound():
    costs = [pc.OpCost("gemm", 4e12, 1e9, []), pc.OpCost("copy", 1e6, 2e9, [])]
    seconds, memory_share = pc.roofline(costs, peak_flops=1e12, bandwidth=1e12)
    assert seconds == pytest.approx(4.0 + 2e-3)
    assert memory_share == pytest.approx(2e-3 / (4.0 + 2e-3))


def test_cost_estimate_report_of_tiny_models():
    devices = {"A": (100e12, 1e12), "B": (100e12, 2e12)}
    report = bench.cost_estimate(("pale_t",), batch=2, size=(56, 56), devices=devices,
                                 model_overrides=TINY)
    rows = {row["program"]: row for row in report["rows"]}
    assert set(rows) == {"export/cpu", "forward", "forward+flash", "train", "train+flash"}
    assert rows["forward"]["mb_per_image"] < rows["export/cpu"]["mb_per_image"]
    forward, flash = rows["forward"], rows["forward+flash"]
    assert flash["mb_per_image"] < forward["mb_per_image"]
    assert flash["gflops_per_image"] == pytest.approx(forward["gflops_per_image"])
    assert rows["train"]["gflops_per_image"] > 2 * forward["gflops_per_image"]
    # twice the bandwidth: at most half the time, exactly half where all is memory-bound
    assert forward["estimate_ms"]["B"] >= forward["estimate_ms"]["A"] / 2 - 1e-12
    assert sum(forward["mb_by_op_type"].values()) == pytest.approx(forward["mb_per_image"])
    assert forward["speedup"] == {"A": 1.0, "B": 1.0}  # its own reference
    text = bench.format_cost_estimate(report)
    assert text.startswith("ESTIMATE") and "forward+flash" in text


class SplitConcat(nn.Layer):
    def forward(self, x):  # [2, 6]
        a, b = paddle.split(x, 2, axis=-1)
        return paddle.concat([b, a], axis=-1)


def test_split_and_concat_count_every_tensor_of_their_vectors():
    table = _by_type(pc.op_costs(pc.forward_program(SplitConcat(), [2, 6])))
    # both read their axis as a one-element int32 tensor (4 bytes)
    assert table["split_with_num"] == [(12, 2 * (12 + 12) + 4)]
    assert table["concat"] == [(12, 2 * (12 + 12) + 4)]


def test_linear_bias_rides_in_the_gemm_as_cuda_builds_run_it():
    costs = pc.op_costs(pc.forward_program(ConvLinearSoftmax(), [2, 4, 5, 5]))
    table = _by_type(pc.fuse_linear_bias(costs))
    # one GEMM reads x, weight and bias, writes the output: no product written and reread
    assert table["linear"] == [(2 * 300 * 4 + 300, 2 * (200 + 24 + 6 + 300))]
    assert table["add"] == [(200, 2 * (200 + 4 + 200))]  # the conv's bias stays an add
    assert "matmul" not in table
    train = _by_type(pc.fuse_linear_bias(pc.op_costs(pc.training_program(
        nn.Linear(4, 6), [2, 4]))))
    # one FLOP per gradient element (d(x) 12, d(bias) 6); writes d(bias) only
    assert train["linear_grad (bias)"] == [(12 + 6, 2 * 6)]
