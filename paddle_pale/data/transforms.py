"""Evaluation preprocessing, shared by validation in training and by inference tools."""
import numpy as np
from paddle.vision import transforms as T
from PIL import Image

__all__ = ["build_eval_transform", "load_image"]


def load_image(path):
    """Decode an image file to an RGB PIL image; ValueError naming the file on failure."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {path!r}: {error}") from error


class _ToNormalizedCHW:
    """PIL/HWC uint8 -> CHW float32, ``(x / 255 - mean) / std``."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, "float32").reshape(3, 1, 1)
        self.std = np.asarray(std, "float32").reshape(3, 1, 1)

    def __call__(self, image):
        array = np.asarray(image, dtype="float32").transpose(2, 0, 1) / 255.0
        return (array - self.mean) / self.std


def build_eval_transform(input_size=224, crop_pct=0.875, mean=(0.485, 0.456, 0.406),
                         std=(0.229, 0.224, 0.225), interpolation="bicubic"):
    """Resize the short side to ``input_size / crop_pct``, center-crop ``input_size``,
    normalize; PIL image in, ``[3, S, S]`` float32 array out."""
    resize = int(round(input_size / crop_pct))
    return T.Compose([
        T.Resize(resize, interpolation=interpolation),
        T.CenterCrop(input_size),
        _ToNormalizedCHW(mean, std),
    ])
