import numpy as np
import pytest
from PIL import Image

from paddle_pale.data import build_eval_transform, load_image


def test_eval_transform_resizes_crops_and_normalizes():
    # a 300x200 image with a uniform colour: every output pixel is (c/255 - mean) / std
    image = Image.new("RGB", (300, 200), (255, 128, 0))
    out = build_eval_transform(input_size=64, crop_pct=0.8)(image)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    expected = (np.array([255, 128, 0]) / 255.0 - np.array([0.485, 0.456, 0.406])) \
        / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out.mean(axis=(1, 2)), expected, atol=1e-3)


def test_eval_transform_takes_the_center():
    # left half black, right half white: the 0.5 center crop of a 4:1 image is all one
    # colour only if the crop is centred (it straddles the border at the middle)
    image = Image.new("RGB", (400, 100), (0, 0, 0))
    image.paste((255, 255, 255), (200, 0, 400, 100))
    out = build_eval_transform(input_size=32, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))(image)
    assert out[:, :, :14].max() < 0.05 and out[:, :, -14:].min() > 0.95


def test_load_image_names_a_corrupt_file(tmp_path):
    bad = tmp_path / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.JPEG"):
        load_image(str(bad))
