"""Random erasing (Zhong et al. 2020) as timm's ``RandomErasing`` (``timm/data/
random_erasing.py``), which the DeiT / Swin recipes use with ``mode='pixel'``, on a
normalized image: paddle's ``RandomErasing(value="random")`` fills with noise of std 255
on such an image, and draws its box from other ranges."""
import math
import random

import numpy as np

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
    """

    def __init__(self, probability=0.25, min_area=0.02, max_area=1 / 3, min_aspect=0.3,
                 max_aspect=None, mode="pixel"):
        if mode not in ("pixel", "rand", "const"):
            raise ValueError(f"mode must be 'pixel', 'rand' or 'const', got {mode!r}")
        self.probability = probability
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
        self.mode = mode

    def _fill(self, height, width, channels):
        if self.mode == "pixel":
            return np.random.standard_normal((height, width, channels))
        if self.mode == "rand":
            return np.random.standard_normal((1, 1, channels))
        return np.zeros((1, 1, channels))

    def __call__(self, image):
        if random.random() > self.probability:
            return image
        height, width, channels = image.shape
        area = height * width
        for _ in range(10):
            target_area = random.uniform(self.min_area, self.max_area) * area
            aspect = math.exp(random.uniform(*self.log_aspect))
            box_h = int(round(math.sqrt(target_area * aspect)))
            box_w = int(round(math.sqrt(target_area / aspect)))
            if box_w < width and box_h < height:
                top = random.randint(0, height - box_h)
                left = random.randint(0, width - box_w)
                image = np.array(image, copy=True)
                image[top:top + box_h, left:left + box_w] = self._fill(box_h, box_w, channels)
                break
        return image

    def __repr__(self):
        return f"RandomErasing(p={self.probability}, mode={self.mode})"
