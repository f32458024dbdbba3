"""Training augmentation of the DeiT/Swin recipe (timm's ``transforms_imagenet_train``):
random resized crop, flip, RandAugment, normalize, random erasing."""
from paddle.vision import transforms as T

from ..utils.constants import IMAGENET_MEAN, IMAGENET_STD
from .randaugment import RandAugment
from .random_erasing import RandomErasing
from .transforms import normalize_ops, to_float_hwc

__all__ = ["build_train_transform"]


def build_train_transform(input_size=224, scale=(0.08, 1.0), ratio=(0.75, 1.3333333),
                          interpolation="bicubic", hflip=0.5, randaugment=None,
                          random_erasing=0.0, mean=IMAGENET_MEAN,
                          std=IMAGENET_STD):
    """PIL image in, ``[3, S, S]`` float32 array out.

    Args:
        randaugment: None, or dict of :class:`RandAugment` arguments; its geometric ops
            resample with ``interpolation`` and fill with the ``mean`` pixel, as timm's.
        random_erasing: probability of erasing one box with per-pixel Gaussian noise
            (after normalization, timm's ``RandomErasing(mode='pixel')``).
    """
    ops = [T.RandomResizedCrop(input_size, scale=tuple(scale), ratio=tuple(ratio),
                               interpolation=interpolation)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if randaugment:
        ops.append(RandAugment(**dict(dict(interpolation=interpolation, mean=mean),
                                      **randaugment)))
    ops.append(to_float_hwc)
    normalize, to_chw = normalize_ops(mean, std)
    ops.append(normalize)
    if random_erasing > 0:  # on the normalized image (timm's remode=pixel), before CHW
        ops.append(RandomErasing(random_erasing, mode="pixel"))
    ops.append(to_chw)
    return T.Compose(ops)
