"""Random erasing (Zhong et al. 2020) as timm's ``RandomErasing`` (``timm/data/
random_erasing.py``), which the DeiT / Swin recipes use with ``mode='pixel'``, on a
normalized image: paddle's ``RandomErasing(value="random")`` fills with noise of std 255
on such an image, and draws its box from other ranges."""
import math
import random

import numpy as np
import paddle

__all__ = ["RandomErasing"]


class RandomErasing:
    """With probability ``probability``, erase one box of a normalized HWC float image.

    The box covers a fraction of the image drawn uniformly from [``min_area``,
    ``max_area``] with an aspect ratio (height / width) log-uniform in [``min_aspect``,
    ``max_aspect``] (default ``1 / min_aspect``), at a uniform position; up to 10 draws
    are made for a box that fits inside the image, else nothing is erased. The box is
    filled with per-pixel standard normal noise (``mode="pixel"``), per-channel noise
    (``"rand"``) or zeros (``"const"``): on a normalized image these are in-distribution
    values, not a colour.

    Box draws come from ``rng`` (``random``, ``uniform``, ``randint`` as the ``random``
    module's), by default Python's global generator.
    """

    def __init__(self, probability=0.25, min_area=0.02, max_area=1 / 3, min_aspect=0.3,
                 max_aspect=None, mode="pixel", rng=None):
        if mode not in ("pixel", "rand", "const"):
            raise ValueError(f"mode must be 'pixel', 'rand' or 'const', got {mode!r}")
        self.probability = probability
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
        self.mode = mode
        self.rng = rng

    def _fill(self, height, width, channels):
        if self.mode == "pixel":
            return np.random.standard_normal((height, width, channels))
        if self.mode == "rand":
            return np.random.standard_normal((1, 1, channels))
        return np.zeros((1, 1, channels))

    def draw_box(self, height, width):
        """``(top, left, box_h, box_w)`` to erase in a ``height x width`` image, or None
        (not drawn to erase, or no box fitted): the draws of timm's ``RandomErasing``."""
        rng = random if self.rng is None else self.rng
        if rng.random() > self.probability:
            return None
        area = height * width
        for _ in range(10):
            target_area = rng.uniform(self.min_area, self.max_area) * area
            aspect = math.exp(rng.uniform(*self.log_aspect))
            box_h = int(round(math.sqrt(target_area * aspect)))
            box_w = int(round(math.sqrt(target_area / aspect)))
            if box_w < width and box_h < height:
                top = rng.randint(0, height - box_h)
                left = rng.randint(0, width - box_w)
                return top, left, box_h, box_w
        return None

    def __call__(self, image):
        """One normalized HWC numpy image; a copy when erased."""
        height, width, channels = image.shape
        box = self.draw_box(height, width)
        if box is None:
            return image
        top, left, box_h, box_w = box
        image = np.array(image, copy=True)
        image[top:top + box_h, left:left + box_w] = self._fill(box_h, box_w, channels)
        return image

    def erase_batch(self, images):
        """A normalized ``[B, C, H, W]`` paddle batch, each image erased (or not) as
        :meth:`__call__` erases one, with the same box draws; the noise is drawn on the
        batch's device (timm's ``RandomErasing(device=...)`` in its prefetcher). In place;
        returns ``images``."""
        batch, channels, height, width = images.shape
        for index in range(batch):
            box = self.draw_box(height, width)
            if box is None:
                continue
            top, left, box_h, box_w = box
            shape = {"pixel": [channels, box_h, box_w], "rand": [channels, 1, 1]}.get(
                self.mode)
            fill = (paddle.randn(shape, dtype=images.dtype) if shape else
                    paddle.zeros([channels, 1, 1], dtype=images.dtype))
            images[index, :, top:top + box_h, left:left + box_w] = fill.expand(
                [channels, box_h, box_w])
        return images

    def __repr__(self):
        return f"RandomErasing(p={self.probability}, mode={self.mode})"
