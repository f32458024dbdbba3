"""Evaluation preprocessing, shared by validation in training and by inference tools,
and the normalization that training augmentation ends with."""
import numpy as np
from paddle.vision import transforms as T
from PIL import Image

__all__ = ["build_eval_transform", "load_image", "normalize_ops", "to_float_hwc"]


def load_image(path):
    """Decode an image file to an RGB PIL image; ValueError naming the file on failure."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {path!r}: {error}") from error


def to_float_hwc(image):
    """PIL image -> HWC float32 array (0-255), for paddle's array transforms."""
    return np.asarray(image, dtype="float32")


def normalize_ops(mean, std):
    """``(x / 255 - mean) / std`` on an HWC array, then HWC -> CHW."""
    return [T.Normalize([255.0 * m for m in mean], [255.0 * s for s in std],
                        data_format="HWC"), T.Transpose()]


def build_eval_transform(input_size=224, crop_pct=0.875, mean=(0.485, 0.456, 0.406),
                         std=(0.229, 0.224, 0.225), interpolation="bicubic"):
    """Resize the short side to ``input_size / crop_pct``, center-crop ``input_size``,
    normalize; PIL image in, ``[3, S, S]`` float32 array out."""
    resize = int(round(input_size / crop_pct))
    return T.Compose([
        T.Resize(resize, interpolation=interpolation),
        T.CenterCrop(input_size),
        to_float_hwc,
        *normalize_ops(mean, std),
    ])
