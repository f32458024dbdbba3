"""Each Paddle 3.x fix for PaddleDetection: where its probe finds the bug in the installed
ppdet (paddledet 2.6.0: all of them), the unpatched function fails (on 0-D tensors, in
a static graph, under oneDNN); after ``apply()`` the call gives the value computed here
independently or the unpatched function's eager result, whether fixed or not (ppdet's
develop branch needs only the FPN fix)."""
import contextlib
import importlib
import os
import types

import numpy as np
import paddle
import pytest

pytest.importorskip("ppdet")

from paddle_pale.adapters import ppdet_compat  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZERO_D_CONCAT = "axis is expected to be in range"


def _original_and_fixed(module_name, qualname):
    """The unpatched function and the one ppdet runs after ``apply()`` (the same where
    the installed ppdet does not need the fix)."""
    ppdet_compat.apply()
    owner = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    fixed = owner.__dict__[name]
    needed = ppdet_compat.needed(qualname)
    if qualname != "BBoxPostProcess.get_pred":  # which has a second fix (below)
        assert hasattr(fixed, ppdet_compat.ORIGINAL) == needed  # installed where needed only
    return getattr(fixed, ppdet_compat.ORIGINAL, fixed), fixed


def _fails_if_needed(qualname, *raises_args, **raises_kwargs):
    """``pytest.raises(...)`` where the probe found the bug, else a context that lets
    the call run (it must then work)."""
    if ppdet_compat.needed(qualname):
        return pytest.raises(*raises_args, **raises_kwargs)
    return contextlib.nullcontext()


def test_every_fix_has_a_test_below():
    assert sorted(fix.qualname for fix in ppdet_compat.FIXES) == [
        "BBoxPostProcess.get_pred", "BBoxPostProcess.get_pred", "FPN.forward", "RPNHead._gen_proposal",
        "Trainer._get_infer_cfg_and_input_spec", "generate_mask_target",
        "generate_proposal_target", "multiclass_nms"]


def test_apply_is_idempotent_and_leaves_paddle_concat_alone():
    from ppdet.modeling.proposal_generator import target, target_layer
    ppdet_compat.apply()
    first = target.generate_proposal_target
    ppdet_compat.apply()
    assert target.generate_proposal_target is first
    # the name target_layer imported points at the fixed function as well
    assert target_layer.generate_proposal_target is first
    with pytest.raises(ValueError, match=ZERO_D_CONCAT):
        paddle.concat([paddle.to_tensor(1), paddle.to_tensor(2)])


def test_rpn_head_gen_proposal():
    from ppdet.modeling.proposal_generator.rpn_head import RPNHead
    original, fixed = _original_and_fixed(
        "ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal")
    head = RPNHead(anchor_generator=dict(anchor_sizes=[[16], [32]],
                                         aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16]),
                   in_channel=8)
    features = [paddle.zeros([2, 8, 8, 8]), paddle.zeros([2, 8, 4, 4])]
    anchors = head.anchor_generator(features)
    scores = [paddle.randn([2, 3, f.shape[2], f.shape[3]]) for f in features]
    deltas = [0.1 * paddle.randn([2, 12, f.shape[2], f.shape[3]]) for f in features]
    inputs = {"im_shape": paddle.to_tensor([[64.0, 64.0], [64.0, 64.0]])}
    with _fails_if_needed("RPNHead._gen_proposal", ValueError, match=ZERO_D_CONCAT):
        original(head, scores, deltas, anchors, inputs)
    rois, rois_num = fixed(head, scores, deltas, anchors, inputs)
    assert rois_num.shape == [2]
    assert rois_num.numpy().tolist() == [r.shape[0] for r in rois]
    assert all(r.shape[0] > 0 for r in rois)


