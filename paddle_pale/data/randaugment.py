"""RandAugment (Cubuk et al. 2020) on PIL images, with the per-op magnitude noise of
timm's ``rand-m9-mstd0.5-inc1`` used by the Swin/CSWin recipes (Paddle ships none):
a higher magnitude makes every op stronger."""
import random

from PIL import Image, ImageEnhance, ImageOps

__all__ = ["RandAugment"]

MAX_MAGNITUDE = 10.0
# fill of geometric ops: the ImageNet mean pixel
FILL = (124, 116, 104)


def _signed(value):
    return value if random.random() < 0.5 else -value


def _affine(image, matrix):
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR,
                           fillcolor=FILL)


def _enhance(enhancer):
    # factor in [0.1, 1.9] at full magnitude
    return lambda image, level: enhancer(image).enhance(1.0 + _signed(0.9 * level))


def _solarize_add(image, level):
    threshold, add = 128, int(110 * level)
    lut = [min(255, v + add) if v < threshold else v for v in range(256)]
    return image.point(lut * len(image.getbands()))


# op(image, level) with level = magnitude / MAX_MAGNITUDE in [0, 1]
OPS = {
    "AutoContrast": lambda image, level: ImageOps.autocontrast(image),
    "Equalize": lambda image, level: ImageOps.equalize(image),
    "Invert": lambda image, level: ImageOps.invert(image),
    "Rotate": lambda image, level: image.rotate(_signed(30.0 * level), resample=Image.BILINEAR,
                                                fillcolor=FILL),
    "Posterize": lambda image, level: ImageOps.posterize(image, max(1, int(8 - 4 * level))),
    "Solarize": lambda image, level: ImageOps.solarize(image, int(256 - 256 * level)),
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": lambda image, level: _affine(image, (1, _signed(0.3 * level), 0, 0, 1, 0)),
    "ShearY": lambda image, level: _affine(image, (1, 0, 0, _signed(0.3 * level), 1, 0)),
    "TranslateXRel": lambda image, level: _affine(
        image, (1, 0, _signed(0.45 * level) * image.size[0], 0, 1, 0)),
    "TranslateYRel": lambda image, level: _affine(
        image, (1, 0, 0, 0, 1, _signed(0.45 * level) * image.size[1])),
}


class RandAugment:
    """Apply ``num_ops`` random ops, each with probability ``prob``, at magnitude
    ``magnitude`` (0..10) plus Gaussian noise of std ``magnitude_std`` per op."""

    def __init__(self, num_ops=2, magnitude=9, magnitude_std=0.5, prob=0.5):
        if not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(f"magnitude must be in [0, {MAX_MAGNITUDE}], got {magnitude}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.prob = prob

    def __call__(self, image):
        for name in random.choices(list(OPS), k=self.num_ops):
            if random.random() > self.prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = random.gauss(magnitude, self.magnitude_std)
            level = min(MAX_MAGNITUDE, max(0.0, magnitude)) / MAX_MAGNITUDE
            image = OPS[name](image, level)
        return image

    def __repr__(self):
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"magnitude_std={self.magnitude_std})")
