import os

import numpy as np
import paddle
import pytest
from PIL import Image

from paddle_pale.data import (IGNORE_LABEL, ImageFolderDataset, ImageListDataset, Mixup,
                              build_eval_transform, build_train_transform)
from paddle_pale.data.demo import write_digits_folder
from paddle_pale.data.randaugment import OPS, RandAugment

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
    out = OPS[name](image, 0.9)
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
