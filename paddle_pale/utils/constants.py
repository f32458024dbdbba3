"""Constants more than one layer needs. Ground layer: imports nothing of the package."""

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

# per-channel RGB mean and std of ImageNet-1K on a 0..1 scale
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
