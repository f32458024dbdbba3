"""PaddleDetection integration: the backbone, the shipped Mask R-CNN configs, training
and COCO evaluation through ppdet's own Trainer."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

pytest.importorskip("ppdet")

from ppdet.core import workspace  # noqa: E402

import paddle_pale  # noqa: E402
from det_helpers import write_tiny_coco  # noqa: E402
from paddle_pale.adapters import ppdet_engine  # noqa: E402
from paddle_pale.adapters.ppdet import PaleTransformer  # noqa: E402
from paddle_pale.utils.flops import count_params  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "det", "mask_rcnn_pale_{}_fpn_1x_coco.yml")
TINY = dict(depths=[1, 1, 1, 1])


def _pyramid_shapes(backbone, height, width):
    backbone.eval()
    with paddle.no_grad():
        return [list(f.shape) for f in backbone({"image": paddle.randn([1, 3, height, width])})]


def test_import_without_ppdet():
    code = ("import sys; sys.modules['ppdet'] = None\n"
            "import paddle_pale, paddle_pale.adapters\n"
            "try:\n    import paddle_pale.adapters.ppdet\nexcept ImportError:\n"
            "    print('adapter needs ppdet')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "adapter needs ppdet" in result.stdout


def test_registered_under_its_class_name():
    schema = workspace.global_config["PaleTransformer"]
    assert getattr(schema.pymodule, "PaleTransformer") is PaleTransformer
    assert issubclass(PaleTransformer, paddle_pale.PaleTransformer)
    assert {"arch", "out_indices", "drop_path_rate", "frozen_stages",
            "pretrained"} <= set(schema.schema)


@pytest.mark.parametrize("size,expected", [
    # odd sizes: each stride-2 conv (padding k // 2) rounds up
    ((97, 131), [(25, 33), (13, 17), (7, 9), (4, 5)]),
    # a batch padded to a multiple of 32 (PadBatch) gives exactly H / stride
    ((800, 1344), [(200, 336), (100, 168), (50, 84), (25, 42)]),
])
def test_any_input_size_matches_out_shape(size, expected):
    # narrow stages keep the 800x1344 forward cheap; shapes do not depend on width
    channels = [16, 32, 64, 128]
    backbone = PaleTransformer("pale_t", embed_dims=channels, num_heads=[2, 2, 2, 2],
                               **TINY)
    shapes = _pyramid_shapes(backbone, *size)
    assert shapes == [[1, c, h, w] for c, (h, w) in zip(channels, expected)]
    assert [(s.channels, s.stride) for s in backbone.out_shape] == list(
        zip(channels, [4, 8, 16, 32]))
    if size[0] % 32 == 0 and size[1] % 32 == 0:
        assert [(size[0] // s.stride, size[1] // s.stride)
                for s in backbone.out_shape] == expected


def test_out_indices_select_levels():
    backbone = PaleTransformer("pale_s", out_indices=[1, 2], **TINY)
    channels = paddle_pale.models.registry.model_defaults("pale_s")["embed_dims"]
    assert [(s.channels, s.stride) for s in backbone.out_shape] == [
        (channels[1], 8), (channels[2], 16)]
    assert _pyramid_shapes(backbone, 64, 96) == [[1, channels[1], 8, 12],
                                                 [1, channels[2], 4, 6]]
    # parts whose output is never returned must not wait for gradients
    assert all(p.stop_gradient for p in backbone.stages[3].parameters())
    assert all(p.stop_gradient for p in backbone.stage_norms[0].parameters())
    assert not any(p.stop_gradient for p in backbone.stage_norms[1].parameters())


def test_frozen_stages_keep_weights_and_skip_drop_path():
    backbone = PaleTransformer("pale_t", frozen_stages=2, drop_path_rate=0.5, **TINY)
    frozen = [backbone.patch_embeds[0], backbone.stages[0], backbone.patch_embeds[1],
              backbone.stages[1]]
    frozen_ids = {id(p) for layer in frozen for p in layer.parameters()}
    for param in backbone.parameters():
        assert param.stop_gradient == (id(param) in frozen_ids)

    def stage2_outputs(model):
        model.train()  # what ppdet's Trainer does every epoch
        x = {"image": paddle.randn([1, 3, 64, 64])}
        paddle.seed(1)
        first = model(x)[1].numpy()
        paddle.seed(2)
        return first, model(x)[1].numpy()

    # frozen stages run without drop path even in training mode ...
    first, second = stage2_outputs(backbone)
    np.testing.assert_array_equal(first, second)
    # ... while the same stages, trainable, do drop paths
    first, second = stage2_outputs(PaleTransformer("pale_t", drop_path_rate=0.5, **TINY))
    assert np.abs(first - second).max() > 1e-3


@pytest.mark.parametrize("kwargs,message", [
    (dict(out_indices=[0, 4]), "out_indices"),
    (dict(out_indices=[2, 1]), "out_indices"),
    (dict(frozen_stages=5), "frozen_stages"),
    (dict(num_classes=80), "num_classes"),
    (dict(arch="pale_xl"), "pale_xl"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaleTransformer(**dict(TINY, **kwargs))


def test_loads_classification_checkpoint(tmp_path):
    classifier = paddle_pale.create_model("pale_t", **TINY)
    path = str(tmp_path / "pale_t.pdparams")
    paddle.save(classifier.state_dict(), path)
    backbone = PaleTransformer("pale_t", pretrained=path, **TINY)
    source = classifier.state_dict()
    own = backbone.state_dict()
    # every backbone tensor comes from the checkpoint; only the classifier is left
    assert sorted(set(source) - set(own)) == sorted(
        k for k in source if k.startswith(("norm.", "head.")))
    for key, value in own.items():
        np.testing.assert_array_equal(value.numpy(), source[key].numpy(), err_msg=key)
    with pytest.raises(ValueError, match="shape mismatch"):
        PaleTransformer("pale_s", pretrained=path, **TINY)
    with pytest.raises(FileNotFoundError, match="missing.pdparams"):
        PaleTransformer("pale_t", pretrained=str(tmp_path / "missing.pdparams"), **TINY)


@pytest.mark.parametrize("variant,paper_millions", [("t", 41), ("s", 68), ("b", 105)])
def test_shipped_config_matches_paper_params(variant, paper_millions):
    """Mask R-CNN-Pale built from the shipped config (80 classes) against Table 3."""
    cfg = ppdet_engine.load_config(CONFIG.format(variant))
    assert cfg.num_classes == 80 and cfg.epoch == 12
    assert cfg.PaleTransformer["arch"] == f"pale_{variant}"
    model = workspace.create(cfg.architecture)
    assert isinstance(model.backbone, PaleTransformer)
    assert abs(count_params(model) / 1e6 - paper_millions) < 0.5  # paper rounds to 1M


def test_load_config_takes_the_tools_option_strings_too():
    cfg = ppdet_engine.load_config(CONFIG.format("t"),
                                   ["epoch=3", "PaleTransformer.depths=[1, 1, 2, 1]"])
    assert cfg.epoch == 3 and cfg.PaleTransformer["depths"] == [1, 1, 2, 1]
    with pytest.raises(TypeError, match="a dict or a list of 'KEY=VALUE' strings, got str"):
        ppdet_engine.load_config(CONFIG.format("t"), "epoch=3")


def test_attention_mode_reaches_the_backbone_from_the_config():
    cfg = ppdet_engine.load_config(CONFIG.format("t"), ppdet_engine.parse_overrides(
        ["PaleTransformer.depths=[1, 1, 2, 1]", "PaleTransformer.attention_mode=cross_shaped",
         "PaleTransformer.stripe_width=[1, 2, 2, 1]"]))
    backbone = workspace.create("PaleTransformer")
    assert isinstance(backbone, PaleTransformer) and cfg.PaleTransformer["arch"] == "pale_t"
    assert [[block.attn.region for block in stage] for stage in backbone.stages] == \
        [[(1, 1)], [(2, 2)], [(2, 2), (2, 2)], [(1, 1)]]
    classifier = paddle_pale.create_model("pale_t", depths=[1, 1, 2, 1],
                                          attention_mode="cross_shaped",
                                          stripe_width=[1, 2, 2, 1])
    classifier.set_state_dict(backbone.state_dict())
    classifier.eval()
    image = paddle.randn([1, 3, 64, 96])
    backbone.eval()
    for ours, theirs in zip(backbone({"image": image}), classifier.forward_pyramid(image)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_overrides_parse_and_reach_datasets(tmp_path):
    assert ppdet_engine.parse_overrides(["a.b.c=1", "a.d=[1, 2]", "e=false"]) == {
        "a": {"b": {"c": 1}, "d": [1, 2]}, "e": False}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ppdet_engine.parse_overrides(["epoch"])
    cfg = ppdet_engine.load_config(CONFIG.format("t"), ppdet_engine.parse_overrides(
        [f"TrainDataset.dataset_dir={tmp_path}", "PaleTransformer.depths=[1, 1, 1, 1]"]))
    assert cfg.TrainDataset.dataset_dir == str(tmp_path)  # still a COCODataSet
    assert cfg.TrainDataset.anno_path == "annotations/instances_train2017.json"
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        ppdet_engine.check_datasets(cfg, ["TrainDataset"])
    with pytest.raises(KeyError, match="dataset_dri"):
        ppdet_engine.load_config(CONFIG.format("t"), {"TrainDataset": {"dataset_dri": "x"}})
    # a later load does not inherit the earlier overrides
    assert "depths" not in ppdet_engine.load_config(CONFIG.format("t")).PaleTransformer


def _tiny_overrides(data, save_dir, pretrained):
    """The shipped config, shrunk to run on a CPU in seconds: tiny images and set,
    a one-block-per-stage backbone, narrow heads, few proposals."""
    size = [96, 128]
    normalize = {"NormalizeImage": {"is_scale": True, "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225]}}
    resize = {"Resize": {"target_size": size, "keep_ratio": True, "interp": 2}}
    return {
        "use_gpu": False, "worker_num": 0, "num_classes": 2, "epoch": 2, "log_iter": 1,
        "snapshot_epoch": 2, "save_dir": str(save_dir),
        "TrainDataset": dict(data), "EvalDataset": dict(data),
        "PaleTransformer": dict(TINY, frozen_stages=1, pretrained=pretrained),
        "FPN": {"out_channel": 32},
        "RPNHead": {"rpn_target_assign": {"batch_size_per_im": 64},
                    "train_proposal": {"pre_nms_top_n": 200, "post_nms_top_n": 100},
                    "test_proposal": {"pre_nms_top_n": 200, "post_nms_top_n": 50}},
        "BBoxAssigner": {"batch_size_per_im": 64},
        "TwoFCHead": {"out_channel": 64},
        "MaskFeat": {"num_convs": 1, "out_channel": 32},
        "BBoxPostProcess": {"nms": {"keep_top_k": 20}},
        # full learning rate from the first step, so one step visibly moves weights
        "LearningRate": {"schedulers": [
            {"name": "PiecewiseDecay", "gamma": 0.1, "milestones": [8, 11]},
            {"name": "LinearWarmup", "start_factor": 1.0, "steps": 1}]},
        "TrainReader": {"batch_size": 2, "use_shared_memory": False,
                        "sample_transforms": [{"Decode": {}}, resize,
                                              {"RandomFlip": {"prob": 0.5}}, normalize,
                                              {"Permute": {}}]},
        "EvalReader": {"sample_transforms": [{"Decode": {}}, resize, normalize,
                                             {"Permute": {}}]},
    }


def _final_weights(save_dir, cfg=None):
    """The prefix of the one ``model_final.pdparams`` training wrote under ``save_dir``
    (paddledet 2.6.0: in ``save_dir/<config name>/``, ppdet's develop branch: in
    ``save_dir``), and where ``ppdet_engine.checkpoint_prefix(cfg)`` says it is."""
    found = glob.glob(os.path.join(save_dir, "**", "model_final.pdparams"), recursive=True)
    assert len(found) == 1, found
    prefix = found[0][:-len(".pdparams")]
    if cfg is not None:
        assert ppdet_engine.checkpoint_prefix(cfg) == prefix
    return prefix


def _coco_stats(anno_file, results_file, iou_type):
    """AP/AR of ``results_file`` computed by pycocotools directly."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    ground_truth = COCO(anno_file)
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(results_file), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def test_train_and_evaluate_mask_rcnn_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ppdet writes bbox.json / mask.json here
    data = write_tiny_coco(tmp_path / "coco", num_images=4, size=(96, 128))
    checkpoint = str(tmp_path / "pale_t_imagenet.pdparams")
    classifier = paddle_pale.create_model("pale_t", **TINY)
    paddle.save(classifier.state_dict(), checkpoint)

    cfg = ppdet_engine.load_config(CONFIG.format("t"),
                                   _tiny_overrides(data, tmp_path / "output", checkpoint))
    trainer = ppdet_engine.build_trainer(cfg, "train")
    backbone = trainer.model.backbone
    before = {k: v.numpy().copy() for k, v in backbone.state_dict().items()}
    for key, value in before.items():  # the classification weights arrived
        np.testing.assert_array_equal(value, classifier.state_dict()[key].numpy())

    trainer.train(validate=True)  # 2 epochs x 2 iterations, then COCO evaluation
    losses = trainer.status["training_staus"].meters
    assert {"loss", "loss_rpn_cls", "loss_bbox_cls", "loss_mask"} <= set(losses)
    assert all(np.isfinite(meter.avg) for meter in losses.values())
    after = backbone.state_dict()
    for key in ("patch_embeds.0.proj.weight", "stages.0.0.attn.proj.weight"):
        np.testing.assert_array_equal(after[key].numpy(), before[key], err_msg=key)
    # LayerNorm weights have no weight decay: they move only by their gradient
    for key in ("stages.2.0.norm1.weight", "stage_norms.3.weight"):
        assert np.abs(after[key].numpy() - before[key]).max() > 0, key
    weights = _final_weights(tmp_path / "output", cfg)

    os.remove("bbox.json")
    os.remove("mask.json")
    results = ppdet_engine.evaluate(cfg, weights=str(weights))
    assert set(results) == {"bbox", "mask"}
    anno_file = os.path.join(data["dataset_dir"], data["anno_path"])
    for iou_type, name in (("bbox", "bbox"), ("segm", "mask")):
        # ppdet's numbers are those pycocotools gives for the files it wrote
        np.testing.assert_allclose(results[name], _coco_stats(anno_file, f"{name}.json",
                                                              iou_type))
    with open("mask.json") as f:
        masks = json.load(f)
    assert masks and {m["category_id"] for m in masks} <= {1, 3}  # ids from the json, not 0..1
    assert all(m["segmentation"]["size"] == [96, 128] for m in masks)


