"""The training loader: uint8 batches from the workers through shared memory, normalized
and erased per batch on the device (timm's prefetcher), and the trainer's reader_cost /
batch_cost."""
import random

import numpy as np
import paddle
import pytest
from PIL import Image

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.data import BatchNormalize, build_train_transform
from paddle_pale.data.builder import build_dataloader, shared_memory_status
from paddle_pale.data.random_erasing import RandomErasing
from paddle_pale.engine import Engine
from paddle_pale.engine.config import load_config

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(seed=0, size=(40, 30)):
    pixels = np.random.RandomState(seed).randint(0, 256, size + (3,), dtype="uint8")
    return Image.fromarray(pixels)


@pytest.mark.parametrize("randaugment", [None, {"num_ops": 2, "magnitude": 9}])
def test_uint8_images_normalized_per_batch_equal_the_per_image_recipe(randaugment):
    options = dict(input_size=24, randaugment=randaugment, mean=MEAN, std=STD)
    on_host, on_device = build_train_transform(**options), build_train_transform(
        **options, on_device=True)
    images = [_image(seed) for seed in range(3)]
    random.seed(5)
    np.random.seed(5)
    expected = np.stack([on_host(image) for image in images])
    random.seed(5)
    np.random.seed(5)
    shipped = np.stack([on_device(image) for image in images])
    assert shipped.dtype == np.uint8 and shipped.shape == (3, 3, 24, 24)
    assert shipped.nbytes * 4 == expected.nbytes
    out = BatchNormalize(MEAN, STD)(paddle.to_tensor(shipped))
    assert out.dtype == paddle.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_batch_erasing_erases_the_boxes_of_per_image_erasing_with_normal_noise():
    images = np.zeros((6, 3, 40, 50), "float32")  # a normalized batch, CHW
    per_image = RandomErasing(0.5, mode="pixel", rng=random.Random(11))
    per_image = np.stack([per_image(image.transpose(1, 2, 0)).transpose(2, 0, 1)
                          for image in images])
    batch = RandomErasing(0.5, mode="pixel", rng=random.Random(11)).erase_batch(
        paddle.to_tensor(images)).numpy()
    np.testing.assert_array_equal(batch != 0, per_image != 0)  # the same boxes
    assert 0 < (batch != 0).any(axis=(1, 2, 3)).sum() < 6  # some images erased, not all
    noise = batch[batch != 0]
    assert noise.size > 2000 and abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1


def test_batch_normalize_refuses_float_batches():
    with pytest.raises(ValueError, match="expects uint8 images, got float32"):
        BatchNormalize()(paddle.zeros([1, 3, 4, 4]))


def test_shared_memory_is_checked_and_a_fallback_says_why(tmp_path):
    ok, reason = shared_memory_status(1000, 2, shm_dir=str(tmp_path))
    assert ok, reason
    ok, reason = shared_memory_status(2 ** 60, 2, shm_dir=str(tmp_path))
    assert not ok and "MiB free, 2 worker(s) need about" in reason
    assert shared_memory_status(1000, 2, shm_dir=str(tmp_path / "none"))[0] is False
    assert shared_memory_status(1000, 0)[0] is False


def test_worker_loader_ships_uint8_and_the_trainer_logs_reader_and_batch_cost(tmp_path):
    write_image_folder(tmp_path / "data")
    config = load_config(tiny_config(tmp_path, tmp_path / "data"), [
        "Global.epochs=1", "DataLoader.Train.num_workers=1",
        "DataLoader.Train.transforms.random_erasing=0.5"])
    train_cfg = config["DataLoader"]["Train"]
    loader = build_dataloader(train_cfg, "Train")
    images, labels, skipped = next(iter(loader))
    assert images.dtype == paddle.uint8 and images.shape == [4, 3, 16, 16]
    engine = Engine(config)
    engine.train()
    log = (tmp_path / "out" / "train.log").read_text()
    assert "shared memory off" not in log
    lines = [line for line in log.splitlines() if "iter 3/6" in line]
    assert len(lines) == 1 and "reader_cost" in lines[0] and "batch_cost" in lines[0]
