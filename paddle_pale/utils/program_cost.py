"""Device-independent cost of a static (PIR) program: FLOPs and bytes moved per op, and a
roofline **estimate** of its time on a named GPU.

Every op of the program is priced as eager GPU execution runs it, one kernel per op and
no fusion: it reads all its inputs and writes all its outputs from and to memory (at
``element_bytes`` per floating-point element, 2 for fp16 / bf16 training and inference;
integer and bool tensors at their own size). Views cost nothing (reshape, unsqueeze,
squeeze, flatten, the ``builtin.*`` bookkeeping ops); a transpose, slice, split, concat,
expand or pad is a copy. Weights count as inputs of the ops that read them, so their
bytes per image shrink with the batch.

FLOPs (2 per multiply-accumulate) of matmuls and convolutions follow their shapes; a
``*_grad`` op of either counts one product of the forward size per gradient it writes;
every other op counts one FLOP per output element (they are memory-bound on every GPU,
so their exact FLOPs do not move the estimate).

The roofline prices each op at ``max(FLOPs / peak, bytes / bandwidth)``, with the
peak at a fraction of the device's dense 16-bit tensor-core figure and the bandwidth
at a fraction of its HBM figure. ``flash_attention=True`` prices every attention
(a ``matmul`` of scores, optional ``scale`` / ``add`` on them, ``softmax``, ``matmul``
with the values) as one fused kernel that reads q, k, v and any score bias and writes
the output, which is what flash attention moves, and its backward likewise.

It is an estimate: real kernels fuse (cuDNN epilogues, Paddle's fused passes),
overlap, and miss their peak by op-dependent amounts; launch overheads are left out.
"""
from collections import OrderedDict

import paddle

__all__ = ["GPU_PRESETS", "OpCost", "op_costs", "fuse_attention", "fuse_linear_bias",
           "by_op_type",
           "roofline", "program_totals", "forward_program", "training_program"]

# name -> (dense fp16/bf16 tensor FLOP/s, HBM bytes/s), vendor data sheets (SXM parts)
GPU_PRESETS = OrderedDict([
    ("V100", (125e12, 900e9)),     # V100 SXM2: 125 TFLOP/s fp16 tensor, 900 GB/s HBM2
    ("A100", (312e12, 2039e9)),    # A100 SXM 80 GB: 312 TFLOP/s bf16, 2.04 TB/s HBM2e
    ("H100", (989e12, 3350e9)),    # H100 SXM: 989 TFLOP/s bf16 dense, 3.35 TB/s HBM3
    ("H200", (989e12, 4800e9)),    # H200 SXM: 989 TFLOP/s bf16 dense, 4.8 TB/s HBM3e
])

# ops that move no data: views and the program's own bookkeeping
FREE_OPS = {"pd_op.data", "pd_op.reshape", "pd_op.unsqueeze", "pd_op.squeeze",
            "pd_op.flatten", "pd_op.shape", "pd_op.shape64", "pd_op.fetch",
            "pd_op.reshape_grad", "pd_op.unsqueeze_grad", "pd_op.squeeze_grad",
            "pd_op.flatten_grad"}
PRODUCT_OPS = {"pd_op.matmul", "pd_op.conv2d", "pd_op.depthwise_conv2d"}
# ops that may sit between the score matmul and the softmax of an attention
SCORE_OPS = {"pd_op.scale", "pd_op.add", "pd_op.multiply"}


class OpCost:
    """One op's (or a fused group's) cost: ``op_type``, ``flops``, ``bytes`` (whole
    batch), and ``ops`` (the program ops it stands for)."""

    def __init__(self, op_type, flops, bytes_moved, ops):
        self.op_type, self.flops, self.bytes, self.ops = op_type, flops, bytes_moved, ops

    def __repr__(self):
        return f"OpCost({self.op_type!r}, flops={self.flops}, bytes={self.bytes})"


def _numel(value):
    count = 1
    for size in value.shape:
        if size < 0:
            raise ValueError(f"the program has a dynamic shape {list(value.shape)}: "
                             f"build it with a fixed input shape")
        count *= size
    return count


def _element_bytes(value, element_bytes):
    name = str(value.dtype).lower()
    if "float" in name or "bf16" in name or "fp16" in name or "fp32" in name:
        return element_bytes
    for bits in (64, 32, 16, 8):
        if str(bits) in name:
            return bits // 8
    return 1  # bool


