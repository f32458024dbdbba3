"""Training augmentation of the DeiT/Swin recipe (timm's ``transforms_imagenet_train``):
random resized crop, flip, RandAugment, normalize, random erasing.

The training loader splits it as timm's prefetcher does: loader workers crop, flip and
augment each image and ship it as ``uint8`` (a quarter of the bytes of a float32 image,
through shared memory); :class:`BatchNormalize` then normalizes and erases a whole batch
on the training device. ``build_train_transform(..., on_device=False)`` keeps the whole
recipe on one image, for use outside the trainer.
"""
import random

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.vision import transforms as T

from ..utils.constants import IMAGENET_MEAN, IMAGENET_STD
from .randaugment import RandAugment
from .random_erasing import RandomErasing
from .transforms import normalize_ops, to_float_hwc

__all__ = ["build_train_transform", "BatchNormalize", "to_uint8_chw"]


def to_uint8_chw(image):
    """PIL image -> ``[3, H, W]`` uint8 array."""
    return np.ascontiguousarray(np.asarray(image, dtype="uint8").transpose(2, 0, 1))


def build_train_transform(input_size=224, scale=(0.08, 1.0), ratio=(0.75, 1.3333333),
                          interpolation="bicubic", hflip=0.5, randaugment=None,
                          random_erasing=0.0, mean=IMAGENET_MEAN,
                          std=IMAGENET_STD, on_device=False):
    """PIL image in, ``[3, S, S]`` float32 array out (``on_device``: uint8, to be
    finished per batch by :class:`BatchNormalize` with the same ``mean``, ``std`` and
    ``random_erasing``).

    Args:
        randaugment: None, or dict of :class:`RandAugment` arguments; its geometric ops
            resample with ``interpolation`` and fill with the ``mean`` pixel, as timm's.
        random_erasing: probability of erasing one box with per-pixel Gaussian noise
            (after normalization, timm's ``RandomErasing(mode='pixel')``).
        on_device: stop before normalization; the result is the augmented ``uint8``
            image, channels first.
    """
    ops = [T.RandomResizedCrop(input_size, scale=tuple(scale), ratio=tuple(ratio),
                               interpolation=interpolation)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if randaugment:
        ops.append(RandAugment(**dict(dict(interpolation=interpolation, mean=mean),
                                      **randaugment)))
    if on_device:
        ops.append(to_uint8_chw)
        return T.Compose(ops)
    ops.append(to_float_hwc)
    normalize, to_chw = normalize_ops(mean, std)
    ops.append(normalize)
    if random_erasing > 0:  # on the normalized image (timm's remode=pixel), before CHW
        ops.append(RandomErasing(random_erasing, mode="pixel"))
    ops.append(to_chw)
    return T.Compose(ops)


class BatchNormalize:
    """The end of :func:`build_train_transform` on a batch, on its device: ``uint8``
    ``[B, 3, H, W]`` in, ``(x / 255 - mean) / std`` float32 out, then random erasing of
    each image (:meth:`RandomErasing.erase_batch`, the same box draws as per image).
    timm's ``PrefetchLoader`` does the same on the GPU.

    The boxes come from its own generator ``rng`` (seeded by ``seed``): the loader's
    thread draws crops from Python's global one at the same time (as :class:`Mixup`).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, random_erasing=0.0, seed=0):
        self.mean = [255.0 * m for m in mean]
        self.std = [255.0 * s for s in std]
        self.rng = random.Random(seed)
        self.erasing = (RandomErasing(random_erasing, mode="pixel", rng=self.rng)
                        if random_erasing > 0 else None)

    def __call__(self, images):
        if images.dtype != paddle.uint8:
            raise ValueError(f"BatchNormalize expects uint8 images, got "
                             f"{str(images.dtype).split('.')[-1]}")
        # (x - mean) / std per channel as one op: inference batch norm with running mean
        # ``mean`` and variance ``std ** 2`` (Paddle's CPU broadcasting subtract and
        # divide take 3-5x longer; on a GPU either is negligible)
        mean = paddle.to_tensor(self.mean, dtype="float32")
        variance = paddle.to_tensor([s * s for s in self.std], dtype="float32")
        images = F.batch_norm(images.astype("float32"), mean, variance, training=False,
                              epsilon=0.0)
        if self.erasing is not None:
            images = self.erasing.erase_batch(images)
        return images

    @classmethod
    def from_config(cls, transforms_cfg, seed=0):
        """From ``DataLoader.Train.transforms``."""
        return cls(transforms_cfg["mean"], transforms_cfg["std"],
                   transforms_cfg["random_erasing"], seed)
