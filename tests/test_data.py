import os
import random

import numpy as np
import paddle
import pytest
from PIL import Image

from paddle_pale.data import (IGNORE_LABEL, ImageFolderDataset, ImageListDataset, Mixup,
                              build_eval_transform, build_train_transform)
from paddle_pale.data.demo import write_digits_folder
from paddle_pale.data import random_erasing as random_erasing_module
from paddle_pale.data.randaugment import OPS, RandAugment, apply_op, op_argument
from paddle_pale.data.random_erasing import RandomErasing

from engine_helpers import write_image_folder

EVAL = build_eval_transform(16, crop_pct=1.0)


def test_folder_and_list_file_give_the_same_samples(tmp_path):
    samples = write_image_folder(tmp_path / "train", num_classes=3, per_class=2)
    list_file = tmp_path / "train_list.txt"
    list_file.write_text("".join(f"{path} {label}\n" for path, label in samples) + "\n")
    folder = ImageFolderDataset(str(tmp_path / "train"), EVAL)
    listed = ImageListDataset(str(tmp_path / "train"), str(list_file), EVAL)
    assert folder.classes == ["class_0", "class_1", "class_2"]
    assert [(os.path.relpath(p, tmp_path / "train"), l) for p, l in folder.samples] == samples
    assert len(listed) == len(folder) == 6
    for index in range(6):
        image_a, label_a, skipped_a = folder[index]
        image_b, label_b, skipped_b = listed[index]
        assert image_a.shape == (3, 16, 16) and image_a.dtype == np.float32
        np.testing.assert_array_equal(image_a, image_b)
        assert label_a == label_b == samples[index][1] and skipped_a == skipped_b == 0


def test_list_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("a.jpg 0\nb.jpg cat\n")
    with pytest.raises(ValueError, match=r"list.txt:2: expected 'path label'.*'b.jpg cat'"):
        ImageListDataset(str(tmp_path), str(bad), EVAL)
    with pytest.raises(FileNotFoundError, match="list file"):
        ImageListDataset(str(tmp_path), str(tmp_path / "missing.txt"), EVAL)
    with pytest.raises(FileNotFoundError, match="root/<class>/<image>"):
        ImageFolderDataset(str(tmp_path / "missing"), EVAL)


def _corrupt(tmp_path):
    samples = write_image_folder(tmp_path / "data", num_classes=2, per_class=3)
    broken = tmp_path / "data" / samples[1][0]
    broken.write_bytes(b"not a jpeg at all")
    return samples, str(broken)


def test_corrupt_image_is_logged_and_replaced_in_training(tmp_path, caplog):
    samples, broken = _corrupt(tmp_path)
    dataset = ImageFolderDataset(str(tmp_path / "data"), EVAL, on_error="replace")
    with caplog.at_level("WARNING", logger="paddle_pale"):
        image, label, skipped = dataset[1]
    assert broken in caplog.text
    assert skipped == 1
    next_image, next_label, _ = dataset[2]  # the next readable sample takes its place
    np.testing.assert_array_equal(image, next_image)
    assert label == next_label


def test_corrupt_image_is_masked_in_validation_and_counted_by_the_loader(tmp_path):
    _, _ = _corrupt(tmp_path)
    dataset = ImageFolderDataset(str(tmp_path / "data"), EVAL, on_error="mask")
    loader = paddle.io.DataLoader(dataset, batch_size=4, num_workers=0)
    labels, skipped = [], 0
    for images, batch_labels, batch_skipped in loader:
        assert images.shape[1:] == [3, 16, 16]
        labels += batch_labels.numpy().tolist()
        skipped += int(batch_skipped.sum())
    assert labels == [0, IGNORE_LABEL, 0, 1, 1, 1]
    assert skipped == 1


def test_a_broken_data_set_is_an_error_not_an_endless_loop(tmp_path):
    samples = write_image_folder(tmp_path / "data", num_classes=1, per_class=2)
    for path, _ in samples:
        (tmp_path / "data" / path).write_bytes(b"junk")
    dataset = ImageFolderDataset(str(tmp_path / "data"), EVAL)
    with pytest.raises(RuntimeError, match="consecutive unreadable samples"):
        dataset[0]