def test_generate_proposal_target():
    original, fixed = _original_and_fixed(
        "ppdet.modeling.proposal_generator.target", "generate_proposal_target")
    rng = np.random.default_rng(0)

    def boxes(n):
        xy = rng.uniform(0, 40, (n, 2))
        return paddle.to_tensor(np.hstack([xy, xy + rng.uniform(4, 20, (n, 2))]),
                                dtype="float32")

    rois = [boxes(7), boxes(5)]
    gt_boxes = [boxes(2), boxes(3)]
    gt_classes = [paddle.to_tensor([[0], [1]], dtype="int32"),
                  paddle.to_tensor([[1], [0], [1]], dtype="int32")]
    # a batch larger than all candidates, no random sampling: every RoI is kept,
    # and the ground-truth boxes are added as proposals
    args = (rois, gt_classes, gt_boxes, 1000, 0.5, 0.5, 0.5, 2)
    with _fails_if_needed("generate_proposal_target", ValueError, match=ZERO_D_CONCAT):
        original(*args, use_random=False)
    sampled_rois, *_, rois_num = fixed(*args, use_random=False)
    assert rois_num.numpy().tolist() == [7 + 2, 5 + 3]
    assert [r.shape[0] for r in sampled_rois] == [9, 8]


def test_generate_mask_target():
    original, fixed = _original_and_fixed(
        "ppdet.modeling.proposal_generator.target", "generate_mask_target")
    num_classes, resolution = 2, 28
    square = [np.array([0, 0, 16, 0, 16, 16, 0, 16], dtype="float32")]
    gt_segms = [[square], [square]]
    rois = [paddle.to_tensor([[0, 0, 16, 16], [4, 4, 30, 30], [0, 0, 16, 16]],
                             dtype="float32"),
            paddle.to_tensor([[0, 0, 16, 16]], dtype="float32")]
    # labels: class 1, background (== num_classes), class 0; then one foreground
    labels = [paddle.to_tensor([1, num_classes, 0], dtype="int32"),
              paddle.to_tensor([1], dtype="int32")]
    gt_inds = [paddle.to_tensor([0, 0, 0], dtype="int64"),
               paddle.to_tensor([0], dtype="int64")]
    args = (gt_segms, rois, labels, gt_inds, num_classes, resolution)
    with _fails_if_needed("generate_mask_target", ValueError, match=ZERO_D_CONCAT):
        original(*args)
    mask_rois, rois_num, classes, masks, _, weights = fixed(*args)
    assert rois_num.numpy().tolist() == [2, 1]  # foreground RoIs per image
    assert classes.numpy().tolist() == [1, 0, 1]
    # each foreground RoI is exactly the square: its target mask is all ones
    np.testing.assert_array_equal(masks.numpy(), np.ones([3, resolution, resolution]))
    np.testing.assert_array_equal(weights.numpy(), [1, 1, 1])


def _get_pred_case():
    """Arguments of ``BBoxPostProcess.get_pred`` (numpy) and the rows and counts it
    should give: image 0 has two boxes on a 64x64 input scaled by 0.5, image 1 none."""
    detections = np.array([[1, 0.9, 10, 20, 50, 40],
                           [0, 0.8, 30, 30, 90, 70]], dtype="float32")
    im_shape = np.array([[64, 64], [64, 96]], dtype="float32")
    scale = np.array([[0.5, 0.5], [2.0, 2.0]], dtype="float32")  # (y, x)
    args = (detections, np.array([2, 0], dtype="int32"), im_shape, scale)
    # ppdet puts a fake [0, 0, 1, 1] box of class 0 for an image without boxes
    rows = np.vstack([detections, [[0, 0, 0, 0, 1, 1]]])
    image = [0, 0, 1]
    origin = np.floor(im_shape / scale + 0.5)  # (h, w) of the original images
    expected = []
    for row, i in zip(rows, image):
        sy, sx = scale[i]
        box = row[2:] / [sx, sy, sx, sy]
        box = np.clip(box, 0, [origin[i, 1], origin[i, 0]] * 2)
        expected.append([row[0], row[1], *box])
    return args, np.array(expected), [2, 1]


