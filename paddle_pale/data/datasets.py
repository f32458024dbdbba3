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

from .transforms import ImageDecodeError, load_image

__all__ = ["ClassificationDataset", "ImageFolderDataset", "ImageListDataset", "scan_image_folder",
           "IGNORE_LABEL", "IMAGE_EXTENSIONS", "MAX_CONSECUTIVE_FAILURES"]

logger = logging.getLogger("paddle_pale")

IGNORE_LABEL = -1
# so many unreadable files in a row means a broken data set, not a bad file
MAX_CONSECUTIVE_FAILURES = 16
# file types of an image folder (paddle.vision's DatasetFolder list)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ClassificationDataset(Dataset):
    """``samples``: list of ``(path, label)``; items are ``(image, label, num_skipped)``.

    Args:
        samples: ``(path, label)`` pairs.
        transform: PIL image -> ``[3, H, W]`` float32 array, or uint8 (the training
            loader's, normalized per batch on the device).
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
        image = load_image(path)  # ImageDecodeError: skipped (see the module docstring)
        try:
            image = self.transform(image)
        except Exception as error:  # a preprocessing bug or setting, not a bad file
            raise RuntimeError(f"preprocessing failed on {path!r} ({type(error).__name__}: "
                               f"{error}); check the DataLoader transforms settings") from error
        image = np.asarray(image)
        if image.dtype != np.uint8:
            image = image.astype("float32", copy=False)
        return image, np.int64(label)

    def __getitem__(self, index):
        skipped = 0
        while True:
            try:
                fields = self._load((index + skipped) % len(self.samples))
                return (*fields, np.int64(skipped))
            except ImageDecodeError as error:
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
            except ImageDecodeError:
                continue
        raise RuntimeError("no readable sample among the first images of the data set")


def _is_hidden(name):
    return name.startswith(".")


def _image_files(folder):
    """Sorted image files under ``folder`` (recursively), hidden files and folders left
    out (``.ipynb_checkpoints`` holds copies of the images beside it)."""
    found = []
    for parent, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(f for f in folders if not _is_hidden(f))
        found += [os.path.join(parent, f) for f in sorted(files)
                  if not _is_hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def scan_image_folder(root):
    """The classes of ``root/<class>/<image>``: sorted folder names, hidden folders and
    folders without images left out. -> ``(classes, {class: [image paths]}, ignored)``
    where ``ignored`` names the folders left out and why."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist "
                                "(expected root/<class>/<image> files)")
    classes, files, ignored = [], {}, []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not os.path.isdir(path):
            continue
        if _is_hidden(name):
            ignored.append(f"{name} (hidden)")
            continue
        images = _image_files(path)
        if not images:
            ignored.append(f"{name} (no image files)")
            continue
        classes.append(name)
        files[name] = images
    return classes, files, ignored


class ImageFolderDataset(ClassificationDataset):
    """ImageNet layout ``root/<class>/<image>``.

    Without ``classes`` the labels follow the sorted class-folder names (hidden folders
    and folders holding no image left out): the training split defines the class map.
    With ``classes`` (the training map, e.g. from a checkpoint) each folder takes the
    label of its name there, so a validation split may lack classes; a folder whose name
    is not among ``classes`` is an error naming it.
    """

    def __init__(self, root, transform, on_error="replace", classes=None):
        found, files, ignored = scan_image_folder(root)
        if ignored:
            logger.warning("%s: left out folder(s) %s", root, ", ".join(ignored))
        if not found:
            raise ValueError(f"image folder {root!r} has no class folder with images (expected "
                             f"root/<class>/<image> with extensions {', '.join(IMAGE_EXTENSIONS)})")
        if classes is None:
            classes = found
        else:
            classes = list(classes)
            unknown = [name for name in found if name not in classes]
            if unknown:
                raise ValueError(
                    f"class folder(s) {', '.join(map(repr, unknown))} in {root!r} are not among "
                    f"the {len(classes)} classes the model was trained on "
                    f"({_preview(classes)}); remove them from this split or train with them")
        index = {name: label for label, name in enumerate(classes)}
        samples = [(path, index[name]) for name in found for path in files[name]]
        super().__init__(samples, transform, on_error, classes=classes)
        self.folder_classes = found


def _preview(names, limit=10):
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


class ImageListDataset(ClassificationDataset):
    """PaddleClas list file: one ``relative/path label`` per line, paths under ``root``.

    The labels are used as written; a list file names no classes. ``classes`` (the
    training map, when known) bounds them: a label beyond it is an error.
    """

    def __init__(self, root, list_file, transform, on_error="replace", classes=None):
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
                label = int(parts[1])
                if classes is not None and label >= len(classes):
                    raise ValueError(f"{list_file}:{line_number}: label {label} is beyond the "
                                     f"{len(classes)} classes the model was trained on")
                samples.append((os.path.join(root or "", parts[0]), label))
        if not samples:
            raise ValueError(f"list file {list_file!r} has no samples")
        super().__init__(samples, transform, on_error,
                         classes=None if classes is None else list(classes))
