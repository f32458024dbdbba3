"""Paddle 3.x fixes for PaddleDetection, installed on import of
``paddle_pale.adapters.ppdet`` where their probe shows the bug (:mod:`.compat`).

paddledet 2.6.0 predates 0-D tensors (Paddle >= 2.5: ``paddle.shape(x)[0]``, ``x[i]``
and reductions give shape ``[]``, which ``paddle.concat`` refuses: "axis is expected to
be in range of [0, 0)"; in a static graph a list appended to in a loop becomes a tensor
array, whose concat gives a 0-D value), SOT tracing (``paddle.jit.to_static`` without
``full_graph`` has no ``main_program`` for ppdet's export to read) and PIR programs (no
``LayerHelper.append_op``); and no ppdet version avoids the ``nearest_interp`` op of
FPN's upsampling, which Paddle 3.3.1's oneDNN cannot run. Each fix rebinds one ppdet
function to a copy of its module's globals with one or two names replaced
(:func:`.compat.rebind_globals`: the code is not touched, ``paddle`` stays as it is for
everyone else): ``paddle`` by a proxy whose ``concat`` reads 0-D tensors as the
1-element vectors they were (and stacks an array of them), whose ``jit.to_static``
builds the full graph unless told otherwise (and for ``get_pred`` whose ``to_tensor``
makes its constant box count 0-D like the counts beside it); ``multiclass_nms``'s mode
check and op module; or FPN's ``F``. PaddleDetection's develop branch (2024-10-18)
fixed the first six upstream (named per fix below); there the FPN fix is installed, and
one its own ``get_pred`` needs under oneDNN (a 0-D ``unsqueeze`` done by a reshape).
"""
import tempfile
import types
import warnings

import numpy as np
import paddle
from paddle.framework import in_dynamic_or_pir_mode

from . import compat
from .compat import ORIGINAL, Fix, Proxy, concat_0d_as_1d, fails, rebind_globals

__all__ = ["FIXES", "ORIGINAL", "apply", "needed", "multiclass_nms3", "unsqueeze_0d_by_reshape",
           "interpolate_nearest_x2_by_copies", "to_static_full_graph", "to_tensor_1_as_0d"]


# the helpers below run as they are inside ``paddle.jit.to_static`` (not converted)
@paddle.jit.not_to_static
def to_tensor_1_as_0d(data, dtype=None, place=None, stop_gradient=True):
    """``paddle.to_tensor`` giving a 0-D tensor for one-element vector data: a
    constant count standing beside counts read as ``bbox_num[i]``, which are 0-D in
    Paddle 3 (in a static graph both branches of an ``if`` must agree in rank)."""
    tensor = paddle.to_tensor(data, dtype=dtype, place=place, stop_gradient=stop_gradient)
    return tensor.reshape([]) if list(tensor.shape) == [1] else tensor


def to_static_full_graph(function=None, input_spec=None, *args, full_graph=True,
                         **kwargs):
    """``paddle.jit.to_static`` building the whole graph by default, as Paddle 2.x
    did: the program ppdet's export reads (``forward.main_program``) exists only then."""
    return paddle.jit.to_static(function, input_spec, *args, full_graph=full_graph,
                                **kwargs)


@paddle.jit.not_to_static
def multiclass_nms3(bboxes, scores, rois_num, *attrs):
    """``_legacy_C_ops.multiclass_nms3(bboxes, scores, rois_num, "name", value, ...)``,
    the call ppdet makes, run by ``paddle._C_ops.multiclass_nms3`` (the same kernel),
    which unlike the legacy op also builds the op in a PIR static graph."""
    named = dict(zip(attrs[0::2], attrs[1::2]))
    return paddle._C_ops.multiclass_nms3(
        bboxes, scores, rois_num, named["score_threshold"], named["nms_top_k"],
        named["keep_top_k"], named["nms_threshold"], named["normalized"],
        named["nms_eta"], named["background_label"])


