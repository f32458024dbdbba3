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


# ----------------------------------------------------- faithful decoding, one per mode
def _decoded(tmp_path, image, name, **save_args):
    path = tmp_path / name
    image.save(path, **save_args)
    out = load_image(str(path))
    assert out.mode == "RGB"
    return np.asarray(out)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 65536, (12, 10)).astype("uint16")
    got = _decoded(tmp_path, Image.fromarray(pixels), "deep.png")
    expected = np.round(pixels / 257.0).astype("uint8")  # 65535 -> 255
    np.testing.assert_array_equal(got, np.repeat(expected[..., None], 3, axis=-1))
    # the same picture stored in 8 and in 16 bits decodes to the same pixels
    eight = rng.randint(0, 256, (12, 10)).astype("uint8")
    from_16 = _decoded(tmp_path, Image.fromarray(eight.astype("uint16") * 257), "x16.png")
    from_8 = _decoded(tmp_path, Image.fromarray(eight), "x8.png")
    np.testing.assert_array_equal(from_16, from_8)


def test_palette_image_takes_its_palette_colours(tmp_path):
    palette = np.random.RandomState(1).randint(0, 256, (256, 3)).astype("uint8")
    indices = np.random.RandomState(2).randint(0, 256, (9, 7)).astype("uint8")
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    np.testing.assert_array_equal(_decoded(tmp_path, image, "palette.png"), palette[indices])


def test_palette_transparency_is_composited_over_white(tmp_path):
    indices = np.array([[0, 1], [2, 1]], "uint8")
    image = Image.fromarray(indices, mode="P")
    image.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0] + [0] * 759)
    got = _decoded(tmp_path, image, "transparent.png", transparency=1)
    expected = np.array([[[10, 20, 30], [255, 255, 255]], [[0, 0, 0], [255, 255, 255]]])
    np.testing.assert_array_equal(got, expected)


def test_cmyk_is_converted_with_the_black_channel(tmp_path):
    cmyk = np.random.RandomState(3).randint(0, 256, (8, 6, 4)).astype("uint8")
    got = _decoded(tmp_path, Image.fromarray(cmyk, mode="CMYK"), "print.tif")
    c = cmyk.astype("float64") / 255.0
    expected = np.round(255.0 * (1.0 - c[..., :3]) * (1.0 - c[..., 3:])).astype("uint8")
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(tmp_path, mode):
    rng = np.random.RandomState(4)
    colour = rng.randint(0, 256, (7, 5, 3 if mode == "RGBA" else 1)).astype("uint8")
    alpha = rng.randint(0, 256, (7, 5, 1)).astype("uint8")
    alpha[0, 0] = 0  # fully transparent: white, whatever colour is stored
    got = _decoded(tmp_path, Image.fromarray(np.concatenate([colour, alpha], -1)
                                             .squeeze(), mode=mode), f"alpha_{mode}.png")
    a = alpha.astype("float64") / 255.0
    expected = np.round(colour * a + 255.0 * (1.0 - a)).astype("uint8")
    np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))
    assert (got[0, 0] == 255).all()


# EXIF orientation -> the numpy rotation that shows the stored pixels upright
@pytest.mark.parametrize("orientation, upright", [
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),   # stored rotated 90 degrees anticlockwise
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_is_applied(tmp_path, orientation, upright):
    stored = np.random.RandomState(5).randint(0, 256, (4, 6, 3)).astype("uint8")
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation  # Orientation tag
    got = _decoded(tmp_path, image, f"exif{orientation}.png", exif=exif)
    np.testing.assert_array_equal(got, upright(stored))