def test_train_transform_shape_and_normalisation():
    image = Image.fromarray(np.full((40, 30, 3), 128, "uint8"))
    plain = build_train_transform(24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = plain(image)
    assert out.shape == (3, 24, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, (128 / 255 - 0.5) / 0.5, atol=1e-5)
    erased = build_train_transform(24, random_erasing=1.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert not np.allclose(erased(image), (128 / 255 - 0.5) / 0.5)  # noise box pasted


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_randaugment_op_keeps_size_and_mode(name):
    image = Image.fromarray(np.random.randint(0, 256, (20, 28, 3), dtype="uint8"))
    out = apply_op(image, name, op_argument(name, 9))
    assert out.size == image.size and out.mode == "RGB"


def test_randaugment_with_zero_probability_is_the_identity():
    image = Image.fromarray(np.random.randint(0, 256, (8, 8, 3), dtype="uint8"))
    out = RandAugment(num_ops=2, magnitude=9, prob=0.0)(image)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(magnitude=11)


def test_mixup_mixes_images_and_targets_with_the_same_weight():
    images = paddle.to_tensor(np.random.rand(4, 3, 8, 8).astype("float32"))
    labels = paddle.to_tensor([0, 1, 2, 3])
    mixup = Mixup(4, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)
    mixed, targets = mixup(images, labels)
    lam = float(targets[0, 0])  # sample 0 is mixed with sample 3
    np.testing.assert_allclose(mixed.numpy(), lam * images.numpy()
                               + (1 - lam) * images.numpy()[::-1], atol=1e-6)
    np.testing.assert_allclose(targets.numpy().sum(1), 1.0, atol=1e-6)
    assert float(targets[0, 3]) == pytest.approx(1 - lam, abs=1e-6)


def test_cutmix_target_weight_is_the_pasted_area():
    images = paddle.zeros([2, 1, 10, 10])
    images[1] = 1.0
    mixup = Mixup(2, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)
    mixed, targets = mixup(images, paddle.to_tensor([0, 1]))
    pasted = float(mixed[0].mean())  # fraction of sample 0 now showing sample 1
    # label smoothing 0.1 over 2 classes: a pure label is 0.95 / 0.05
    expected = (1 - pasted) * 0.95 + pasted * 0.05
    assert float(targets[0, 0]) == pytest.approx(expected, abs=1e-6)


def test_digits_demo_folder_is_a_stratified_fixed_split(tmp_path):
    counts = write_digits_folder(str(tmp_path / "digits"), image_size=16)
    assert counts["train"] + counts["val"] == 1797
    assert abs(counts["val"] - 0.2 * 1797) < 10
    val = ImageFolderDataset(str(tmp_path / "digits" / "val"), EVAL)
    assert val.classes == [str(d) for d in range(10)]
    per_class = np.bincount([label for _, label in val.samples])
    assert per_class.min() >= 35 and per_class.max() <= 37
    with Image.open(val.samples[0][0]) as image:
        assert image.size == (16, 16)
    names = {os.path.basename(p) for p, _ in val.samples}
    again = tmp_path / "again"
    write_digits_folder(str(again), image_size=16)
    assert names == {os.path.basename(p) for p, _ in
                     ImageFolderDataset(str(again / "val"), EVAL).samples}


def test_a_preprocessing_error_is_not_reported_as_unreadable_files(tmp_path):
    # a wrong-length mean used to read "16 consecutive unreadable samples ... broken"
    write_image_folder(tmp_path / "data", num_classes=1, per_class=2)
    bad_mean = build_eval_transform(16, crop_pct=1.0, mean=(0.5, 0.5), std=(0.2, 0.2))
    dataset = ImageFolderDataset(str(tmp_path / "data"), bad_mean)
    with pytest.raises(RuntimeError, match=r"preprocessing failed on .*img_0.JPEG.*check the "
                                           r"DataLoader transforms settings") as error:
        dataset[0]
    assert "unreadable" not in str(error.value)


def test_class_map_of_a_folder_and_a_list_file(tmp_path):
    samples = write_image_folder(tmp_path / "train", num_classes=3, per_class=1)
    val = ImageFolderDataset(str(tmp_path / "train"), EVAL,
                             classes=["class_0", "class_1", "class_2", "class_3"])
    assert val.folder_classes == ["class_0", "class_1", "class_2"]
    assert [label for _, label in val.samples] == [0, 1, 2]
    emptied = tmp_path / "train" / "class_1"
    for name in os.listdir(emptied):
        os.remove(emptied / name)
    # class_1 now holds no image: left out, and class_2 keeps its training label
    val = ImageFolderDataset(str(tmp_path / "train"), EVAL,
                             classes=["class_0", "class_1", "class_2"])
    assert [label for _, label in val.samples] == [0, 2]
    list_file = tmp_path / "list.txt"
    list_file.write_text("".join(f"{p} {l}\n" for p, l in samples[:1]) + "class_2/img_0.JPEG 5\n")
    with pytest.raises(ValueError, match=r"list.txt:2: label 5 is beyond the 3 classes"):
        ImageListDataset(str(tmp_path / "train"), str(list_file), EVAL, classes=["a", "b", "c"])


# ------------------------------------------- the recipe timm's names stand for
# timm/data/auto_augment.py, _RAND_INCREASING_TRANSFORMS (the "inc1" of rand-m9-mstd0.5-inc1)
TIMM_RAND_INCREASING = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                        "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing",
                        "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
                        "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
ENHANCE = {"positive": (1.0, 1.45, 1.81, 1.9), "negative": (1.0, 0.55, 0.19, 0.1)}
# timm's LEVEL_TO_ARG of each op at magnitudes 0, 5, 9, 10: (positive, negative) branch
TIMM_ARGUMENTS = {
    "AutoContrast": ((None,) * 4, None), "Equalize": ((None,) * 4, None),
    "Invert": ((None,) * 4, None),
    "Rotate": ((0.0, 15.0, 27.0, 30.0), (0.0, -15.0, -27.0, -30.0)),        # degrees
    "PosterizeIncreasing": ((4, 2, 1, 0), None),                            # bits kept
    "SolarizeIncreasing": ((256, 128, 26, 0), None),                        # threshold
    "SolarizeAdd": ((0, 55, 99, 110), None),                                # added
    "ColorIncreasing": (ENHANCE["positive"], ENHANCE["negative"]),
    "ContrastIncreasing": (ENHANCE["positive"], ENHANCE["negative"]),
    "BrightnessIncreasing": (ENHANCE["positive"], ENHANCE["negative"]),
    "SharpnessIncreasing": (ENHANCE["positive"], ENHANCE["negative"]),
    "ShearX": ((0.0, 0.15, 0.27, 0.3), (0.0, -0.15, -0.27, -0.3)),
    "ShearY": ((0.0, 0.15, 0.27, 0.3), (0.0, -0.15, -0.27, -0.3)),
    "TranslateXRel": ((0.0, 0.225, 0.405, 0.45), (0.0, -0.225, -0.405, -0.45)),  # of width
    "TranslateYRel": ((0.0, 0.225, 0.405, 0.45), (0.0, -0.225, -0.405, -0.45)),
}


def test_randaugment_has_the_ops_of_timms_increasing_set():
    assert list(OPS) == TIMM_RAND_INCREASING


@pytest.mark.parametrize("name", TIMM_RAND_INCREASING)
def test_randaugment_argument_of_each_op_at_magnitudes_0_5_9_10(name):
    positive, negative = TIMM_ARGUMENTS[name]
    for magnitude, expected in zip((0, 5, 9, 10), positive):
        assert op_argument(name, magnitude) == pytest.approx(expected), magnitude
    for magnitude, expected in zip((0, 5, 9, 10), negative or positive):
        assert op_argument(name, magnitude, negative=True) == pytest.approx(expected)


def test_randaugment_ops_at_magnitude_9_against_numpy():
    pixels = np.random.RandomState(0).randint(0, 256, (6, 5, 3)).astype("uint8")
    image = Image.fromarray(pixels)
    at9 = lambda name: np.asarray(apply_op(image, name, op_argument(name, 9)))  # noqa: E731
    np.testing.assert_array_equal(at9("PosterizeIncreasing"), pixels & 0b10000000)  # 1 bit
    np.testing.assert_array_equal(at9("SolarizeIncreasing"),
                                  np.where(pixels >= 26, 255 - pixels, pixels))
    np.testing.assert_array_equal(at9("SolarizeAdd"),
                                  np.where(pixels < 128, np.minimum(255, pixels + 99), pixels))


def _recorded_resampling(monkeypatch, augment, calls=60):
    seen = []
    # where resample sits among the positional arguments (rotate calls transform so)
    for method, position in (("rotate", 1), ("transform", 3)):
        real = getattr(Image.Image, method)

        def recording(self, *args, real=real, position=position, **kwargs):
            seen.append(kwargs.get("resample", args[position] if len(args) > position
                                   else "default"))
            return real(self, *args, **kwargs)
        monkeypatch.setattr(Image.Image, method, recording)
    image = Image.fromarray(np.random.RandomState(1).randint(0, 256, (12, 12, 3), "uint8"))
    random.seed(0)
    for _ in range(calls):
        augment(image)
    monkeypatch.undo()
    return seen


def test_randaugment_resamples_with_the_training_interpolation(monkeypatch):
    recipe = build_train_transform(16, interpolation="bicubic", randaugment={
        "num_ops": 2, "magnitude": 9, "magnitude_std": 0.5}, mean=(0.5, 0.25, 0.0))
    augment, = [t for t in recipe.transforms if isinstance(t, RandAugment)]
    seen = _recorded_resampling(monkeypatch, augment)
    assert seen and set(seen) == {Image.BICUBIC}
    # the fill of geometric ops is the mean pixel, round(255 * mean)
    assert augment.fill == (128, 64, 0)
    white = Image.new("RGB", (9, 9), (255, 255, 255))
    corner = apply_op(white, "Rotate", 30.0, Image.BICUBIC, augment.fill).getpixel((0, 0))
    assert corner == (128, 64, 0)
    # timm's "random": bilinear or bicubic, drawn per op
    seen = _recorded_resampling(monkeypatch, RandAugment(interpolation="random"))
    assert set(seen) == {Image.BILINEAR, Image.BICUBIC}


class ScriptedDraws:
    """Stands in for the ``random`` module: returns scripted values, records calls."""

    def __init__(self, *values):
        self.values, self.calls = list(values), []

    def __getattr__(self, name):
        def draw(*args):
            self.calls.append((name,) + args)
            return self.values.pop(0)
        return draw


def test_random_erasing_draws_timms_box(monkeypatch):
    import math
    draws = ScriptedDraws(0.1, 0.1, 0.0, 3, 5)  # erase; area 10%; aspect 1; top 3; left 5
    monkeypatch.setattr(random_erasing_module, "random", draws)
    out = RandomErasing(0.25, mode="pixel")(np.zeros((20, 30, 3), "float32"))
    assert draws.calls == [("random",), ("uniform", 0.02, 1 / 3),
                           ("uniform", math.log(0.3), math.log(1 / 0.3)),
                           ("randint", 0, 12), ("randint", 0, 22)]  # 8x8 box: sqrt(60)
    erased = out != 0
    assert erased[3:11, 5:13].all() and erased.sum() == 8 * 8 * 3
    # drawn above the probability: untouched
    monkeypatch.setattr(random_erasing_module, "random", ScriptedDraws(0.3))
    image = np.ones((20, 30, 3), "float32")
    assert RandomErasing(0.25)(image) is image


def test_random_erasing_fills_normalized_images_with_standard_normal_noise():
    # timm's mode='pixel' on a normalized image: per-pixel N(0, 1), not a colour
    image = Image.fromarray(np.full((200, 200, 3), 128, "uint8"))
    transform = build_train_transform(200, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                                      random_erasing=1.0, mean=(0.5,) * 3, std=(0.5,) * 3)
    random.seed(3)
    np.random.seed(3)
    out = transform(image)
    noise = out[out != np.float32((128 / 255 - 0.5) / 0.5)]
    assert noise.size >= 0.02 * out.size
    assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1.0) < 0.05


def test_mixup_draws_as_timm_and_pastes_a_clipped_box():
    class Draws:
        calls = []
        values = {"rand": [0.0, 0.1], "beta": [0.64], "randint": [2, 9]}

        def __getattr__(self, name):
            def draw(*args):
                self.calls.append((name,) + args)
                return self.values[name].pop(0)
            return draw
    images = paddle.concat([paddle.zeros([1, 1, 10, 10]), paddle.ones([1, 1, 10, 10])])
    mixup = Mixup(2, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.0)
    mixup.rng = Draws()
    mixed, targets = mixup(images, paddle.to_tensor([0, 1]))
    # mix (0.0 < prob 1), CutMix (0.1 < switch 0.5), lam ~ Beta(1, 1), centre (2, 9)
    assert mixup.rng.calls == [("rand",), ("rand",), ("beta", 1.0, 1.0), ("randint", 10),
                               ("randint", 10)]
    expected = np.zeros((10, 10), "float32")
    expected[0:5, 6:10] = 1.0  # side 0.6 * 10 = 6 around (2, 9), clipped at the border
    np.testing.assert_array_equal(mixed.numpy()[0, 0], expected)
    # lam corrected to the pasted area: 1 - 20 / 100
    np.testing.assert_allclose(targets.numpy()[0], [0.8, 0.2], atol=1e-6)
    with pytest.raises(ValueError, match="batch size must be even, got 3"):
        mixup(paddle.zeros([3, 1, 4, 4]), paddle.to_tensor([0, 1, 0]))
