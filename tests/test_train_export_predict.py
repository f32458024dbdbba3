"""The trainer's checkpoint, exported, classifies image files as validation scored them."""
import numpy as np
import paddle
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.engine import Engine
from paddle_pale.export import export
from paddle_pale.inference import ImageClassifier
from paddle_pale.engine.config import load_config


def test_exported_checkpoint_predicts_like_validation(tmp_path):
    samples = write_image_folder(tmp_path / "data", per_class=6)
    engine = Engine(load_config(tiny_config(tmp_path, tmp_path / "data"),
                                ["Global.epochs=3",
                                 "DataLoader.Train.transforms.input_size=32",
                                 "DataLoader.Eval.transforms.input_size=32"]), mode="train")
    engine.train()
    expected = engine.evaluate()  # the final weights, which `latest` holds

    prefix = str(tmp_path / "export" / "pale")
    export("inference", str(tmp_path / "out" / "latest"), prefix)
    classifier = ImageClassifier(prefix)
    paths = [str(tmp_path / "data" / path) for path, _ in samples]
    labels = np.array([label for _, label in samples])
    predictions = classifier.predict(paths, k=1, batch_size=5)
    top1 = np.array([p["class_ids"][0] for p in predictions])

    assert len(predictions) == len(samples) == expected["count"]
    assert np.mean(top1 == labels) == pytest.approx(expected["top1"])
    for p in predictions:
        assert 0.0 <= p["probs"][0] <= 1.0
    # the class names travel from the training folders through the export
    assert classifier.meta["classes"] == ["class_0", "class_1", "class_2"]
    assert [p["classes"][0] for p in predictions] == [f"class_{i}" for i in top1]

    # same pixels as validation fed the model, and the same logits out
    images = np.concatenate([batch[0].numpy() for batch in engine.eval_loader])
    np.testing.assert_allclose(classifier.preprocess(paths), images, atol=1e-6)
    engine.model.eval()
    with paddle.no_grad():
        expected_logits = engine.model(paddle.to_tensor(images)).numpy()
    np.testing.assert_allclose(classifier.logits(images), expected_logits, atol=1e-4, rtol=0)