def test_bbox_post_process_get_pred():
    from ppdet.modeling.post_process import BBoxPostProcess
    original, fixed = _original_and_fixed("ppdet.modeling.post_process",
                                          "BBoxPostProcess.get_pred")
    post = BBoxPostProcess(num_classes=2)
    arrays, expected, counts = _get_pred_case()
    args = [paddle.to_tensor(a) for a in arrays]
    with _fails_if_needed("BBoxPostProcess.get_pred", ValueError, match=ZERO_D_CONCAT):
        original(post, *args)
    _, result, bbox_num = fixed(post, *args)
    assert bbox_num.numpy().tolist() == counts
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


def _static(function, *specs):
    """``function`` traced into a static graph (as ppdet's export traces the model)."""
    return paddle.jit.to_static(function, input_spec=[
        paddle.static.InputSpec(shape, dtype) for shape, dtype in specs], full_graph=True)


def test_bbox_post_process_get_pred_in_a_static_graph():
    # traced, ``if bbox_num[i] == 0`` becomes a graph ``if`` whose branches must agree
    # in rank: the fake count ``np.array([1])`` (1-D) against ``bbox_num[i]`` (0-D)
    from ppdet.modeling.post_process import BBoxPostProcess
    original, fixed = _original_and_fixed("ppdet.modeling.post_process",
                                          "BBoxPostProcess.get_pred")
    post = BBoxPostProcess(num_classes=2)
    specs = [([None, 6], "float32"), ([None], "int32"), ([None, 2], "float32"),
             ([None, 2], "float32")]

    def traced(get_pred):
        get_pred = types.MethodType(get_pred, post)  # a method, as the model calls it

        def predict(bboxes, bbox_num, im_shape, scale_factor):
            _, result, num = get_pred(bboxes, bbox_num, im_shape, scale_factor)
            return result, num
        return _static(predict, *specs)

    (detections, _, im_shape, scale), expected, _ = _get_pred_case()

    def one_image(image):
        """The first image with its two boxes, or the second with none."""
        boxes = detections if image == 0 else np.zeros([0, 6], "float32")
        return [paddle.to_tensor(a) for a in (boxes, np.array([len(boxes)], "int32"),
                                              im_shape[image:image + 1],
                                              scale[image:image + 1])]

    with _fails_if_needed("BBoxPostProcess.get_pred", Exception, match="rank inconsistency"):
        traced(original)(*one_image(0))
    predict = traced(fixed)
    # one image at a time, as the exported detector runs (see the test below)
    for image, rows, count in ((0, slice(0, 2), 2), (1, slice(2, 3), 1)):
        result, bbox_num = predict(*one_image(image))
        assert bbox_num.numpy().tolist() == [count]  # the second: ppdet's fake box
        np.testing.assert_allclose(result.numpy(), expected[rows], rtol=1e-6)


