"""The demo data set: scikit-learn's handwritten digits (1,797 8x8 scans, shipped inside
the package, so no download) upsampled and written as an ImageNet-style PNG folder."""
import logging
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

__all__ = ["write_digits_folder", "DIGITS_SPLITS"]

logger = logging.getLogger("paddle_pale")

DIGITS_SPLITS = ("train", "val")


def write_digits_folder(directory, image_size=32, val_fraction=0.2, seed=0):
    """Write ``directory/{train,val}/<digit>/<index>.png`` (grayscale, ``image_size``
    square, bicubic upsampling of the 0..16 scans to 0..255).

    The held-out split is fixed by ``seed`` and stratified per digit. The folder appears
    atomically (written aside, then renamed), so an interrupted run leaves nothing half
    written. Returns the number of images per split.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.RandomState(seed)
    is_val = np.zeros(len(digits.target), bool)
    for digit in np.unique(digits.target):
        members = rng.permutation(np.flatnonzero(digits.target == digit))
        is_val[members[:int(round(val_fraction * len(members)))]] = True
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".digits-", dir=parent)
    try:
        for index, (scan, digit) in enumerate(zip(digits.images, digits.target)):
            split = DIGITS_SPLITS[int(is_val[index])]
            folder = os.path.join(staging, split, str(digit))
            os.makedirs(folder, exist_ok=True)
            pixels = np.clip(scan * (255.0 / 16.0), 0, 255).astype("uint8")
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size),
                                                             Image.BICUBIC)
            image.save(os.path.join(folder, f"{index:04d}.png"))
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = {"train": int((~is_val).sum()), "val": int(is_val.sum())}
    logger.info("wrote the digits data set to %s (%d train / %d val images, %dx%d)",
                directory, counts["train"], counts["val"], image_size, image_size)
    return counts
