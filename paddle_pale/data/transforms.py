"""Evaluation preprocessing, shared by validation in training and by inference tools,
and the normalization that training augmentation ends with."""
import numpy as np
from paddle.vision import transforms as T
from PIL import Image, ImageOps

from ..utils.constants import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["build_eval_transform", "ImageDecodeError", "load_image", "to_rgb", "normalize_ops",
           "to_float_hwc"]


class ImageDecodeError(ValueError):
    """An image file that cannot be read or decoded."""


def load_image(path):
    """Decode an image file to an 8-bit RGB PIL image, as it is meant to be seen; a
    ValueError naming the file on failure.

    * EXIF orientation is applied (a phone photo stored sideways comes out upright);
    * 16-bit grey (``I;16*``, and ``I``, which Pillow uses for 16-bit files) is scaled
      to 8 bits, ``round(v * 255 / 65535)``, not clipped at 255;
    * transparency (``RGBA``, ``LA``, ``PA``, palettes with a transparent index) is
      composited over white, ``round(c * a + 255 * (1 - a))``;
    * CMYK is converted as ``255 * (1 - C) * (1 - K)`` per channel (no colour profile);
    * palette, 1-bit, grey and YCbCr images go through Pillow's own conversion.

    Files from strangers: whatever Pillow raises while decoding (``OSError``, but also
    ``DecompressionBombError``, ``SyntaxError``, ``struct.error``, ``EOFError``, ...)
    makes the file unreadable, as does an image over ``PIL.Image.MAX_IMAGE_PIXELS``
    (89 M pixels; Pillow only warns below twice that, and would decode a 48 KB PNG to
    gigabytes).
    """
    try:
        with Image.open(path) as image:  # reads the header only
            pixels = image.width * image.height
            if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(
                    f"{image.width}x{image.height} = {pixels} pixels, over "
                    f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} (a decompression "
                    f"bomb?)")
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except MemoryError as error:
        raise ImageDecodeError(f"cannot decode image {path!r}: out of memory") from error
    except Exception as error:  # noqa: BLE001  any decoder failure of an untrusted file
        raise ImageDecodeError(f"cannot decode image {path!r}: {type(error).__name__}: "
                               f"{error}") from error


def to_rgb(image):
    """A decoded PIL image of any mode -> 8-bit RGB (see :func:`load_image`)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I (Pillow's mode of some 16-bit files)
        pixels = np.asarray(image).astype("int64")
        pixels = (np.clip(pixels, 0, 65535) * 255 + 32767) // 65535  # rounded v * 255/65535
        return Image.fromarray(pixels.astype("uint8")).convert("RGB")
    if mode == "CMYK":
        cmyk = np.asarray(image).astype("float64") / 255.0
        rgb = 255.0 * (1.0 - cmyk[..., :3]) * (1.0 - cmyk[..., 3:])
        return Image.fromarray(np.round(rgb).astype("uint8"))
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")  # un-premultiplies La / RGBa
    if image.mode == "RGBA":
        rgba = np.asarray(image).astype("float64")
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return Image.fromarray(np.round(rgb).astype("uint8"))
    return image.convert("RGB")


def to_float_hwc(image):
    """PIL image -> HWC float32 array (0-255), for paddle's array transforms."""
    return np.asarray(image, dtype="float32")


def normalize_ops(mean, std):
    """``(x / 255 - mean) / std`` on an HWC array, then HWC -> CHW."""
    return [T.Normalize([255.0 * m for m in mean], [255.0 * s for s in std],
                        data_format="HWC"), T.Transpose()]


def build_eval_transform(input_size=224, crop_pct=0.875, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, interpolation="bicubic"):
    """Resize the short side to ``input_size / crop_pct``, center-crop ``input_size``,
    normalize; PIL image in, ``[3, S, S]`` float32 array out."""
    resize = int(round(input_size / crop_pct))
    return T.Compose([
        T.Resize(resize, interpolation=interpolation),
        T.CenterCrop(input_size),
        to_float_hwc,
        *normalize_ops(mean, std),
    ])