def test_bbox_post_process_get_pred_runs_under_onednn(tmp_path):
    # ppdet's develop get_pred unsqueezes the 0-D scale_factor[i, 0]; under Paddle 3.3.1's
    # oneDNN that slice stays 1-D, so its `scale` is [4, 1] and the expand to the boxes
    # fails; paddledet 2.6.0 (with its 0-D fix) has no unsqueeze there
    from ppdet.modeling.post_process import BBoxPostProcess

    from paddle_pale.inference import create_predictor
    name = "BBoxPostProcess.get_pred under oneDNN"
    ppdet_compat.apply()
    fixed = BBoxPostProcess.__dict__["get_pred"]
    installed = fixed.__globals__["paddle"].unsqueeze is ppdet_compat.unsqueeze_0d_by_reshape
    assert installed == ppdet_compat.needed(name)
    (detections, _, im_shape, scale), expected, _ = _get_pred_case()
    inputs = [detections, np.array([2], "int32"), im_shape[:1], scale[:1]]  # image 0

    def predictor(get_pred, folder):
        get_pred = types.MethodType(get_pred, BBoxPostProcess(num_classes=2))

        def predict(bboxes, bbox_num, im_shape, scale_factor):
            return get_pred(bboxes, bbox_num, im_shape, scale_factor)[1]
        static = _static(predict, ([None, 6], "float32"), ([None], "int32"),
                         ([None, 2], "float32"), ([None, 2], "float32"))
        paddle.jit.save(static, str(tmp_path / folder / "m"))
        predictor = create_predictor(str(tmp_path / folder / "m"), onednn=True)
        for input_name, value in zip(predictor.get_input_names(), inputs):
            handle = predictor.get_input_handle(input_name)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        return predictor

    with _fails_if_needed(name, ValueError, match="non-singleton dimension"):
        predictor(getattr(fixed, ppdet_compat.ORIGINAL) if installed else fixed, "before").run()
    fixed_predictor = predictor(fixed, "fixed")
    fixed_predictor.run()
    out = fixed_predictor.get_output_handle(fixed_predictor.get_output_names()[0])
    np.testing.assert_allclose(out.copy_to_cpu(), expected[:2], rtol=1e-6)


def test_a_traced_batch_needs_as_many_boxes_in_each_image():
    # A known limit of Paddle 3.3.1, not fixed here: paddle.concat of a static-graph
    # tensor array (array_to_tensor) requires every element to have the same shape, and
    # ppdet collects per-image boxes (and RoIs) in such arrays. So the exported
    # detector runs a batch only where each image has as many boxes (and RoIs) as the
    # first; one image per run always works. (A graph loop of concats would lift the
    # limit, but Paddle 3.3.1's oneDNN then fails on the loop's output.)
    from ppdet.modeling.post_process import BBoxPostProcess
    _, fixed = _original_and_fixed("ppdet.modeling.post_process", "BBoxPostProcess.get_pred")
    get_pred = types.MethodType(fixed, BBoxPostProcess(num_classes=2))

    def predict(bboxes, bbox_num, im_shape, scale_factor):
        return get_pred(bboxes, bbox_num, im_shape, scale_factor)[1]

    predict = _static(predict, ([None, 6], "float32"), ([None], "int32"),
                      ([None, 2], "float32"), ([None, 2], "float32"))
    arrays, _, _ = _get_pred_case()  # 2 boxes, then none (a fake one)
    with pytest.raises(Exception, match="ArrayToTensor must be equal"):
        predict(*[paddle.to_tensor(a) for a in arrays])
    detections, _, im_shape, scale = arrays  # 1 box in each image: fine
    result = predict(*[paddle.to_tensor(a) for a in (
        detections, np.array([1, 1], "int32"), im_shape, scale)])
    assert result.shape == [2, 6]


def _rpn_head_case(batch_size=2):
    from ppdet.modeling.proposal_generator.rpn_head import RPNHead
    head = RPNHead(anchor_generator=dict(anchor_sizes=[[16], [32]],
                                         aspect_ratios=[0.5, 1.0, 2.0], strides=[8, 16]),
                   in_channel=8)
    rng = np.random.default_rng(0)
    sizes = [(8, 8), (4, 4)]
    arrays = [np.zeros([batch_size, 8, *size], "float32") for size in sizes]  # features
    arrays += [rng.standard_normal([batch_size, 3, *size]).astype("float32")
               for size in sizes]  # objectness
    arrays += [0.1 * rng.standard_normal([batch_size, 12, *size]).astype("float32")
               for size in sizes]  # box deltas
    arrays.append(np.array([[64.0, 64.0]] * batch_size, "float32"))  # im_shape
    return head, arrays


