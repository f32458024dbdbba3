"""RandAugment (Cubuk et al. 2020) on PIL images, as timm's ``rand-m9-mstd0.5-inc1``,
the policy the DeiT / Swin / CSWin recipes train with (Paddle ships none).

Written from timm's ``timm/data/auto_augment.py`` (``_RAND_INCREASING_TRANSFORMS``,
``LEVEL_TO_ARG``, ``AugmentOp``, ``RandAugment``) and ``transforms_factory.py`` (the
fill colour and resampling it passes); the same in every point a test can state:

* the 15 ops of the "increasing" set (``inc1``): every op grows stronger with magnitude;
* the magnitude-to-argument mapping of each op (:func:`op_argument`), with the
  magnitude clipped to [0, 10] after its per-op Gaussian noise (``mstd``);
* each of the ``num_ops`` picks (uniform, with replacement) applied with probability
  0.5; signed ops take either sign with probability 1/2;
* geometric ops resample with the training interpolation (bicubic in the recipe;
  ``"random"`` draws bilinear or bicubic per op) and fill with the mean pixel
  ``round(255 * mean)``.
"""
import random

from PIL import Image, ImageEnhance, ImageOps

from ..utils.constants import IMAGENET_MEAN

__all__ = ["RandAugment", "OPS", "SIGNED_OPS", "op_argument", "apply_op", "MAX_MAGNITUDE"]

MAX_MAGNITUDE = 10.0  # timm's _LEVEL_DENOM: magnitude 10 is an op's full strength

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
       "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
       "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
       "TranslateYRel")
# ops whose argument takes a random sign
SIGNED_OPS = frozenset({"Rotate", "ColorIncreasing", "ContrastIncreasing",
                        "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                        "TranslateXRel", "TranslateYRel"})
GEOMETRIC_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})
_ENHANCERS = {"ColorIncreasing": ImageEnhance.Color, "ContrastIncreasing": ImageEnhance.Contrast,
              "BrightnessIncreasing": ImageEnhance.Brightness,
              "SharpnessIncreasing": ImageEnhance.Sharpness}
# PIL's rotate/transform resample only with these
RESAMPLING = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def op_argument(name, magnitude, negative=False):
    """The argument op ``name`` takes at ``magnitude`` (0..10); ``negative`` picks the
    negative branch of a signed op. None for the ops that take none."""
    level = magnitude / MAX_MAGNITUDE
    sign = -1.0 if negative else 1.0
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":                      # degrees, up to 30
        return sign * (level * 30.0)
    if name == "PosterizeIncreasing":         # bits kept: 4 down to 0
        return 4 - int(level * 4)
    if name == "SolarizeIncreasing":          # threshold: 256 down to 0
        return 256 - min(256, int(level * 256))
    if name == "SolarizeAdd":                 # added below 128: 0 up to 110
        return min(128, int(level * 110))
    if name in _ENHANCERS:                    # blend factor 1 -+ 0.9, at least 0.1
        return max(0.1, 1.0 + sign * (level * 0.9))
    if name in ("ShearX", "ShearY"):          # shear factor, up to 0.3
        return sign * (level * 0.3)
    if name in ("TranslateXRel", "TranslateYRel"):  # fraction of the side, up to 0.45
        return sign * (level * 0.45)
    raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(OPS)}")


def _solarize_add(image, add, threshold=128):
    if image.mode not in ("L", "RGB"):
        return image
    lut = [min(255, v + add) if v < threshold else v for v in range(256)]
    return image.point(lut * len(image.getbands()))


def apply_op(image, name, argument, resample=Image.BICUBIC, fill=(128, 128, 128)):
    """Op ``name`` with its argument (see :func:`op_argument`) on a PIL image."""
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    if name == "Rotate":
        return image.rotate(argument, resample=resample, fillcolor=fill)
    if name == "PosterizeIncreasing":
        return image if argument >= 8 else ImageOps.posterize(image, argument)
    if name == "SolarizeIncreasing":
        return ImageOps.solarize(image, argument)
    if name == "SolarizeAdd":
        return _solarize_add(image, argument)
    if name in _ENHANCERS:
        return _ENHANCERS[name](image).enhance(argument)
    width, height = image.size
    matrix = {"ShearX": (1, argument, 0, 0, 1, 0),
              "ShearY": (1, 0, 0, argument, 1, 0),
              "TranslateXRel": (1, 0, argument * width, 0, 1, 0),
              "TranslateYRel": (1, 0, 0, 0, 1, argument * height)}.get(name)
    if matrix is None:
        raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(OPS)}")
    return image.transform(image.size, Image.AFFINE, matrix, resample=resample,
                           fillcolor=fill)


class RandAugment:
    """Apply ``num_ops`` ops drawn uniformly (with replacement), each with probability
    ``prob``, at ``magnitude`` (0..10) plus Gaussian noise of std ``magnitude_std``
    drawn per op (over 100: uniform in [0, magnitude], as timm's ``mstd``).

    Args:
        interpolation: resampling of the geometric ops: ``nearest``, ``bilinear``,
            ``bicubic``, or ``random`` (bilinear or bicubic, drawn per op).
        mean: normalization mean (0..1); geometric ops fill with ``round(255 * mean)``.
    """

    def __init__(self, num_ops=2, magnitude=9, magnitude_std=0.5, prob=0.5,
                 interpolation="bicubic", mean=IMAGENET_MEAN):
        if not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(f"magnitude must be in [0, {MAX_MAGNITUDE}], got {magnitude}")
        if interpolation == "random":
            self.resample_choices = (Image.BILINEAR, Image.BICUBIC)
        elif interpolation in RESAMPLING:
            self.resample_choices = (RESAMPLING[interpolation],)
        else:
            raise ValueError(f"RandAugment resamples with one of {sorted(RESAMPLING)} or "
                             f"'random' (PIL's rotate and affine transforms take no other), "
                             f"got interpolation={interpolation!r}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.prob = prob
        self.fill = tuple(min(255, round(255 * m)) for m in mean)

    def _magnitude(self):
        magnitude = self.magnitude
        if self.magnitude_std > 100:
            magnitude = random.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = random.gauss(magnitude, self.magnitude_std)
        return max(0.0, min(magnitude, MAX_MAGNITUDE))

    def __call__(self, image):
        for name in random.choices(OPS, k=self.num_ops):
            if self.prob < 1.0 and random.random() > self.prob:
                continue
            magnitude = self._magnitude()
            # the draws in timm's order: sign, then resampling
            negative = name in SIGNED_OPS and random.random() > 0.5
            argument = op_argument(name, magnitude, negative)
            resample = None
            if name in GEOMETRIC_OPS:
                resample = (random.choice(self.resample_choices)
                            if len(self.resample_choices) > 1 else self.resample_choices[0])
            image = apply_op(image, name, argument, resample, self.fill)
        return image

    def __repr__(self):
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"magnitude_std={self.magnitude_std}, prob={self.prob}, "
                f"resample={self.resample_choices}, fill={self.fill})")