def _bytes(values, element_bytes):
    return sum(_numel(v) * _element_bytes(v, element_bytes) for v in values)


def _live(values):
    """The dense tensors of ``values``, null results left out; a vector of tensors (what
    ``concat`` reads, ``split`` writes) stands for its tensors."""
    tensors = []
    for value in values:
        if not value.initialized():
            continue
        if value.is_dense_tensor_type():
            tensors.append(value)
            continue
        producer = value.get_defining_op()
        if producer is not None and producer.name() == "builtin.combine":
            tensors += _live(producer.operands_source())
        else:  # a vector result: builtin.split ops unpack it
            for user in value.all_used_ops():
                if user.name() == "builtin.split":
                    tensors += _live(user.results())
    return tensors


def _product_flops(op):
    """2 x MACs of one matmul or convolution of ``op``'s forward shapes."""
    name = op.name().replace("_grad", "")
    operands = op.operands_source()
    if name == "pd_op.matmul":
        x = operands[0]
        attrs = op.attrs()
        inner = x.shape[-2] if attrs.get("transpose_x") else x.shape[-1]
        if op.name().endswith("_grad"):  # operands: x, y, d(out); out shaped like d(out)
            return 2 * _numel(operands[2]) * inner
        return 2 * _numel(op.results()[0]) * inner
    # convolutions: weight [O, I / groups, kh, kw]; output shaped like the grad's input
    weight = operands[1]
    per_output = weight.shape[1] * weight.shape[2] * weight.shape[3]
    out = operands[2] if op.name().endswith("_grad") else op.results()[0]
    return 2 * _numel(out) * per_output


def _op_cost(op, element_bytes):
    name = op.name()
    if name.startswith("builtin.") or name in FREE_OPS:
        return None
    inputs, outputs = _live(op.operands_source()), _live(op.results())
    moved = _bytes(inputs, element_bytes) + _bytes(outputs, element_bytes)
    if name in PRODUCT_OPS:
        flops = _product_flops(op)
    elif name.endswith("_grad") and name[:-5] in PRODUCT_OPS:
        flops = _product_flops(op) * len(outputs)
    elif name == "pd_op.flash_attn":  # q, k, v: [B, L, heads, d]
        q, k = op.operands_source()[0], op.operands_source()[1]
        flops = 4 * q.shape[0] * q.shape[1] * k.shape[1] * q.shape[2] * q.shape[3]
    else:
        flops = sum(_numel(v) for v in outputs)
    return OpCost(name[len("pd_op."):] if name.startswith("pd_op.") else name, flops,
                  moved, [op])


def op_costs(program, element_bytes=2):
    """:class:`OpCost` of every op of ``program``'s global block that costs something."""
    costs = []
    for op in program.global_block().ops:
        cost = _op_cost(op, element_bytes)
        if cost is not None:
            costs.append(cost)
    return costs


def _users(value):
    return list(value.all_used_ops())


def _forward_users(value):
    """The ops reading ``value`` but the backward's (a training program keeps the
    attention's probabilities for its gradient; flash attention recomputes them)."""
    return [op for op in _users(value) if not op.name().endswith("_grad")]


def _forward_attention(softmax, by_op, element_bytes):
    """The fused cost of the attention around ``softmax``, or None."""
    chain, extra_inputs = [softmax], []
    producer = softmax.operands_source()[0].get_defining_op()
    while producer is not None and producer.name() in SCORE_OPS:
        chain.append(producer)
        operands = producer.operands_source()
        if producer.name() == "pd_op.scale":  # its factor is a one-element tensor
            operands = operands[:1]
        # follow the score tensor (the larger operand); the other one is a bias
        operands = sorted(operands, key=_numel, reverse=True)
        extra_inputs += operands[1:]
        producer = operands[0].get_defining_op()
    users = _forward_users(softmax.results()[0])
    if (producer is None or producer.name() != "pd_op.matmul" or len(users) != 1
            or users[0].name() != "pd_op.matmul"):
        return None
    scores, out = producer, users[0]
    chain += [scores, out]
    if any(len(_forward_users(op.results()[0])) != 1 for op in chain if op is not out):
        return None  # an intermediate is read elsewhere
    reads = list(scores.operands_source()) + [out.operands_source()[1]] + extra_inputs
    moved = _bytes(_live(reads), element_bytes) + _bytes(_live(out.results()), element_bytes)
    flops = sum(by_op[id(op)].flops for op in chain if id(op) in by_op)
    return OpCost("attention (flash)", flops, moved, chain)


