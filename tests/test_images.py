"""Image files of every common kind become the right RGB array, or one clear error."""

import io

import numpy as np
import pytest
from PIL import Image

from keras_lpips import InputError
from keras_lpips.images import read_image


@pytest.fixture
def rgb(rng):
    return (rng.random((12, 16, 3)) * 255).astype(np.uint8)


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_rgb_png_and_bmp_and_webp_lossless(tmp_path, rgb):
    for name, kwargs in (("a.png", {}), ("a.bmp", {}), ("a.webp", {"lossless": True})):
        got = read_image(save(Image.fromarray(rgb), tmp_path / name, **kwargs))
        np.testing.assert_allclose(got, rgb / 255.0, atol=1e-6)


def test_grayscale_8_and_16_bit(tmp_path, rng):
    gray16 = (rng.random((8, 8)) * 65535).astype(np.uint16)
    got = read_image(save(Image.fromarray(gray16), tmp_path / "g16.png"))
    assert got.shape == (8, 8, 3)
    np.testing.assert_allclose(got[..., 1], gray16 / 65535.0, atol=1e-6)
    gray8 = (rng.random((8, 8)) * 255).astype(np.uint8)
    np.testing.assert_allclose(read_image(save(Image.fromarray(gray8), tmp_path / "g8.png"))[..., 2], gray8 / 255.0, atol=1e-6)


def test_rgba_and_palette(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], axis=-1)
    np.testing.assert_allclose(read_image(save(Image.fromarray(rgba), tmp_path / "a.png")), rgb / 255.0, atol=1e-6)
    palette = Image.fromarray(rgb).convert("P")
    np.testing.assert_allclose(
        read_image(save(palette, tmp_path / "p.png")), np.asarray(palette.convert("RGB")) / 255.0, atol=1e-6
    )


def test_exif_orientation_is_applied(tmp_path, rgb):
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(image, tmp_path / "rotated.jpg", exif=exif, quality=100)
    assert read_image(path).shape == (16, 12, 3)


def test_cmyk_jpeg(tmp_path, rgb):
    path = save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.jpg", quality=100)
    got = read_image(path)
    assert got.shape == (12, 16, 3) and np.abs(got - rgb / 255.0).mean() < 0.05


@pytest.mark.parametrize(
    "content,message",
    [(None, "No such image file"), (b"", "Not an image"), (b"hello", "Not an image"), ("truncated", "Cannot decode")],
)
def test_unreadable_files(tmp_path, rgb, content, message):
    path = tmp_path / "x.png"
    if content == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[:80])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_image(path)