def test_rpn_head_gen_proposal_in_a_static_graph():
    # traced, the loop over images is a graph loop: the counts collected in it are a
    # tensor array of 0-D values, which paddle.concat cannot join (in the detector,
    # RCNNBox fails first, at rois_num[i], as the concatenation gives a 0-D value)
    original, fixed = _original_and_fixed(
        "ppdet.modeling.proposal_generator.rpn_head", "RPNHead._gen_proposal")
    head, arrays = _rpn_head_case()
    head.eval()  # test_proposal, as exported
    specs = [([None, 8, None, None], "float32")] * 2 + \
        [([None, 3, None, None], "float32")] * 2 + \
        [([None, 12, None, None], "float32")] * 2 + [([None, 2], "float32")]

    def traced(gen_proposal):
        gen_proposal = types.MethodType(gen_proposal, head)

        def proposals(f0, f1, s0, s1, d0, d1, im_shape):
            anchors = head.anchor_generator([f0, f1])
            rois, rois_num = gen_proposal([s0, s1], [d0, d1], anchors,
                                          {"im_shape": im_shape})
            return rois_num
        return _static(proposals, *specs)

    args = [paddle.to_tensor(a) for a in arrays]
    with _fails_if_needed("RPNHead._gen_proposal", ValueError, match=ZERO_D_CONCAT):
        traced(original)(*args)
    anchors = head.anchor_generator(args[:2])
    rois, eager_num = fixed(head, args[2:4], args[4:6], anchors, {"im_shape": args[6]})
    static_num = traced(fixed)(*args)
    assert static_num.shape == [2]
    assert static_num.numpy().tolist() == eager_num.numpy().tolist() == [
        r.shape[0] for r in rois]


def test_multiclass_nms_in_a_static_graph():
    # ppdet builds the op with LayerHelper.append_op outside eager mode, which a PIR
    # program (Paddle 3's static graph) does not take
    original, fixed = _original_and_fixed("ppdet.modeling.ops", "multiclass_nms")
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]], "float32")
    scores = np.array([[[0.9, 0.8, 0.7], [0.1, 0.2, 0.95]]], "float32")  # [N, C, M]
    settings = dict(score_threshold=0.05, nms_top_k=-1, keep_top_k=100,
                    nms_threshold=0.5, normalized=True, background_label=-1)
    # boxes 0 and 1 overlap with IoU 81/100: per class, the lower score goes
    expected = [[0, 0.9, 0, 0, 10, 10], [0, 0.7, 20, 20, 30, 30],
                [1, 0.95, 20, 20, 30, 30], [1, 0.2, 1, 1, 10, 10]]
    args = [paddle.to_tensor(boxes), paddle.to_tensor(scores)]
    for nms in (original, fixed):  # eager: the same op either way
        out, num, _ = nms(*args, **settings)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
        assert num.numpy().tolist() == [4]

    def traced(nms):
        def detect(bboxes, scores):
            out, num, _ = nms(bboxes, scores, **settings)
            return out, num
        return _static(detect, ([None, None, 4], "float32"), ([None, 2, None], "float32"))

    with _fails_if_needed("multiclass_nms", TypeError, match="multiclass_nms3"):
        traced(original)(*args)
    out, num = traced(fixed)(*args)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    assert num.numpy().tolist() == [4]


