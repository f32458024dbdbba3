"""One dense-backbone base behind the PaddleSeg and PaddleDetection backbones."""
import inspect

import numpy as np
import paddle
import pytest

pytest.importorskip("paddleseg")
pytest.importorskip("ppdet")

from paddle_pale.adapters import paddleseg, ppdet  # noqa: E402
from paddle_pale.adapters.backbone import DenseBackbone  # noqa: E402

TINY = dict(depths=(1, 1, 1, 1))
BACKBONES = [paddleseg.PaleTransformer, ppdet.PaleTransformer]


def test_both_libraries_get_the_same_backbone_and_defaults():
    for backbone in BACKBONES:
        assert issubclass(backbone, DenseBackbone) and backbone.__init__ is DenseBackbone.__init__
    defaults = {name: p.default for name, p in
                inspect.signature(DenseBackbone.__init__).parameters.items()}
    assert defaults["drop_path_rate"] == 0.2 and defaults["frozen_stages"] == -1
    seg, det = (cls("pale_t", **TINY) for cls in BACKBONES)
    assert list(seg.state_dict()) == list(det.state_dict())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_stops_after_the_last_requested_stage(backbone):
    model = backbone("pale_t", out_indices=(0, 1), **TINY)
    model.eval()
    ran = []
    for index, stage in enumerate(model.stages):
        stage.register_forward_post_hook(lambda layer, inputs, output, i=index: ran.append(i))
    image = paddle.randn([1, 3, 64, 64])
    with paddle.no_grad():
        maps = model({"image": image} if backbone is ppdet.PaleTransformer else image)
    assert ran == [0, 1] and [m.shape[1] for m in maps] == model.feat_channels == [64, 128]
    # what is never run takes no gradient (data-parallel training would wait for it)
    assert all(p.stop_gradient for i in (2, 3) for p in model.stages[i].parameters())


def test_frozen_stages_work_in_paddleseg_as_in_ppdet():
    model = paddleseg.PaleTransformer("pale_t", frozen_stages=1, drop_path_rate=0.5, **TINY)
    assert all(p.stop_gradient for p in model.stages[0].parameters())
    assert not any(p.stop_gradient for p in model.stages[1].parameters())
    model.train()
    image = paddle.randn([1, 3, 64, 64])
    paddle.seed(1)
    first = model(image)[0].numpy()
    paddle.seed(2)
    np.testing.assert_array_equal(first, model(image)[0].numpy())  # no drop path in stage 1