@paddle.jit.not_to_static
def interpolate_nearest_x2_by_copies(x, size=None, scale_factor=None, mode="nearest",
                                     align_corners=False, align_mode=0,
                                     data_format="NCHW", name=None):
    """``F.interpolate``, but x2 nearest upsampling of an NCHW map is built as each
    pixel copied into a 2x2 block (unsqueeze, expand, flatten: the same values), not
    as ``nearest_interp``, which Paddle 3.3.1's oneDNN cannot run
    ("ConvertPirAttribute2RuntimeAttribute not support
    [pir::ArrayAttribute<pir::DoubleAttribute>]", its ``scale`` attribute)."""
    if mode == "nearest" and size is None and isinstance(scale_factor, (int, float)) and \
            scale_factor == 2 and not align_corners and data_format == "NCHW" and \
            x.ndim == 4:
        # [N, C, H, 1, W, 1] -> [N, C, H, 2, W, 2] -> [N, C, H, 2, 2W] -> [N, C, 2H, 2W]
        return x.unsqueeze([3, 5]).expand([-1, -1, -1, 2, -1, 2]).flatten(4, 5) \
            .flatten(2, 3)
    return paddle.nn.functional.interpolate(x, size, scale_factor, mode, align_corners,
                                            align_mode, data_format, name)


# replacements of a module global: original value -> what the fixed function reads
def _paddle_3(_paddle, **more):
    return Proxy(paddle, concat=concat_0d_as_1d,
                 jit=Proxy(paddle.jit, to_static=to_static_full_graph), **more)


# probes: the unpatched function on a tiny input, True where it shows the bug
ZERO_D = "axis is expected to be in range"


def _box():
    return paddle.to_tensor([[0.0, 0.0, 16.0, 16.0]])


def _ints(values, dtype="int32"):
    return paddle.to_tensor(values, dtype=dtype)


def _gen_proposal_fails(unpatched):
    from ppdet.modeling.proposal_generator.rpn_head import RPNHead
    head = RPNHead({"anchor_sizes": [[16]], "aspect_ratios": [1.0], "strides": [16]}, 1)
    anchors, im_shape = head.anchor_generator([paddle.zeros([1, 1, 2, 2])]), _box()[:, 2:]
    return fails(ValueError, lambda: unpatched(head, [paddle.zeros([1, 1, 2, 2])], [
        paddle.zeros([1, 4, 2, 2])], anchors, {"im_shape": im_shape}), ZERO_D)


def _proposal_target_fails(unpatched):
    return fails(ValueError, lambda: unpatched([_box()], [_ints([[0]])], [_box()], 8, 0.5,
                                               0.5, 0.5, 1, use_random=False), ZERO_D)


def _mask_target_fails(unpatched):
    square = np.array([0, 0, 16, 0, 16, 16, 0, 16], "float32")
    return fails(ValueError, lambda: unpatched([[[square]]], [_box()], [_ints([0])],
                                               [_ints([0], "int64")], 1, 4), ZERO_D)


def _get_pred_fails(unpatched):
    from ppdet.modeling.post_process import BBoxPostProcess
    return fails(ValueError, lambda: unpatched(
        BBoxPostProcess(num_classes=1), paddle.to_tensor([[0.0, 0.9, 0, 0, 8, 8]]),
        _ints([1]), _box()[:, 2:], paddle.ones([1, 2])), ZERO_D)


def _export_trace_fails(unpatched):
    """The export's tracing of a one-op model (no infer_cfg.yml written)."""
    from ppdet.core.workspace import AttrDict
    model = paddle.nn.Layer()

    def forward(inputs):
        return {"bbox": inputs["image"].mean()}
    model.forward = forward
    trainer = types.SimpleNamespace(cfg=AttrDict(architecture="-", TestReader={}), model=model)
    unpatched = rebind_globals(_dump_infer_config=lambda _: lambda *a: None)(unpatched)
    return fails(RuntimeError, lambda: unpatched(trainer, "-"), "full_graph=False")


def _nms_fails(unpatched):
    def detect(boxes, scores):
        return unpatched(boxes, scores, 0.05, -1, 1, 0.5, background_label=-1)[0]
    static = paddle.jit.to_static(detect, full_graph=True, input_spec=[
        paddle.static.InputSpec([None, None, 4]), paddle.static.InputSpec([None, 1, None])])
    return fails(TypeError, lambda: static(paddle.zeros([1, 1, 4]), paddle.ones([1, 1, 1])),
                 "multiclass_nms3")


def _fails_under_onednn(layer, inputs, match):
    """``layer`` traced with dynamic shapes, saved, and run by Paddle Inference with
    oneDNN on ``inputs`` (numpy arrays); True if it fails with ``match``."""
    from paddle import inference
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paddle.jit.save(paddle.jit.to_static(layer, full_graph=True, input_spec=[
            paddle.static.InputSpec([None] * x.ndim, str(x.dtype), name=f"x{i}")
            for i, x in enumerate(inputs)]), folder + "/m")
        config = inference.Config(folder + "/m.json", folder + "/m.pdiparams")
        config.enable_onednn()
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        for name, value in zip(predictor.get_input_names(), inputs):
            predictor.get_input_handle(name).copy_from_cpu(value)
        return fails((NotImplementedError, ValueError), predictor.run, match)