def test_evaluate_without_weights_is_refused(tmp_path):
    cfg = ppdet_engine.load_config(CONFIG.format("t"), {"weights": None,
                                                        "save_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="weights"):
        ppdet_engine.evaluate(cfg)


def test_use_gpu_on_cpu_build_is_refused(tmp_path):
    if paddle.is_compiled_with_cuda():
        pytest.skip("this Paddle has CUDA")
    data = write_tiny_coco(tmp_path / "coco", num_images=1)
    cfg = ppdet_engine.load_config(CONFIG.format("t"), {"TrainDataset": data})
    with pytest.raises(RuntimeError, match="use_gpu"):
        ppdet_engine.build_trainer(cfg, "train")


def _as_options(overrides):
    """``-o`` options of the tools (JSON is YAML) for a nested override dict."""
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def test_command_line_tools_train_and_evaluate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import eval_det
        import train_det
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    data = write_tiny_coco(tmp_path / "coco", num_images=2, size=(96, 128))
    overrides = _tiny_overrides(data, tmp_path / "output", None)
    overrides.update(epoch=1, snapshot_epoch=1)
    train_det.main(["-c", CONFIG.format("t"), "--eval", "-o", *_as_options(overrides)])
    weights = _final_weights(tmp_path / "output")
    trained = paddle.load(f"{weights}.pdparams")
    assert any(key.startswith("backbone.stages.") for key in trained)
    for name in ("bbox.json", "mask.json"):  # --eval ran COCO evaluation
        os.remove(name)
    # no weights=: the final checkpoint of training the config, where ppdet wrote it
    eval_det.main(["-c", CONFIG.format("t"), "-o", *_as_options(overrides)])
    with open("bbox.json") as f:
        assert all(d["image_id"] in (1, 2) for d in json.load(f))
    assert os.path.isfile("mask.json")


def test_two_process_training_with_paddle_distributed_launch(tmp_path):
    """Data-parallel training as PaddleDetection runs it (2 CPU processes, gloo)."""
    data = write_tiny_coco(tmp_path / "coco", num_images=4, size=(96, 128))
    overrides = _tiny_overrides(data, tmp_path / "output", None)
    overrides.update(epoch=1, snapshot_epoch=1)
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(tmp_path / "log"), os.path.join(ROOT, "tools", "train_det.py"),
               "-c", CONFIG.format("t"), "-o", *_as_options(overrides)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    logs = [(tmp_path / "log" / f"workerlog.{rank}").read_text() for rank in (0, 1)]
    assert result.returncode == 0, result.stdout[-3000:] + logs[0][-3000:] + logs[1][-3000:]
    # 4 images, batch 2 per process: the data is split, one step per epoch
    # (a single process would log [0/2]; ppdet logs from rank 0 only)
    assert "Epoch: [0] [0/1]" in logs[0]
    _final_weights(tmp_path / "output")


def test_eval_refuses_weights_that_do_not_fit_unless_told(tmp_path, monkeypatch):
    """ppdet's loader matches keys by suffix and only logs what it leaves out: a detector
    of another config was evaluated half-initialised and printed COCO AP."""
    monkeypatch.chdir(tmp_path)
    data = write_tiny_coco(tmp_path / "coco", num_images=1, size=(96, 128))
    overrides = _tiny_overrides(data, tmp_path / "output", None)
    cfg = ppdet_engine.load_config(CONFIG.format("t"), overrides)
    state = ppdet_engine.build_trainer(cfg, "eval").model.state_dict()
    good = str(tmp_path / "good")
    paddle.save(state, good + ".pdparams")
    ppdet_engine.load_detector_weights(ppdet_engine.build_trainer(cfg, "eval").model, good)
    # a 3-class detector's heads on the 2-class config (e.g. weights of another data set)
    other = ppdet_engine.load_config(CONFIG.format("t"), dict(overrides, num_classes=3))
    paddle.save(ppdet_engine.build_trainer(other, "eval").model.state_dict(),
                str(tmp_path / "other.pdparams"))
    evaluated = []
    monkeypatch.setattr(ppdet_engine.Trainer, "evaluate",
                        lambda trainer: evaluated.append(trainer))
    cfg = ppdet_engine.load_config(CONFIG.format("t"), overrides)
    with pytest.raises(ValueError, match=r"do not fit the detector of this config.*shape "
                                         r"mismatches \(\d+\): .*--allow_mismatched_weights") \
            as error:
        ppdet_engine.evaluate(cfg, weights=str(tmp_path / "other"))
    assert evaluated == [] and len(str(error.value)) < 1200
    ppdet_engine.eval_main(["-c", CONFIG.format("t"), "-o", *_as_options(overrides),
                            f"weights={tmp_path / 'other'}", "--allow_mismatched_weights"])
    assert len(evaluated) == 1


# ---------------------------------------------------------------- export and deploy
def _export_overrides(overrides):
    """Export settings with more RoIs and detections (up to 1000 and 100) than the tiny
    training settings keep (50 and 20), the tiny set's label names, and a TestReader
    resizing to 96x128."""
    exported = dict(overrides, BBoxPostProcess={"nms": {"keep_top_k": 100}})
    exported["RPNHead"] = dict(overrides["RPNHead"], test_proposal={
        "pre_nms_top_n": 200, "post_nms_top_n": 1000})
    exported["TestDataset"] = {key: overrides["EvalDataset"][key]
                               for key in ("dataset_dir", "anno_path")}  # label names
    exported["TestReader"] = {"sample_transforms": overrides["EvalReader"]["sample_transforms"]}
    return exported


def _tool(name):
    import importlib
    return importlib.import_module(name)  # tools/ is on sys.path (conftest.py)


@pytest.fixture(scope="module")
def exported_detector(tmp_path_factory):
    """The tiny Mask R-CNN-Pale trained for 2 epochs on the tiny COCO set (so its
    scores are not all alike), exported by tools/export_det.py, and the eager model
    with the same weights."""
    root = tmp_path_factory.mktemp("det_export")
    data = write_tiny_coco(root / "coco", num_images=4, size=(96, 128))
    overrides = _tiny_overrides(data, root / "output", None)
    cfg = ppdet_engine.load_config(CONFIG.format("t"), overrides)
    ppdet_engine.train(cfg)
    weights = _final_weights(root / "output", cfg)
    exported = _export_overrides(overrides)
    paths = _tool("export_det").main(["-c", CONFIG.format("t"), "-o", *_as_options(exported),
                                      f"weights={weights}", "--output_dir",
                                      str(root / "inference")])
    cfg = ppdet_engine.load_config(CONFIG.format("t"), exported)
    model = workspace.create(cfg.architecture)
    model.set_state_dict(paddle.load(f"{weights}.pdparams"))
    model.eval()
    odd = write_tiny_coco(root / "odd", num_images=1, size=(100, 70), seed=3)
    images = [os.path.join(data["dataset_dir"], "images", "0001.jpg"),
              os.path.join(odd["dataset_dir"], "images", "0001.jpg")]
    return dict(paths=paths, model=model, weights=str(weights), exported=exported,
                images=images)


def _reader_inputs(paths):
    """The predictor's inputs for image files, made by ppdet's own operators as its
    TestReader makes them (resize to 96x128 keeping the aspect ratio, normalize, pad
    the batch to a multiple of 32)."""
    from ppdet.data.transform.batch_operators import PadBatch
    from ppdet.data.transform.operators import Decode, NormalizeImage, Permute, Resize
    steps = [Decode(), Resize(target_size=[96, 128], keep_ratio=True, interp=2),
             NormalizeImage(is_scale=True, mean=[0.485, 0.456, 0.406],
                            std=[0.229, 0.224, 0.225]), Permute()]
    samples = []
    for path in paths:
        sample = {"im_file": path}
        for step in steps:
            sample = step(sample)
        samples.append(sample)
    samples = PadBatch(pad_to_stride=32)(samples)
    return {key: np.stack([s[key] for s in samples]).astype("float32")
            for key in ("image", "im_shape", "scale_factor")}


def _match(expected, got):
    """For each expected detection ``[class, score, x1, y1, x2, y2]``, the index of the
    got one of the same class nearest in score and box (near-equal scores may come out
    in either order)."""
    free, order = set(range(len(got))), []
    for row in expected:
        same_class = [j for j in free if got[j, 0] == row[0]]
        assert same_class, f"no detection of class {row[0]} left for {row}"
        best = min(same_class, key=lambda j: 1e3 * abs(got[j, 1] - row[1]) +
                   np.abs(got[j, 2:] - row[2:]).max())
        free.remove(best)
        order.append(best)
    return order


@pytest.mark.parametrize("onednn", [True, False])
def test_exported_mask_rcnn_matches_eager_inference(exported_detector, onednn):
    from paddle_pale.inference import create_predictor
    model, (program, _, _) = exported_detector["model"], exported_detector["paths"]
    predictor = create_predictor(program[:-len(".json")], onednn=onednn)
    assert sorted(predictor.get_input_names()) == ["im_shape", "image", "scale_factor"]
    # 96x128; 100x70, resized to 128x90 and padded to 128x96 (one image per run: see
    # test_a_traced_batch_needs_as_many_boxes_in_each_image in test_ppdet_compat.py)
    for path in exported_detector["images"]:
        inputs = _reader_inputs([path])
        for name in predictor.get_input_names():
            handle = predictor.get_input_handle(name)
            handle.reshape(list(inputs[name].shape))
            handle.copy_from_cpu(inputs[name])
        predictor.run()
        # outputs in the order ppdet's deploy/python/infer.py reads them
        boxes, boxes_num, masks = [predictor.get_output_handle(name).copy_to_cpu()
                                   for name in predictor.get_output_names()]
        with paddle.no_grad():
            eager = model({k: paddle.to_tensor(v) for k, v in inputs.items()})
        assert boxes_num.tolist() == eager["bbox_num"].numpy().tolist()
        assert boxes_num.min() > 0
        expected = eager["bbox"].numpy()
        order = _match(expected, boxes)
        np.testing.assert_array_equal(boxes[order, 0], expected[:, 0])
        np.testing.assert_allclose(boxes[order, 1], expected[:, 1], rtol=0, atol=1e-5)
        np.testing.assert_allclose(boxes[order, 2:], expected[:, 2:], rtol=1e-3, atol=1e-3)
        # masks are pasted into the original image: 96x128, 100x70
        expected_masks = eager["mask"].numpy()
        assert masks.shape == expected_masks.shape and masks.dtype == np.int32
        assert (masks[order] == expected_masks).mean() > 0.999
        assert (expected_masks == 1).any()


def test_export_writes_program_weights_and_infer_cfg(exported_detector):
    import yaml

    from paddle_pale.inference import program_op_names
    program, params, infer_cfg = exported_detector["paths"]
    folder = os.path.dirname(program)
    assert os.path.basename(folder) == "mask_rcnn_pale_t_fpn_1x_coco"
    assert [os.path.basename(p) for p in (program, params, infer_cfg)] == [
        "model.json", "model.pdiparams", "infer_cfg.yml"]
    with open(infer_cfg) as f:
        info = yaml.safe_load(f)
    assert info["arch"] == "RCNN" and info["mask"] is True
    assert info["use_dynamic_shape"] is True
    assert info["label_list"] == ["square", "triangle"]  # the TestDataset's categories
    assert [step["type"] for step in info["Preprocess"]] == [
        "Resize", "NormalizeImage", "Permute", "PadStride"]
    # FPN upsamples by copying pixels: oneDNN runs the whole program
    ops = program_op_names(program)
    assert "nearest_interp" not in ops and "multiclass_nms3" in ops


def test_export_refuses_weights_that_do_not_fit(exported_detector, tmp_path, capsys):
    exported = exported_detector["exported"]
    state = paddle.load(exported_detector["weights"] + ".pdparams")
    key = "bbox_head.bbox_score.weight"  # [64, num_classes + 1]
    wrong = dict(state, **{key: paddle.zeros([64, 81])})
    del wrong["mask_head.mask_fcn_logits.bias"]
    paddle.save(wrong, str(tmp_path / "wrong.pdparams"))
    cfg = ppdet_engine.load_config(CONFIG.format("t"), exported)
    with pytest.raises(ValueError, match=r"missing keys \(1\): mask_head.mask_fcn_logits.bias.*"
                                         r"shape mismatches \(1\): bbox_head.bbox_score.weight"):
        ppdet_engine.export(cfg, str(tmp_path / "out"), str(tmp_path / "wrong"))
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    paddle.save(backbone, str(tmp_path / "backbone.pdparams"))
    with pytest.raises(ValueError, match="classification or backbone weights"):
        ppdet_engine.export(cfg, str(tmp_path / "out"), str(tmp_path / "backbone.pdparams"))
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(ValueError, match="weights=PATH"):
        ppdet_engine.export(ppdet_engine.load_config(
            CONFIG.format("t"), {"weights": None, "save_dir": str(tmp_path / "none")}))
    # the tool: a missing config or weights file is one line on stderr, exit status 2
    from paddle_pale.utils.tool import call_tool
    export_det = _tool("export_det")
    for argv in (["-c", str(tmp_path / "missing.yml")],
                 ["-c", CONFIG.format("t"), "-o", *_as_options(exported),
                  f"weights={tmp_path / 'missing'}"]):
        with pytest.raises(SystemExit) as exit_info:
            call_tool(export_det.main, argv + ["--output_dir", str(tmp_path / "out")],
                      prog="export_det.py")
        assert exit_info.value.code == 2
        assert "missing" in capsys.readouterr().err
