"""Gradient checkpointing (``set_grad_checkpointing``, ``Arch.grad_checkpointing``, the
backbones' ``grad_checkpointing``): the same loss and gradients as keeping activations."""
import numpy as np
import paddle
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.adapters.backbone import DenseBackbone
from paddle_pale.engine import Engine
from paddle_pale.engine.config import load_config
from paddle_pale.models.pale import PaleBlock
from paddle_pale.models.registry import create_model

# two blocks per stage, stochastic depth and dropout on: the recomputed forward must
# draw the same random masks as the first one
ARCH = dict(num_classes=3, embed_dims=(8, 16, 16, 16), depths=(2, 2, 2, 1),
            num_heads=(2, 2, 2, 2), pale_size=2, drop_path_rate=0.5, drop_rate=0.2)


def _images(batch=4, size=32):
    return paddle.to_tensor(np.random.RandomState(0).randn(batch, 3, size, size)
                            .astype("float32"))


def _count_block_forwards(model):
    calls = []
    for layer in model.sublayers():
        if isinstance(layer, PaleBlock):
            layer.register_forward_post_hook(lambda *args: calls.append(1))
    return calls


def _loss_and_grads(build, checkpointing, seed=7, loss_fn=lambda out: out.square().mean()):
    paddle.seed(1)
    model = build()
    model.train()
    model.set_grad_checkpointing(checkpointing)
    calls = _count_block_forwards(model)
    paddle.seed(seed)
    loss = loss_fn(model(_images()))
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in model.named_parameters()
             if p.grad is not None}
    return float(loss), grads, len(calls)


def test_checkpointed_loss_and_every_gradient_equal_the_plain_run():
    build = lambda: create_model("pale_t", **ARCH)  # noqa: E731
    loss, grads, calls = _loss_and_grads(build, False)
    loss_ckpt, grads_ckpt, calls_ckpt = _loss_and_grads(build, True)
    blocks = sum(ARCH["depths"])
    assert calls == blocks and calls_ckpt == 2 * blocks  # each block recomputed once
    assert loss_ckpt == loss
    assert sorted(grads_ckpt) == sorted(grads) and len(grads) > 100
    for name, grad in grads.items():
        np.testing.assert_allclose(grads_ckpt[name], grad, rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    # stochastic depth is live: another seed drops other paths
    assert _loss_and_grads(build, False, seed=8)[0] != loss


def test_checkpointing_is_off_in_eval_and_by_default():
    model = create_model("pale_t", **ARCH)
    assert model.grad_checkpointing is False
    model.set_grad_checkpointing(True)
    model.eval()
    calls = _count_block_forwards(model)
    with paddle.no_grad():
        model(_images(batch=1))
    assert len(calls) == sum(ARCH["depths"])


def test_dense_backbone_option_checkpoints_the_pyramid():
    arch = {k: v for k, v in ARCH.items() if k not in ("num_classes",)}
    build = lambda: DenseBackbone(arch="pale_t", **arch)  # noqa: E731
    assert DenseBackbone(arch="pale_t", grad_checkpointing=True, **arch).grad_checkpointing

    def pyramid_loss(model_out):
        return sum(f.square().mean() for f in model_out)

    class Pyramid(paddle.nn.Layer):  # the seg/det adapters' forward, without the libraries
        def __init__(self):
            super().__init__()
            self.backbone = build()

        def set_grad_checkpointing(self, enable):
            self.backbone.set_grad_checkpointing(enable)

        def forward(self, x):
            return self.backbone.pyramid(x)

    loss, grads, _ = _loss_and_grads(Pyramid, False, loss_fn=pyramid_loss)
    loss_ckpt, grads_ckpt, calls = _loss_and_grads(Pyramid, True, loss_fn=pyramid_loss)
    assert calls == 2 * sum(ARCH["depths"])
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    for name, grad in grads.items():
        np.testing.assert_allclose(grads_ckpt[name], grad, rtol=1e-6, atol=1e-7,
                                   err_msg=name)


def test_arch_grad_checkpointing_trains_and_its_checkpoints_resume_without_it(tmp_path):
    write_image_folder(tmp_path / "data")
    path = tiny_config(tmp_path, tmp_path / "data")
    config = load_config(path, ["Arch.grad_checkpointing=True", "Global.epochs=1"])
    engine = Engine(config)
    assert engine.model.grad_checkpointing
    assert "grad_checkpointing" not in engine.arch  # a training switch, not architecture
    engine.train()
    resumed = Engine(load_config(path, ["Global.epochs=2",
                                        f"Global.resume={tmp_path / 'out' / 'latest'}"]))
    assert not resumed.model.grad_checkpointing and resumed.start_epoch == 1
    resumed.train()


@pytest.mark.parametrize("value", [False, True])
def test_paddleseg_and_paddledetection_configs_reach_the_backbone(value):
    # the shipped configs' backbone sections carry grad_checkpointing (False); -o flips it
    import os
    pytest.importorskip("paddleseg")
    pytest.importorskip("ppdet")
    from paddleseg.cvlibs import SegBuilder
    from ppdet.core import workspace
    from paddle_pale.adapters import paddleseg_engine, ppdet_engine
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seg = paddleseg_engine.load_config(
        os.path.join(root, "configs", "seg", "upernet_pale_t_ade20k_512x512_160k.yml"),
        opts=["model.backbone.depths=[1,1,1,1]", "model.channels=16",
              f"model.backbone.grad_checkpointing={value}"])
    assert SegBuilder(seg).model.backbone.grad_checkpointing is value
    ppdet_engine.load_config(
        os.path.join(root, "configs", "det", "mask_rcnn_pale_t_fpn_1x_coco.yml"),
        ppdet_engine.parse_overrides(["PaleTransformer.depths=[1, 1, 1, 1]",
                                      f"PaleTransformer.grad_checkpointing={value}"]))
    assert workspace.create("PaleTransformer").grad_checkpointing is value
