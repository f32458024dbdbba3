"""Each Paddle 3.x fix for paddledet 2.6.0: the unpatched function fails on 0-D
tensors, the patched one gives the value computed here independently."""
import importlib

import numpy as np
import paddle
import pytest

pytest.importorskip("ppdet")

from paddle_pale.adapters import ppdet_compat  # noqa: E402

ZERO_D_CONCAT = "axis is expected to be in range"


def _original_and_fixed(module_name, qualname):
    ppdet_compat.apply()
    owner = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    fixed = owner.__dict__[name]
    return fixed.__wrapped__, fixed


def test_every_fix_has_a_test_below():
    assert sorted(q for _, q in ppdet_compat.FIXES) == [
        "BBoxPostProcess.get_pred", "RPNHead._gen_proposal", "generate_mask_target",
        "generate_proposal_target"]


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
    with pytest.raises(ValueError, match=ZERO_D_CONCAT):
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
    with pytest.raises(ValueError, match=ZERO_D_CONCAT):
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
    with pytest.raises(ValueError, match=ZERO_D_CONCAT):
        original(*args)
    mask_rois, rois_num, classes, masks, _, weights = fixed(*args)
    assert rois_num.numpy().tolist() == [2, 1]  # foreground RoIs per image
    assert classes.numpy().tolist() == [1, 0, 1]
    # each foreground RoI is exactly the square: its target mask is all ones
    np.testing.assert_array_equal(masks.numpy(), np.ones([3, resolution, resolution]))
    np.testing.assert_array_equal(weights.numpy(), [1, 1, 1])


def test_bbox_post_process_get_pred():
    from ppdet.modeling.post_process import BBoxPostProcess
    original, fixed = _original_and_fixed("ppdet.modeling.post_process",
                                          "BBoxPostProcess.get_pred")
    post = BBoxPostProcess(num_classes=2)
    # image 0: two boxes on a 64x64 input scaled by 0.5; image 1: no box at all
    detections = np.array([[1, 0.9, 10, 20, 50, 40],
                           [0, 0.8, 30, 30, 90, 70]], dtype="float32")
    im_shape = np.array([[64, 64], [64, 96]], dtype="float32")
    scale = np.array([[0.5, 0.5], [2.0, 2.0]], dtype="float32")  # (y, x)
    args = (paddle.to_tensor(detections), paddle.to_tensor([2, 0], dtype="int32"),
            paddle.to_tensor(im_shape), paddle.to_tensor(scale))
    with pytest.raises(ValueError, match=ZERO_D_CONCAT):
        original(post, *args)
    _, result, bbox_num = fixed(post, *args)
    # ppdet puts a fake [0, 0, 1, 1] box of class 0 for an image without boxes
    assert bbox_num.numpy().tolist() == [2, 1]
    rows = np.vstack([detections, [[0, 0, 0, 0, 1, 1]]])
    image = [0, 0, 1]
    origin = np.floor(im_shape / scale + 0.5)  # (h, w) of the original images
    expected = []
    for row, i in zip(rows, image):
        sy, sx = scale[i]
        box = row[2:] / [sx, sy, sx, sy]
        box = np.clip(box, 0, [origin[i, 1], origin[i, 0]] * 2)
        expected.append([row[0], row[1], *box])
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)
