"""Paddle 3.x compatibility fixes for PaddleDetection, installed on import of
``paddle_pale.adapters.ppdet``, each only where its probe shows the bug (:mod:`.compat`).

paddledet 2.6.0 (PyPI) predates three Paddle changes:

- 0-D tensors (Paddle >= 2.5): ``paddle.shape(x)[0]``, ``x[i]`` of a vector and
  reductions now give 0-D tensors, and ``paddle.concat`` refuses them ("axis is
  expected to be in range of [0, 0)"); before, they were 1-element vectors. In a static
  graph, a Python list appended to inside a graph loop becomes a tensor array, and
  ``paddle.concat`` of an array of 0-D values gives a 0-D value, not their vector.
- ``paddle.jit.to_static`` without ``full_graph`` (Paddle 3) traces with SOT, whose
  functions have no ``main_program`` for ppdet's export to read.
- PIR static graphs (Paddle 3): ops are no longer built by ``LayerHelper.append_op``
  but by ``paddle._C_ops``, as in eager mode.

and Paddle 3.3.1's oneDNN cannot run the ``nearest_interp`` op of FPN's upsampling.

Each fix rebinds exactly one ppdet function (:func:`.compat.rebind_globals`) to a
copy of its module's globals in which one or two names are replaced: ``paddle`` by a
proxy whose ``concat`` treats a 0-D tensor as the 1-element vector it used to be (and
stacks an array of 0-D values) and whose ``jit.to_static`` builds the full graph unless
told otherwise (for ``BBoxPostProcess.get_pred`` also a ``to_tensor`` that makes its
constant box count 0-D, like the counts beside it); or the mode check and op module that
``multiclass_nms`` builds its op with; or FPN's ``F`` by one whose ``interpolate``
upsamples x2 by copying pixels. The function's code is not touched or copied, and
``paddle`` stays as it is for everyone else.

PaddleDetection's ``develop`` branch (2024-10-18) fixed all but the last upstream: the
counts are collected as ``paddle.shape(x)[0:1]`` (rpn_head, target), ``get_pred`` and
``multiclass_nms`` build PIR ops (``in_dynamic_or_pir_mode``), and the export traces with
``full_graph=True``; there only the FPN fix is installed. The probe of each fix (the
``_*_fails`` functions) is the unpatched function on a tiny input; the tests in
``tests/test_ppdet_compat.py`` show the bug where the probe finds it.
"""
import tempfile
import types
import warnings

import numpy as np
import paddle
from paddle.framework import in_dynamic_or_pir_mode

from . import compat
from .compat import ORIGINAL, Fix, Proxy, concat_0d_as_1d, fails, install, rebind_globals

