"""Paddle 3.x compatibility fixes for paddledet 2.6.0, applied by our detection
integration only (``ppdet_engine.load_config``), never on import of ``paddle_pale``.

paddledet 2.6.0 predates three Paddle changes:

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

Each fix below rebinds exactly one ppdet function (:func:`.compat.rebind_globals`) to a
copy of its module's globals in which one or two names are replaced: ``paddle`` by a
proxy whose ``concat`` treats a 0-D tensor as the 1-element vector it used to be (and
stacks an array of 0-D values) and
whose ``jit.to_static`` builds the full graph unless told otherwise (for
``BBoxPostProcess.get_pred`` also a ``to_tensor`` that makes its constant box count 0-D,
like the counts beside it); or the mode check and op module that ``multiclass_nms``
builds its op with; or FPN's ``F`` by one whose ``interpolate`` upsamples x2 by copying
pixels. The function's code is not touched or copied, and ``paddle`` stays as it is for
everyone else. Each fix has a test in ``tests/test_ppdet_compat.py`` showing the
unpatched function fail.
"""
import paddle
from paddle.framework import in_dynamic_or_pir_mode

from .compat import ORIGINAL, Proxy, install, rebind_globals

__all__ = ["FIXES", "ORIGINAL", "apply", "concat_0d_as_1d", "multiclass_nms3",
           "interpolate_nearest_x2_by_copies", "to_static_full_graph", "to_tensor_1_as_0d"]


def _is_array_of_0d(x):
    """A static-graph tensor array (a list appended to in a graph loop) whose
    elements are 0-D; its ``shape`` is the shape of one element."""
    return isinstance(x, paddle.pir.Value) and x.is_dense_tensor_array_type() and \
        list(x.shape) == []


# the helpers below run as they are inside ``paddle.jit.to_static`` (not converted)
@paddle.jit.not_to_static
def concat_0d_as_1d(x, axis=0, name=None):
    """``paddle.concat`` with Paddle 2.4's reading of 0-D tensors as shape ``[1]``:
    a list of them gives the vector of their values, and so does a static-graph
    tensor array of them (where ``paddle.concat`` would give a 0-D value)."""
    if isinstance(x, (list, tuple)):
        x = [t.reshape([1]) if isinstance(t, (paddle.Tensor, paddle.pir.Value)) and
             t.ndim == 0 else t for t in x]
    elif _is_array_of_0d(x) and axis == 0:
        return paddle.stack(x, axis=0, name=name)  # [len(x)]
    return paddle.concat(x, axis=axis, name=name)


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


# (module, "Class.method" or "function", make_fixed) for compat.install: the ppdet
# functions that concatenate 0-D tensors on Paddle 3.x in Mask R-CNN training,
# evaluation or export, trace a model for export, or build an op the Paddle 2 way
FIXES = (
    ("ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal",
     rebind_globals(paddle=_paddle_3)),
    ("ppdet.modeling.proposal_generator.target", "generate_proposal_target",
     rebind_globals(paddle=_paddle_3)),
    ("ppdet.modeling.proposal_generator.target", "generate_mask_target",
     rebind_globals(paddle=_paddle_3)),
    ("ppdet.modeling.post_process", "BBoxPostProcess.get_pred",
     rebind_globals(paddle=_paddle_3_counts_0d)),
    ("ppdet.engine.trainer", "Trainer._get_infer_cfg_and_input_spec",
     rebind_globals(paddle=_paddle_3)),
    ("ppdet.modeling.ops", "multiclass_nms",
     rebind_globals(in_dynamic_mode=_dynamic_or_pir, C_ops=_ops_called_the_new_way)),
    # not a 0-D or PIR change: exported, FPN's upsampling must run under oneDNN
    ("ppdet.modeling.necks.fpn", "FPN.forward",
     rebind_globals(F=_functional_without_nearest_interp)),
)


def apply():
    """Install every fix in :data:`FIXES` (idempotent)."""
    install(FIXES)