class _Detector(paddle.nn.Layer):
    """Takes what ppdet's exported detectors take."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3)

    def forward(self, inputs):
        size = inputs["im_shape"] / inputs["scale_factor"]
        return {"bbox": self.conv(inputs["image"]).mean([1, 2, 3]) * size.sum(1)}


def test_trainer_export_traces_the_full_graph(tmp_path):
    # paddle.jit.to_static without full_graph (Paddle 3: SOT) has no main_program
    # for ppdet to prune the input spec with
    from paddle_pale.adapters import ppdet_engine
    original, fixed = _original_and_fixed("ppdet.engine.trainer",
                                          "Trainer._get_infer_cfg_and_input_spec")
    config = os.path.join(ROOT, "configs", "det", "mask_rcnn_pale_t_fpn_1x_coco.yml")
    trainer = types.SimpleNamespace(cfg=ppdet_engine.load_config(config), model=_Detector())
    trainer.model.eval()
    with _fails_if_needed("Trainer._get_infer_cfg_and_input_spec", RuntimeError,
                          match="full_graph=False"):
        original(trainer, str(tmp_path))
    # (ppdet then prunes the input spec by reading the program the Paddle 2 way, which
    # finds no input in a PIR program; paddle.jit.save takes the empty spec it returns
    # as "the traced one", so the exported detector keeps its three inputs)
    static_model, _ = fixed(trainer, str(tmp_path))
    assert static_model.forward.main_program is not None
    inputs = {"image": paddle.rand([1, 3, 20, 30]), "im_shape": paddle.to_tensor([[20., 30.]]),
              "scale_factor": paddle.to_tensor([[0.5, 0.5]])}
    np.testing.assert_allclose(static_model(inputs)["bbox"].numpy(),
                               trainer.model(inputs)["bbox"].numpy(), rtol=1e-5)
    assert (tmp_path / "infer_cfg.yml").is_file()


def test_fpn_upsampling_runs_under_onednn(tmp_path):
    # Paddle 3.3.1's oneDNN cannot run nearest_interp ("ConvertPirAttribute2Runtime
    # Attribute not support [pir::ArrayAttribute<pir::DoubleAttribute>]"); the fixed
    # FPN copies each pixel into a 2x2 block instead, giving the same values
    from ppdet.modeling.necks.fpn import FPN

    from paddle_pale.inference import create_predictor, program_op_names
    original, fixed = _original_and_fixed("ppdet.modeling.necks.fpn", "FPN.forward")
    paddle.seed(0)
    fpn = FPN(in_channels=[8, 16], out_channel=8, spatial_scales=[0.25, 0.125],
              extra_stage=0)
    fpn.eval()
    rng = np.random.default_rng(0)
    c2 = rng.standard_normal([1, 8, 8, 12]).astype("float32")  # strides 4 and 8
    c3 = rng.standard_normal([1, 16, 4, 6]).astype("float32")
    with paddle.no_grad():
        expected = [f.numpy() for f in original(fpn, [paddle.to_tensor(c2),
                                                      paddle.to_tensor(c3)])]
        got = fixed(fpn, [paddle.to_tensor(c2), paddle.to_tensor(c3)])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b)

    class Neck(paddle.nn.Layer):
        def __init__(self, forward):
            super().__init__()
            self.fpn, self.forward_fn = fpn, forward

        def forward(self, c2, c3):
            return self.forward_fn(self.fpn, [c2, c3])[0]

    def predictor(forward, name):
        static = _static(Neck(forward), ([None, 8, None, None], "float32"),
                         ([None, 16, None, None], "float32"))
        paddle.jit.save(static, str(tmp_path / name))
        predictor = create_predictor(str(tmp_path / name), onednn=True)
        for input_name, value in zip(predictor.get_input_names(), (c2, c3)):
            handle = predictor.get_input_handle(input_name)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(value)
        return predictor

    original_predictor = predictor(original, "original")
    assert "nearest_interp" in program_op_names(str(tmp_path / "original.json"))
    with _fails_if_needed("FPN.forward", NotImplementedError,
                          match="ArrayAttribute<pir::DoubleAttribute>"):
        original_predictor.run()
    fixed_predictor = predictor(fixed, "fixed")
    assert "nearest_interp" not in program_op_names(str(tmp_path / "fixed.json"))
    fixed_predictor.run()
    out = fixed_predictor.get_output_handle(fixed_predictor.get_output_names()[0])
    np.testing.assert_allclose(out.copy_to_cpu(), expected[0], atol=1e-5, rtol=1e-5)