__all__ = ["FIXES", "ORIGINAL", "apply", "needed", "multiclass_nms3",
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
    if len(attrs) % 2:
        raise TypeError(f"multiclass_nms3: attributes come as name, value pairs, got "
                        f"{attrs!r}")
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


def _paddle_3_counts_0d(_paddle):
    return _paddle_3(_paddle, to_tensor=to_tensor_1_as_0d)


def _dynamic_or_pir(_in_dynamic_mode):  # the eager branch also builds PIR ops ...
    return in_dynamic_or_pir_mode


def _ops_called_the_new_way(c_ops):  # ... once its op is called the new way
    return Proxy(c_ops, multiclass_nms3=multiclass_nms3)


def _functional_without_nearest_interp(functional):
    return Proxy(functional, interpolate=interpolate_nearest_x2_by_copies)


ZERO_D_CONCAT = "axis is expected to be in range"


# probes: the unpatched function on a tiny input; True where it shows the bug
def _gen_proposal_fails(unpatched):
    from ppdet.modeling.proposal_generator.rpn_head import RPNHead
    head = RPNHead(anchor_generator=dict(anchor_sizes=[[16]], aspect_ratios=[1.0],
                                         strides=[16]), in_channel=1)
    anchors = head.anchor_generator([paddle.zeros([1, 1, 2, 2])])
    return fails(ValueError, lambda: unpatched(
        head, [paddle.zeros([1, 1, 2, 2])], [paddle.zeros([1, 4, 2, 2])], anchors,
        {"im_shape": paddle.to_tensor([[32.0, 32.0]])}), ZERO_D_CONCAT)


def _one_box():
    return paddle.to_tensor([[0.0, 0.0, 16.0, 16.0]])


def _proposal_target_fails(unpatched):
    return fails(ValueError, lambda: unpatched(
        [_one_box()], [paddle.to_tensor([[0]], dtype="int32")], [_one_box()], 8, 0.5,
        0.5, 0.5, 1, use_random=False), ZERO_D_CONCAT)


def _mask_target_fails(unpatched):
    square = np.array([0, 0, 16, 0, 16, 16, 0, 16], dtype="float32")
    return fails(ValueError, lambda: unpatched(
        [[[square]]], [_one_box()], [paddle.to_tensor([0], dtype="int32")],
        [paddle.to_tensor([0], dtype="int64")], 1, 4), ZERO_D_CONCAT)


def _get_pred_fails(unpatched):
    from ppdet.modeling.post_process import BBoxPostProcess
    return fails(ValueError, lambda: unpatched(
        BBoxPostProcess(num_classes=1), paddle.to_tensor([[0.0, 0.9, 0, 0, 8, 8]]),
        paddle.to_tensor([1], dtype="int32"), paddle.to_tensor([[8.0, 8.0]]),
        paddle.to_tensor([[1.0, 1.0]])), ZERO_D_CONCAT)


class _Image(paddle.nn.Layer):
    def forward(self, inputs):
        return {"bbox": inputs["image"].mean() * inputs["scale_factor"].sum()}


def _export_trace_fails(unpatched):
    """The export's tracing of a one-op model (its infer_cfg.yml is not written)."""
    from ppdet.core.workspace import AttrDict
    trainer = types.SimpleNamespace(cfg=AttrDict(architecture="Probe", TestReader={}),
                                    model=_Image())
    traced = rebind_globals(_dump_infer_config=lambda _: lambda *args, **kwargs: None)(
        unpatched)
    return fails(RuntimeError, lambda: traced(trainer, "unused"), "full_graph=False")


def _nms_fails(unpatched):
    def detect(bboxes, scores):
        return unpatched(bboxes, scores, score_threshold=0.05, nms_top_k=-1,
                         keep_top_k=1, nms_threshold=0.5, background_label=-1)[0]
    spec = [paddle.static.InputSpec([None, None, 4]), paddle.static.InputSpec([None, 1, None])]
    static = paddle.jit.to_static(detect, input_spec=spec, full_graph=True)
    return fails(TypeError, lambda: static(paddle.zeros([1, 1, 4]), paddle.ones([1, 1, 1])),
                 "multiclass_nms3")


def _fpn_under_onednn_fails(unpatched):
    """FPN's x2 upsampling, exported and run by Paddle Inference with oneDNN."""
    from paddle import inference
    from ppdet.modeling.necks.fpn import FPN
    fpn = FPN(in_channels=[1, 1], out_channel=1, spatial_scales=[0.25, 0.125],
              extra_stage=0)
    fpn.eval()

    class Neck(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fpn = fpn

        def forward(self, c2, c3):
            return unpatched(self.fpn, [c2, c3])[0]

    inputs = [np.zeros([1, 1, 4, 4], "float32"), np.zeros([1, 1, 2, 2], "float32")]
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prefix = f"{folder}/fpn"
        paddle.jit.save(paddle.jit.to_static(Neck(), input_spec=[
            paddle.static.InputSpec([None, 1, None, None], name=name) for name in "ab"],
            full_graph=True), prefix)
        config = inference.Config(prefix + ".json", prefix + ".pdiparams")
        config.disable_gpu()
        config.enable_onednn()
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        for name, value in zip(predictor.get_input_names(), inputs):
            predictor.get_input_handle(name).copy_from_cpu(value)
        return fails(NotImplementedError, predictor.run, "ArrayAttribute")


# the ppdet functions that concatenate 0-D tensors on Paddle 3.x in Mask R-CNN
# training, evaluation or export, trace a model for export, or build an op the Paddle 2
# way, and FPN's upsampling
FIXES = (
    Fix("ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal",
        rebind_globals(paddle=_paddle_3), _gen_proposal_fails),
    Fix("ppdet.modeling.proposal_generator.target", "generate_proposal_target",
        rebind_globals(paddle=_paddle_3), _proposal_target_fails),
    Fix("ppdet.modeling.proposal_generator.target", "generate_mask_target",
        rebind_globals(paddle=_paddle_3), _mask_target_fails),
    Fix("ppdet.modeling.post_process", "BBoxPostProcess.get_pred",
        rebind_globals(paddle=_paddle_3_counts_0d), _get_pred_fails),
    Fix("ppdet.engine.trainer", "Trainer._get_infer_cfg_and_input_spec",
        rebind_globals(paddle=_paddle_3), _export_trace_fails),
    Fix("ppdet.modeling.ops", "multiclass_nms",
        rebind_globals(in_dynamic_mode=_dynamic_or_pir, C_ops=_ops_called_the_new_way),
        _nms_fails),
    # not a 0-D or PIR change: exported, FPN's upsampling must run under oneDNN
    Fix("ppdet.modeling.necks.fpn", "FPN.forward",
        rebind_globals(F=_functional_without_nearest_interp), _fpn_under_onednn_fails),
)


def needed(qualname):
    """Whether the installed ppdet shows the bug the fix of ``qualname`` fixes."""
    fix = next(fix for fix in FIXES if fix.qualname == qualname)
    return compat.needed(fix.module, qualname)


def apply():
    """Install the fixes of :data:`FIXES` the installed ppdet needs (idempotent)."""
    install(FIXES)
