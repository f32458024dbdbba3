"""Classification data sets: ImageNet folder layout and PaddleClas list files.

A sample that cannot be decoded is logged with its path and skipped, never a crash
mid-epoch. Every item carries a third field, the number of files skipped to produce
it, which the trainer sums into the per-epoch count:

* ``on_error="replace"`` (training): the next readable sample takes its place, so every
  batch stays full and data-parallel ranks stay in step;
* ``on_error="mask"`` (validation): a zero image with label ``-1`` takes its place, and
  metrics leave label ``-1`` out, so no other image is counted twice.
"""
import logging
import os

import numpy as np
from paddle.io import Dataset
from paddle.vision.datasets import DatasetFolder

from .transforms import load_image

__all__ = ["ClassificationDataset", "ImageFolderDataset", "ImageListDataset",
           "IGNORE_LABEL", "MAX_CONSECUTIVE_FAILURES"]

logger = logging.getLogger("paddle_pale")

IGNORE_LABEL = -1
# so many unreadable files in a row means a broken data set, not a bad file
MAX_CONSECUTIVE_FAILURES = 16


class ClassificationDataset(Dataset):
    """``samples``: list of ``(path, label)``; items are ``(image, label, num_skipped)``.

    Args:
        samples: ``(path, label)`` pairs.
        transform: PIL image -> ``[3, H, W]`` float32 array.
        on_error: ``"replace"`` or ``"mask"`` (see the module docstring).
        classes: class names, index = label (optional).
    """

    def __init__(self, samples, transform, on_error="replace", classes=None):
        if on_error not in ("replace", "mask"):
            raise ValueError(f"on_error must be 'replace' or 'mask', got {on_error!r}")
        if not samples:
            raise ValueError("data set has no samples")
        self.samples = list(samples)
        self.transform = transform
        self.on_error = on_error
        self.classes = classes

    def __len__(self):
        return len(self.samples)

    def _load(self, index):
        path, label = self.samples[index]
        image = self.transform(load_image(path))
        return np.asarray(image, dtype="float32"), np.int64(label)

    def __getitem__(self, index):
        skipped = 0
        while True:
            try:
                image, label = self._load((index + skipped) % len(self.samples))
                return image, label, np.int64(skipped)
            except (ValueError, OSError) as error:
                logger.warning("skipping unreadable sample: %s", error)
                skipped += 1
                if self.on_error == "mask":
                    image = np.zeros_like(self._reference_image())
                    return image, np.int64(IGNORE_LABEL), np.int64(skipped)
                if skipped >= min(MAX_CONSECUTIVE_FAILURES, len(self.samples)):
                    raise RuntimeError(
                        f"{skipped} consecutive unreadable samples from index {index} "
                        f"(last: {error}); the data set looks broken") from error

    def _reference_image(self):
        # shape of a good sample, for the placeholder of a masked one
        for offset in range(min(MAX_CONSECUTIVE_FAILURES, len(self.samples))):
            try:
                return self._load(offset)[0]
            except (ValueError, OSError):
                continue
        raise RuntimeError("no readable sample among the first images of the data set")


class ImageFolderDataset(ClassificationDataset):
    """ImageNet layout ``root/<class>/<image>``; labels follow sorted class names."""

    def __init__(self, root, transform, on_error="replace"):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist "
                                    "(expected root/<class>/<image> files)")
        index = DatasetFolder(root)  # paddle's scan: sorted classes and files
        super().__init__(index.samples, transform, on_error, classes=index.classes)


class ImageListDataset(ClassificationDataset):
    """PaddleClas list file: one ``relative/path label`` per line, paths under ``root``."""

    def __init__(self, root, list_file, transform, on_error="replace"):
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"list file {list_file!r} does not exist")
        samples = []
        with open(list_file) as f:
            for line_number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.rsplit(maxsplit=1)
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                    raise ValueError(f"{list_file}:{line_number}: expected 'path label' with "
                                     f"a non-negative integer label, got {line!r}")
                samples.append((os.path.join(root or "", parts[0]), int(parts[1])))
        if not samples:
            raise ValueError(f"list file {list_file!r} has no samples")
        super().__init__(samples, transform, on_error)