def _backward_attention(softmax_grad, by_op, element_bytes):
    """The fused backward of an attention: ``matmul_grad`` (of P V) -> ``softmax_grad``
    -> [``scale`` / ``add_grad`` ...] -> ``matmul_grad`` (of Q K^T), priced as flash
    attention's backward: reads q, k, v, the output, its gradient and any score bias,
    writes d(q), d(k), d(v) and the bias gradient; FLOPs of the chain plus the
    recomputed Q K^T."""
    value_grad = softmax_grad.operands_source()[1].get_defining_op()
    if value_grad is None or value_grad.name() != "pd_op.matmul_grad":
        return None
    chain, extra_reads, extra_writes = [value_grad, softmax_grad], [], []
    grad = softmax_grad.results()[0]
    while True:
        users = _users(grad)
        if len(users) != 1:
            return None
        user = users[0]
        if user.name() == "pd_op.matmul_grad":
            break
        if user.name() == "pd_op.scale":
            grad = user.results()[0]
        elif user.name() in ("pd_op.add_grad", "pd_op.multiply_grad"):
            extra_reads.append(user.operands_source()[1])
            extra_writes += _live(user.results()[1:])
            grad = user.results()[0]
        else:
            return None
        chain.append(user)
    score_grad = user
    chain.append(score_grad)
    dout = value_grad.operands_source()[2]
    reads = (list(score_grad.operands_source()[:2]) + [value_grad.operands_source()[1], dout,
                                                        dout] + extra_reads)
    writes = _live(score_grad.results()) + _live(value_grad.results()[1:]) + extra_writes
    moved = _bytes(_live(reads), element_bytes) + _bytes(writes, element_bytes)
    recompute = _product_flops(score_grad)
    flops = recompute + sum(by_op[id(op)].flops for op in chain if id(op) in by_op)
    return OpCost("attention_grad (flash)", flops, moved, chain)


def fuse_attention(costs, element_bytes=2):
    """``costs`` with every attention (score matmul -> [scale/add ...] -> softmax ->
    matmul) replaced by one ``attention (flash)`` cost: the FLOPs of its ops, the bytes
    of q, k, v, the score biases it adds and its output; in a training program, also
    its backward by one ``attention_grad (flash)`` (see :func:`_backward_attention`)."""
    by_op = {id(cost.ops[0]): cost for cost in costs}
    fused_ids, fused = set(), {}
    for cost in costs:
        op = cost.ops[0]
        if op.name() == "pd_op.softmax":
            group = _forward_attention(op, by_op, element_bytes)
        elif op.name() == "pd_op.softmax_grad":
            group = _backward_attention(op, by_op, element_bytes)
        else:
            continue
        if group is None:
            continue
        fused[id(group.ops[-1])] = group
        fused_ids.update(id(member) for member in group.ops)
    result = []
    for cost in costs:
        key = id(cost.ops[0])
        if key in fused:
            result.append(fused[key])
        elif key not in fused_ids:
            result.append(cost)
    return result


def _linear_bias_add(op):
    """The matmul of ``op`` when ``op`` adds a 1-D tensor (a bias) to the product of a
    matmul by a 2-D one (a weight) that nothing else reads, else None: what ``F.linear``
    writes on a CPU build (weight and bias may be parameters or computed from them)."""
    if op.name() not in ("pd_op.add", "pd_op.add_grad"):
        return None
    operands = op.operands_source()
    if not operands[1].is_dense_tensor_type() or len(operands[1].shape) != 1:
        return None
    product = operands[0].get_defining_op()
    if (product is None or product.name() != "pd_op.matmul"
            or product.attrs().get("transpose_y")
            or len(product.operands_source()[1].shape) != 2):
        return None
    forward_users = [u for u in _users(operands[0]) if u.name() == "pd_op.add"]
    return product if len(forward_users) == 1 else None