def _fpn_under_onednn_fails(unpatched):
    """FPN's x2 upsampling under oneDNN: its ``scale`` attribute is not supported."""
    from ppdet.modeling.necks.fpn import FPN
    fpn = FPN(in_channels=[1, 1], out_channel=1, spatial_scales=[0.25, 0.125], extra_stage=0)
    fpn.eval()

    def forward(c2, c3):
        return unpatched(fpn, [c2, c3])[0]
    fpn.forward = forward
    return _fails_under_onednn(fpn, [np.zeros([1, 1, 4, 4], "f"), np.zeros([1, 1, 2, 2], "f")],
                               "ArrayAttribute")


@paddle.jit.not_to_static
def unsqueeze_0d_by_reshape(x, axis, name=None):
    """``paddle.unsqueeze``, a 0-D ``x`` made ``[1]`` by a reshape, which gives ``[1]``
    also where Paddle 3.3.1's oneDNN left the slice it came from 1-D (its unsqueeze
    then gives ``[1, 1]``, and ``get_pred``'s ``scale`` ``[4, 1]`` instead of ``[4]``)."""
    if axis in (0, [0]) and x.ndim == 0:
        return x.reshape([1], name=name)
    return paddle.unsqueeze(x, axis, name=name)


def _get_pred_under_onednn_fails(unpatched):
    """``get_pred`` of one image with one box, run under oneDNN."""
    from ppdet.modeling.post_process import BBoxPostProcess
    get_pred = types.MethodType(unpatched, BBoxPostProcess(num_classes=1))  # converted so

    def predict(bboxes, bbox_num, im_shape, scale_factor):
        return get_pred(bboxes, bbox_num, im_shape, scale_factor)[1]
    return _fails_under_onednn(predict, [
        np.array([[0, 0.9, 0, 0, 8, 8]], "f"), np.array([1], "int32"),
        np.array([[8, 8]], "f"), np.ones([1, 2], "f")], "non-singleton dimension")


FIXES = (
    # upstream: counts collected as `paddle.shape(x)[0:1]`
    Fix("ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal",
        rebind_globals(paddle=_paddle_3), _gen_proposal_fails),
    Fix("ppdet.modeling.proposal_generator.target", "generate_proposal_target",
        rebind_globals(paddle=_paddle_3), _proposal_target_fails),
    Fix("ppdet.modeling.proposal_generator.target", "generate_mask_target",
        rebind_globals(paddle=_paddle_3), _mask_target_fails),
    # upstream: a rewritten get_pred
    Fix("ppdet.modeling.post_process", "BBoxPostProcess.get_pred", rebind_globals(
        paddle=lambda p: _paddle_3(p, to_tensor=to_tensor_1_as_0d)), _get_pred_fails),
    # ppdet's develop get_pred, under Paddle 3.3.1's oneDNN (exported detectors)
    Fix("ppdet.modeling.post_process", "BBoxPostProcess.get_pred", rebind_globals(
        paddle=lambda p: Proxy(p, unsqueeze=unsqueeze_0d_by_reshape)),
        _get_pred_under_onednn_fails, name="BBoxPostProcess.get_pred under oneDNN"),
    # upstream: `paddle.jit.to_static(..., full_graph=True)`
    Fix("ppdet.engine.trainer", "Trainer._get_infer_cfg_and_input_spec",
        rebind_globals(paddle=_paddle_3), _export_trace_fails),
    # upstream: `in_dynamic_or_pir_mode()` and `paddle._C_ops`, as the fix does
    Fix("ppdet.modeling.ops", "multiclass_nms", rebind_globals(
        in_dynamic_mode=lambda _: in_dynamic_or_pir_mode,
        C_ops=lambda ops: Proxy(ops, multiclass_nms3=multiclass_nms3)), _nms_fails),
    # Paddle's oneDNN, not ppdet: needed with every ppdet on Paddle 3.3.1
    Fix("ppdet.modeling.necks.fpn", "FPN.forward", rebind_globals(
        F=lambda F: Proxy(F, interpolate=interpolate_nearest_x2_by_copies)),
        _fpn_under_onednn_fails),
)


def needed(name):
    """Whether the installed ppdet shows the bug the fix ``name`` (its qualname unless
    named) fixes."""
    return compat.needed(*compat.find(FIXES, name).key)


def apply():
    """Install the fixes of :data:`FIXES` the installed ppdet needs (idempotent)."""
    compat.install(FIXES)
