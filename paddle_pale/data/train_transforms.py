"""Training augmentation of the DeiT/Swin recipe, from paddle.vision.transforms pieces
plus RandAugment: random resized crop, flip, RandAugment, normalize, random erasing."""
import numpy as np
from paddle.vision import transforms as T

from .randaugment import RandAugment

__all__ = ["build_train_transform"]


def _to_float_hwc(image):
    return np.asarray(image, dtype="float32")


def build_train_transform(input_size=224, scale=(0.08, 1.0), ratio=(0.75, 1.3333333),
                          interpolation="bicubic", hflip=0.5, randaugment=None,
                          random_erasing=0.0, mean=(0.485, 0.456, 0.406),
                          std=(0.229, 0.224, 0.225)):
    """PIL image in, ``[3, S, S]`` float32 array out.

    Args:
        randaugment: None, or dict of :class:`RandAugment` arguments.
        random_erasing: probability of erasing one box with per-pixel Gaussian noise
            (after normalization, as timm's ``remode=pixel``).
    """
    ops = [T.RandomResizedCrop(input_size, scale=tuple(scale), ratio=tuple(ratio),
                               interpolation=interpolation)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if randaugment:
        ops.append(RandAugment(**randaugment))
    ops += [
        _to_float_hwc,
        T.Normalize([255.0 * m for m in mean], [255.0 * s for s in std], data_format="HWC"),
    ]
    if random_erasing > 0:
        ops.append(T.RandomErasing(prob=random_erasing, value="random"))
    ops.append(T.Transpose())  # HWC -> CHW
    return T.Compose(ops)