def fuse_linear_bias(costs, element_bytes=2):
    """``costs`` as Paddle's CUDA builds run ``nn.Linear``: ``F.linear`` calls
    ``linear_v2``, one GEMM with the bias added in its epilogue, instead of a matmul
    and an add (the CPU build's program). In a training program the bias gradient is
    summed from the output gradient the GEMM's backward reads anyway: its ``add_grad``
    writes only d(bias)."""
    by_op = {id(cost.ops[0]): cost for cost in costs}
    merged, result = {}, []
    for cost in costs:
        op = cost.ops[0]
        product = _linear_bias_add(op)
        if product is None or id(product) not in by_op:
            continue
        if op.name() == "pd_op.add":
            gemm = by_op[id(product)]
            bias, out = op.operands_source()[1], op.results()[0]
            merged[id(product)] = OpCost(
                "linear", gemm.flops + cost.flops,
                gemm.bytes + _bytes([bias, out], element_bytes)
                - _bytes([product.results()[0]], element_bytes), [product, op])
            merged[id(op)] = None
        else:  # add_grad: d(x) is d(out) itself, d(bias) a column sum the GEMM does
            grads = _live(op.results())
            merged[id(op)] = OpCost("linear_grad (bias)", cost.flops,
                                    _bytes([g for g in grads if len(g.shape) == 1],
                                           element_bytes), [op])
    for cost in costs:
        key = id(cost.ops[0])
        if key not in merged:
            result.append(cost)
        elif merged[key] is not None:
            result.append(merged[key])
    return result


def roofline(costs, peak_flops, bandwidth):
    """Estimated seconds of ``costs``, each op at ``max(flops / peak, bytes / bw)``:
    ``(total, memory_bound_share)`` (the share of the time spent in memory-bound ops)."""
    total = memory_bound = 0.0
    for cost in costs:
        compute, memory = cost.flops / peak_flops, cost.bytes / bandwidth
        total += max(compute, memory)
        if memory > compute:
            memory_bound += memory
    return total, (memory_bound / total if total else 0.0)


def by_op_type(costs):
    """OrderedDict op type -> ``{"count", "flops", "bytes"}``, largest bytes first."""
    table = {}
    for cost in costs:
        row = table.setdefault(cost.op_type, {"count": 0, "flops": 0, "bytes": 0})
        row["count"] += 1
        row["flops"] += cost.flops
        row["bytes"] += cost.bytes
    return OrderedDict(sorted(table.items(), key=lambda item: -item[1]["bytes"]))


def program_totals(costs):
    """``(flops, bytes)`` of ``costs`` together."""
    return sum(c.flops for c in costs), sum(c.bytes for c in costs)


class _Forward(paddle.nn.Layer):
    """``forward(model, x)`` as the forward of a layer, for ``paddle.jit.to_static``."""

    def __init__(self, model, forward):
        super().__init__()
        self.model, self.function = model, forward

    def forward(self, x):
        out = self.function(self.model, x)
        return list(out) if isinstance(out, (list, tuple)) else [out]


def _concrete_program(model, input_shape, forward, training):
    layer = _Forward(model, forward or (lambda m, x: m(x)))
    layer.train() if training else layer.eval()
    static = paddle.jit.to_static(layer, full_graph=True)
    spec = paddle.static.InputSpec(list(input_shape), "float32", "image")
    return static.forward.get_concrete_program(spec)[0]


def forward_program(model, input_shape, forward=None):
    """The PIR program of ``forward(model, x)`` (default ``model(x)``) in eval mode for
    a fixed ``input_shape`` ``[B, C, H, W]``: what ``paddle.jit.save`` exports. ``model``
    is converted in place by ``paddle.jit.to_static``: pass a copy you do not run."""
    return _concrete_program(model, input_shape, forward, training=False).main_program


def training_program(model, input_shape, forward=None):
    """The PIR program of one training step's forward and backward (loss: the sum of the
    outputs' means) built by ``paddle.static.append_backward``; the optimizer update is
    not in it. ``model`` as in :func:`forward_program`."""
    concrete = _concrete_program(model, input_shape, forward, training=True)
    program = concrete.main_program
    was_dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(program):
            loss = paddle.add_n([out.mean() for out in paddle.utils.flatten(concrete.outputs)])
            paddle.static.append_backward(loss)
    finally:
        if was_dynamic:
            paddle.disable_static()
    return program
