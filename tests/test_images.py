"""Image files of every common kind become the right RGB array, or one clear error."""

import contextlib
import io
import os
import pathlib
import re
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from keras_lpips import InputError
from keras_lpips.errors import DataError
from keras_lpips.images import PIXEL_FORMATS, read_image, stored_size
from tests.helpers import RANDOM, run_cli


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


def test_images_of_another_size_are_resized_only_when_asked(tmp_path, rgb):
    from keras_lpips.images import check_same_size, read_images

    paths = [save(Image.fromarray(rgb), tmp_path / "a.png"), save(Image.fromarray(rgb[:8]), tmp_path / "b.png")]
    refused = r"b.png is 16x8 but \S*a.png is 16x12; pass resize=True to resize it$"
    with pytest.raises(InputError, match=refused):
        read_images(paths)
    with pytest.raises(InputError, match=refused):
        check_same_size(paths, [stored_size(path) for path in paths])
    assert read_images(paths, resize=True).shape == (2, 12, 16, 3)


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


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tiff"])
def test_exif_orientation_is_applied(tmp_path, rgb, suffix):
    """In every format that carries it; `stored_size` (from the header) agrees with `read_image`
    (Pillow reports a TIFF's size turned already, the others' not)."""
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(image, tmp_path / f"rotated{suffix}", exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    assert read_image(path).shape == (16, 12, 3)
    assert stored_size(path) == (16, 12) and stored_size(save(image, tmp_path / f"upright{suffix}")) == (12, 16)
    pages = tmp_path / "pages.tiff"
    image.save(pages, save_all=True, append_images=[image.resize((20, 8))], exif=exif)
    for frame in (0, 1):
        assert stored_size(pages, frame=frame) == read_image(pages, frame=frame).shape[:2]


def test_corrupt_exif_reads_without_warnings(tmp_path, rgb):
    """Pillow warns "Corrupt EXIF data" (and of palettes' transparency): lines a command would
    print that a user can do nothing about; the image reads as stored."""
    corrupt = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\xff\xff"
    path = save(Image.fromarray(rgb), tmp_path / "corrupt-exif.jpg", exif=corrupt, quality=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).shape[:2] == stored_size(path)


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


# --- every pixel format Pillow returns: read right, or refused in one line ----------------------
# Each case writes a file of known values in one Pillow mode and says what read_image must return.


def _png_bytes(samples, bit_depth, colour_type):
    """A PNG written by hand (Pillow writes few bit depths): (H, W, C) unsigned samples, as given."""
    samples = np.asarray(samples)
    height = samples.shape[0]
    rows = samples.reshape(height, -1)
    if bit_depth < 8:
        packed = [np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - bit_depth :]) for row in rows]
    else:
        packed = [row.astype(">u2" if bit_depth == 16 else np.uint8) for row in rows]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", samples.shape[1], height, bit_depth, colour_type, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + row.tobytes() for row in packed))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _tiff_bytes(samples, photometric, sample_format=1, extra_samples=None, bits=None, order="<", compression=1):
    """An uncompressed TIFF written by hand (Pillow writes few layouts): (H, W[, C]) samples in
    their numpy dtype; `bits` < 16 packs unsigned samples to that many bits (rows whole bytes);
    `order` "<" little-endian, ">" big-endian; `compression` 8 (deflate) compresses the strip."""
    samples = np.asarray(samples)
    samples = samples[..., None] if samples.ndim == 2 else samples
    height, width, channels = samples.shape
    if bits is None:
        bits, data = samples.dtype.itemsize * 8, samples.astype(samples.dtype.newbyteorder(order)).tobytes()
    else:
        text = "".join(format(int(v), f"0{bits}b") for v in samples.ravel())
        data = int(text, 2).to_bytes(len(text) // 8, "big")
    data = zlib.compress(data) if compression == 8 else data
    tags = {256: (4, [width]), 257: (4, [height]), 258: (3, [bits] * channels), 259: (3, [compression]), 262: (3, [photometric]),
            273: (4, [0]), 277: (3, [channels]), 278: (4, [height]), 279: (4, [len(data)]), 339: (3, [sample_format] * channels)}  # fmt: skip
    if extra_samples is not None:
        tags[338] = (3, list(extra_samples))
    values_at = 8 + 2 + 12 * len(tags) + 4
    values, entries = b"", b""
    for tag, (kind, items) in sorted(tags.items()):
        raw = struct.pack(order + ("H" if kind == 3 else "I") * len(items), *items)
        if len(raw) > 4:
            raw, values = struct.pack(order + "I", values_at + len(values)), values + raw
        entries += struct.pack(order + "HHI", tag, kind, len(items)) + raw.ljust(4, b"\0")
    strip = struct.pack(order + "HHI", 273, 4, 1) + b"\0" * 4
    entries = entries.replace(strip, struct.pack(order + "HHII", 273, 4, 1, values_at + len(values)))
    magic = b"II*\0" if order == "<" else b"MM\0*"
    return magic + struct.pack(order + "IH", 8, len(tags)) + entries + b"\0" * 4 + values + data


def _grey(levels, white=255.0):
    return np.repeat((np.asarray(levels, np.float64) / white)[..., None], 3, axis=-1)


def _written(path, data):
    path.write_bytes(data)
    return path


CASES = {}


def case(name, atol=1e-6):
    """Registers `make(path, levels) -> (file, expected RGB)`; `levels` is a random (6, 8) uint8."""

    def register(make):
        CASES[name] = (make, atol)
        return make

    return register


@case("1 (bilevel PNG)")
def _bilevel_png(path, levels):
    bits = levels > 127
    return save(Image.fromarray(bits), path.with_suffix(".png")), _grey(bits, 1)


@case("1 (bilevel TIFF)")
def _bilevel_tiff(path, levels):
    bits = levels > 127
    return save(Image.fromarray(bits), path.with_suffix(".tif")), _grey(bits, 1)


@case("L (2-bit PNG)")
def _grey_2bit(path, levels):
    two = levels >> 6
    return _written(path.with_suffix(".png"), _png_bytes(two[..., None], 2, 0)), _grey(two, 3)


@case("L (8-bit PNG)")
def _grey_png(path, levels):
    levels[0, 0] = 128  # mid-grey: exactly 128 / 255
    return save(Image.fromarray(levels), path.with_suffix(".png")), _grey(levels)


@case("LA (PNG)")
def _grey_alpha(path, levels):
    image = Image.fromarray(np.stack([levels, 255 - levels], axis=-1), "LA")
    return save(image, path.with_suffix(".png")), _grey(levels)


@case("La (premultiplied TIFF)")
def _grey_premultiplied(path, levels):
    alpha = np.where(levels % 2 == 0, 255, 51).astype(np.uint8)  # 51: a fifth
    grey = (levels // 5).astype(np.uint8)  # stored premultiplied: grey * alpha / 255
    stored = np.where(alpha == 255, grey, grey // 5).astype(np.uint8)
    expected = np.where(alpha == 255, grey, (grey // 5) * 5)
    data = _tiff_bytes(np.stack([stored, alpha], axis=-1), 1, extra_samples=[1])
    return _written(path.with_suffix(".tif"), data), _grey(expected)


@case("P (palette PNG)")
def _palette(path, levels, transparency=None):
    rgb = np.stack([levels, 255 - levels, levels // 2], axis=-1)
    image = Image.fromarray(rgb).quantize(256)
    kwargs = {} if transparency is None else {"transparency": transparency}
    expected = np.asarray(image.convert("RGB")) / 255.0
    return save(image, path.with_suffix(".png"), **kwargs), expected


@case("P (palette PNG with transparency)")
def _palette_transparent(path, levels):
    return _palette(path, levels, transparency=0)


@case("P (GIF)")
def _palette_gif(path, levels):
    image = Image.fromarray(np.stack([levels, 255 - levels, levels // 2], axis=-1)).quantize(256)
    return save(image, path.with_suffix(".gif")), np.asarray(image.convert("RGB")) / 255.0


@case("PA (TIFF)")
def _palette_alpha(path, levels):
    image = Image.fromarray(np.stack([levels, 255 - levels, levels // 2], axis=-1)).quantize(256)
    expected = np.asarray(image.convert("RGB")) / 255.0
    image = image.convert("PA")
    image.putalpha(Image.fromarray(levels))
    return save(image, path.with_suffix(".tif")), expected


@case("RGB (PNG)")
def _rgb(path, levels):
    rgb = np.stack([levels, 255 - levels, levels // 2], axis=-1)
    return save(Image.fromarray(rgb), path.with_suffix(".png")), rgb / 255.0


@case("RGB (16-bit BMP, 5 bits a channel)")
def _bmp16(path, levels):
    fives = (levels >> 3).astype(np.uint16)  # one 5-bit value in all three channels
    pixels = (fives << 10) | (fives << 5) | fives
    height, width = levels.shape
    rows = b"".join(pixels[y].astype("<u2").tobytes() for y in reversed(range(height)))  # bottom-up, 16 bytes a row
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 16, 0, len(rows), 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(rows), 0, 0, 14 + len(info))
    return _written(path.with_suffix(".bmp"), header + info + rows), _grey(fives * 255 // 31)  # Pillow's scaling


@case("RGB (16-bit PNG: Pillow keeps the high 8 bits)", atol=1 / 255)
def _rgb16_png(path, levels):
    rgb = np.stack([levels, 255 - levels, levels // 2], axis=-1).astype(np.uint16) * 257 + 100
    return _written(path.with_suffix(".png"), _png_bytes(rgb, 16, 2)), rgb / 65535.0


@case("RGB (16-bit TIFF)", atol=1 / 255)
def _rgb16_tiff(path, levels):
    rgb = np.stack([levels, 255 - levels, levels // 2], axis=-1).astype(np.uint16) * 257 + 100
    return _written(path.with_suffix(".tif"), _tiff_bytes(rgb, 2)), rgb / 65535.0


@case("RGBA (PNG)")
def _rgba(path, levels):
    rgb = np.stack([levels, 255 - levels, levels // 2], axis=-1)
    rgba = np.concatenate([rgb, levels[..., None]], axis=-1)
    return save(Image.fromarray(rgba), path.with_suffix(".png")), rgb / 255.0


@case("RGBA (16-bit PNG)", atol=1 / 255)
def _rgba16_png(path, levels):
    rgb = np.stack([levels, 255 - levels, levels // 2], axis=-1).astype(np.uint16) * 257
    rgba = np.concatenate([rgb, rgb[..., :1]], axis=-1)
    return _written(path.with_suffix(".png"), _png_bytes(rgba, 16, 6)), rgb / 65535.0


@case("LA (16-bit PNG, Pillow: RGBA)", atol=1 / 255)
def _grey_alpha16_png(path, levels):
    grey = levels.astype(np.uint16) * 257
    return _written(path.with_suffix(".png"), _png_bytes(np.stack([grey, grey], -1), 16, 4)), _grey(grey, 65535)


@case("RGBa (premultiplied TIFF)")
def _rgb_premultiplied(path, levels):
    alpha = np.where(levels % 2 == 0, 255, 51).astype(np.uint8)
    rgb = np.stack([levels // 5, 51 - levels // 5, levels // 10], axis=-1).astype(np.uint8)
    stored = np.where(alpha[..., None] == 255, rgb, rgb // 5)
    expected = np.where(alpha[..., None] == 255, rgb, (rgb // 5) * 5)
    data = _tiff_bytes(np.concatenate([stored, alpha[..., None]], axis=-1), 2, extra_samples=[1])
    return _written(path.with_suffix(".tif"), data), expected / 255.0


@case("CMYK (TIFF)")
def _cmyk(path, levels):
    cmyk = np.stack([np.zeros_like(levels)] * 3 + [levels], axis=-1)  # black ink only: grey 255 - K
    return save(Image.fromarray(cmyk, "CMYK"), path.with_suffix(".tif")), _grey(255 - levels.astype(int))


@case("YCbCr (TIFF)")
def _ycbcr(path, levels):
    ycc = np.stack([levels, np.full_like(levels, 128), np.full_like(levels, 128)], axis=-1)  # no chroma: grey Y
    return save(Image.fromarray(ycc, "YCbCr"), path.with_suffix(".tif")), _grey(levels)


@case("LAB (TIFF)", atol=1.01 / 255)
def _lab(path, levels):
    from PIL import ImageCms

    rgb = Image.fromarray(np.stack([levels, 255 - levels, levels // 2], axis=-1))
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(rgb, to_lab)
    back = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return save(lab, path.with_suffix(".tif")), np.asarray(ImageCms.applyTransform(lab, back)) / 255.0


@case("I;16 (16-bit grey PNG)")
def _grey16_png(path, levels):
    grey = levels.astype(np.uint16) * 257 + 64
    grey[0, 0] = 32768  # exactly 32768 / 65535, not 128 / 255
    return save(Image.fromarray(grey), path.with_suffix(".png")), _grey(grey, 65535)


@case("I;16 (16-bit grey TIFF)")
def _grey16_tiff(path, levels):
    grey = levels.astype(np.uint16) * 257 + 64
    return save(Image.fromarray(grey), path.with_suffix(".tif")), _grey(grey, 65535)


@case("I;16B (big-endian 16-bit grey TIFF)")
def _grey16b_tiff(path, levels):
    grey = levels.astype(np.uint16) * 257 + 64
    image = Image.frombytes("I;16B", grey.shape[::-1], grey.astype(">u2").tobytes())
    return save(image, path.with_suffix(".tif")), _grey(grey, 65535)


@case("I;16 (12-bit grey TIFF: white is 4095)")
def _grey12_tiff(path, levels):
    grey = levels.astype(np.uint16) * 16 + 7
    return _written(path.with_suffix(".tif"), _tiff_bytes(grey, 1, bits=12)), _grey(grey, 4095)


@case("I (16-bit PGM, any maxval: Pillow scales to 65535)")
def _grey16_pgm(path, levels):
    grey = levels.astype(np.uint16) * 4 + 3
    data = b"P5\n%d %d\n1023\n" % grey.shape[::-1] + grey.astype(">u2").tobytes()
    return _written(path.with_suffix(".pgm"), data), _grey(np.round(grey / 1023 * 65535), 65535)


@case("F (32-bit float TIFF)")
def _float_tiff(path, levels):
    grey = levels.astype(np.float32) / 255
    grey[0, 0] = 0.5
    return save(Image.fromarray(grey, "F"), path.with_suffix(".tif")), _grey(grey, 1.0)


@pytest.mark.parametrize("name", list(CASES))
def test_pixel_format_reads_its_true_values(tmp_path, name):
    """Two different images of the mode read as their true values, so they differ."""
    make, atol = CASES[name]
    got = []
    for seed in (1, 2):
        levels = np.random.default_rng(seed).integers(0, 256, (6, 8), dtype=np.uint8)
        path, expected = make(tmp_path / f"image{seed}", levels)
        image = read_image(path)
        assert image.shape == (6, 8, 3) and image.dtype == np.float32
        np.testing.assert_allclose(image, expected, atol=atol, rtol=0)
        got.append(image)
    assert np.abs(got[0] - got[1]).max() > 0.1


def test_every_pillow_mode_has_a_row():
    """A Pillow upgrade that adds a mode fails here until the table says how to read it."""
    assert set(Image.MODES) <= set(PIXEL_FORMATS)


@pytest.mark.parametrize(
    "mode,value,expected",
    [("1", 1, 1.0), ("L", 128, 128 / 255), ("LA", (128, 7), 128 / 255), ("La", (128, 255), 128 / 255),
     ("RGB", (128,) * 3, 128 / 255), ("RGBA", (128, 128, 128, 7), 128 / 255), ("RGBa", (128, 128, 128, 255), 128 / 255),
     ("RGBX", (128, 128, 128, 0), 128 / 255), ("CMYK", (0, 0, 0, 127), 128 / 255), ("YCbCr", (128, 128, 128), 128 / 255),
     ("HSV", (0, 0, 128), 128 / 255), ("I;16", 32768, 32768 / 65535), ("I;16L", 32768, 32768 / 65535),
     ("I;16B", 32768, 32768 / 65535), ("I;16N", 32768, 32768 / 65535), ("F", 0.5, 0.5)],
)  # fmt: skip
def test_each_row_turns_mid_grey_into_its_value(mode, value, expected):
    """The table alone (modes no file gives, such as HSV and RGBX, included), on a Pillow image."""
    from keras_lpips.images import _to_rgb

    image = Image.new(mode, (3, 2), value)
    got = _to_rgb(image, PIXEL_FORMATS[mode].white, "x")
    assert got.shape == (2, 3, 3)
    np.testing.assert_array_equal(got, np.float32(expected))


@pytest.mark.parametrize(
    "samples,sample_format,message",
    [(np.array([[0, 70000, 4294967295]], np.uint32), 1, "32-bit integer pixels (TIFF, Pillow mode 'I')"),
     (np.array([[-5, 0, 2147483647]], np.int32), 2, "signed integer samples"),
     (np.array([[-5, 0, 32767]], np.int16), 2, "signed integer samples"),
     (np.array([[-5, 0, 127]], np.int8), 2, "signed integer samples")],
)  # fmt: skip
def test_integers_without_a_known_white_are_refused(tmp_path, samples, sample_format, message):
    """32-bit and signed integer TIFFs: 0..65535 data divided by 2**32 - 1 would read as black."""
    path = _written(tmp_path / "x.tif", _tiff_bytes(samples, 1, sample_format))
    with pytest.raises(InputError, match=re.escape(message)) as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


# --- conventions of the file Pillow leaves undone: min-is-white TIFF, FITS's BZERO and BSCALE ----
# Each file holds the picture of a plain min-is-black PNG of known values, stored another way.


def _min_is_white_tiff(levels, bits, order="<", compression=1):
    """A min-is-white TIFF of the picture `levels` (0..255) at `bits` (1, 4, 8, 16, or 32 for
    floats), and the min-is-black PNG of the same picture (8-bit; 16-bit from 16 bits up)."""
    if bits == 32:
        grey = levels.astype(np.uint16) * 257
        stored, kwargs = (1 - grey / 65535).astype(np.float32), {"sample_format": 3}
    elif bits == 16:
        grey = levels.astype(np.uint16) * 257 + 64
        stored, kwargs = 65535 - grey, {}
    else:
        top = 2**bits - 1
        grey = (levels >> (8 - bits)).astype(np.uint16)  # 0..top
        stored, kwargs = (top - grey).astype(np.uint8 if bits == 8 else np.uint16), {"bits": bits} if bits < 8 else {}
        grey = (grey * 255 // top).astype(np.uint8)
    return _tiff_bytes(stored, 0, order=order, compression=compression, **kwargs), grey


MIN_IS_WHITE = {"1-bit": (1,), "1-bit big-endian": (1, ">"), "4-bit": (4,), "4-bit big-endian": (4, ">"),
                "8-bit": (8,), "8-bit big-endian": (8, ">"), "8-bit deflate (libtiff)": (8, "<", 8),
                "16-bit": (16,), "16-bit deflate (libtiff)": (16, "<", 8),
                "32-bit float": (32,), "32-bit float big-endian": (32, ">"), "32-bit float deflate (libtiff)": (32, "<", 8)}  # fmt: skip


@pytest.mark.parametrize("name", list(MIN_IS_WHITE))
def test_min_is_white_tiff_reads_as_the_same_picture_stored_min_is_black(tmp_path, name):
    """Pillow inverts 1- to 8-bit min-is-white grey itself, not 16-bit or float grey."""
    levels = np.random.default_rng(3).integers(0, 256, (6, 8), dtype=np.uint8)
    levels[0, :2] = 0, 255  # black and white
    data, grey = _min_is_white_tiff(levels, *MIN_IS_WHITE[name])
    tif, png = _written(tmp_path / "w.tif", data), save(Image.fromarray(grey), tmp_path / "b.png")
    np.testing.assert_allclose(read_image(tif), read_image(png), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"bits": 12}, {"order": ">"}, {"sample_format": 2}, {"dtype": np.uint32}, {"dtype": np.float64, "sample_format": 3}],
    ids=["12-bit", "16-bit big-endian", "16-bit signed", "32-bit integer", "64-bit float"],
)
def test_min_is_white_tiffs_pillow_does_not_read_are_refused(tmp_path, kwargs):
    kwargs = dict(kwargs)
    samples = np.arange(48).reshape(6, 8).astype(kwargs.pop("dtype", np.uint16))
    path = _written(tmp_path / "w.tif", _tiff_bytes(samples, 0, **kwargs))
    with pytest.raises(InputError, match=re.escape(f"Not an image (or a format Pillow cannot read): {path}")):
        read_image(path)


def _fits_bytes(samples, bitpix, **cards):
    """A FITS file of one image written by hand: (H, W) samples stored as BITPIX says (big-endian,
    its rows bottom-up, as FITS stores them and Pillow reads them), with further header `cards`
    (keyword: value as written)."""
    kinds = {8: ">u1", 16: ">i2", 32: ">i4", -32: ">f4", -64: ">f8"}
    cards = {"SIMPLE": "T", "BITPIX": bitpix, "NAXIS": 2, "NAXIS1": samples.shape[1], "NAXIS2": samples.shape[0], **cards}
    header = "".join(f"{key:<8}= {value:>20}".ljust(80) for key, value in cards.items()) + "END".ljust(80)
    data = np.ascontiguousarray(samples[::-1]).astype(kinds[bitpix]).tobytes()
    blocks = [header.encode().ljust(-(-len(header) // 2880) * 2880), data.ljust(-(-len(data) // 2880) * 2880, b"\0")]
    return b"".join(blocks)


def _fits_grey16(levels):
    grey = levels.astype(np.int64) * 257 + 64
    grey[0, :2] = 0, 65535  # black and white: the extremes of the sign flip
    return grey


FITS_READ = {
    "BITPIX 8": lambda levels: (_fits_bytes(levels, 8), levels.astype(np.uint8)),
    "BITPIX 8, BZERO 0, BSCALE 1": lambda levels: (_fits_bytes(levels, 8, BZERO="0", BSCALE="1.0"), levels.astype(np.uint8)),
    "BITPIX 16, BZERO 32768": lambda levels: (_fits_bytes(_fits_grey16(levels) - 32768, 16, BZERO=32768, BSCALE=1), _fits_grey16(levels)),
    "BITPIX 16, BZERO 3.2768D4": lambda levels: (_fits_bytes(_fits_grey16(levels) - 32768, 16, BZERO="3.2768D4"), _fits_grey16(levels)),
    "BITPIX -32": lambda levels: (_fits_bytes(_fits_grey16(levels) / 65535, -32), _fits_grey16(levels)),
    "BITPIX -64, BZERO 0, BSCALE 1": lambda levels: (_fits_bytes(_fits_grey16(levels) / 65535, -64, BZERO=0, BSCALE=1), _fits_grey16(levels)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FITS_READ))
def test_fits_reads_as_the_same_picture_stored_as_png(tmp_path, name):
    """Pillow ignores BZERO: a BITPIX 16 file of the unsigned convention read with its high bit flipped."""
    levels = np.random.default_rng(4).integers(0, 256, (6, 8), dtype=np.uint8)
    data, grey = FITS_READ[name](levels)
    png = _written(tmp_path / "a.png", _png_bytes(grey[..., None], 8 if grey.dtype == np.uint8 else 16, 0))
    fits = _written(tmp_path / "a.fits", data)
    np.testing.assert_allclose(read_image(fits), read_image(png), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "bitpix,cards,message",
    [(16, {}, "holds signed integer samples (FITS BITPIX 16, BZERO 0), which have no agreed black and white"),
     (8, {"BZERO": -128}, "holds signed integer samples (FITS BITPIX 8, BZERO -128)"),
     (16, {"BZERO": 32768, "BSCALE": 2}, "holds scaled samples (FITS BITPIX 16, BZERO 32768, BSCALE 2), whose white level is unknown; expected BZERO 32768 and BSCALE 1"),
     (16, {"BZERO": 1000}, "holds scaled samples (FITS BITPIX 16, BZERO 1000, BSCALE 1)"),
     (8, {"BSCALE": 0.5}, "holds scaled samples (FITS BITPIX 8, BZERO 0, BSCALE 0.5), whose white level is unknown; expected BZERO 0"),
     (-32, {"BZERO": 0.5}, "holds scaled samples (FITS BITPIX -32, BZERO 0.5, BSCALE 1)"),
     (-64, {"BSCALE": 2}, "holds scaled samples (FITS BITPIX -64, BZERO 0, BSCALE 2)"),
     (32, {}, "holds 32-bit integer pixels (FITS, Pillow mode 'I'), whose white level is unknown"),
     (32, {"BZERO": 2147483648}, "holds 32-bit integer pixels (FITS, Pillow mode 'I')")],
)  # fmt: skip
def test_fits_scalings_without_a_known_white_are_refused(tmp_path, bitpix, cards, message):
    samples = np.arange(48).reshape(6, 8) / (1 if bitpix > 0 else 48)
    path = _written(tmp_path / "x.fits", _fits_bytes(samples, bitpix, **cards))
    with pytest.raises(InputError, match=re.escape(message)) as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_fits_cube_is_refused_and_a_cube_of_one_plane_read(tmp_path):
    """Pillow reads a FITS cube's first plane alone, silently: refused, as multi-frame files are
    without a frame chosen; a third axis of length 1 holds one image."""
    levels = np.random.default_rng(5).integers(0, 256, (6, 8), dtype=np.uint8)
    plain = read_image(_written(tmp_path / "plain.fits", _fits_bytes(levels, 8)))
    one = _fits_bytes(levels, 8, NAXIS=3, NAXIS3=1)
    np.testing.assert_array_equal(read_image(_written(tmp_path / "one.fits", one)), plain)
    two = _fits_bytes(np.concatenate([255 - levels, levels]), 8, NAXIS=3, NAXIS2=6, NAXIS3=2)  # planes of 6 rows
    path = _written(tmp_path / "cube.fits", two)
    with pytest.raises(InputError, match=re.escape(f"Image {path} holds 2 planes (a FITS cube of axes [2] beyond the image's two)")):
        read_image(path)


@pytest.mark.parametrize(
    "cards, reason",
    [({"NAXIS": 1000}, "FITS NAXIS 1000 is outside 0 to 999"),
     ({"NAXIS": 10**6}, "FITS NAXIS 1000000 is outside 0 to 999"),  # was a list of a million axes; 10**15 never ended
     ({"NAXIS": -1}, "FITS NAXIS -1 is outside 0 to 999"),
     ({"NAXIS": 3, "NAXIS3": -1}, "a FITS axis length (NAXISn) is negative"),
     ({"NAXIS": 4, "NAXIS3": -1, "NAXIS4": -2}, "a FITS axis length (NAXISn) is negative"),
     ({"NAXIS": 4, "NAXIS3": 2**32, "NAXIS4": 2**32}, "declares more bytes of samples than the file's 5760 bytes"),  # np.prod: 0
     ({"NAXIS": 3, "NAXIS3": 10**30}, "declares more bytes of samples than the file's 5760 bytes")],
)  # fmt: skip
def test_a_fits_header_of_impossible_axes_is_a_corrupt_file(tmp_path, cards, reason):
    """FITS allows 0 to 999 axes, of lengths whose samples the file holds: anything else is one
    error, at once (not a loop over 10**15 axes, nor a product overflowing to 0 planes)."""
    levels = np.zeros((6, 8), np.uint8)
    path = _written(tmp_path / "x.fits", _fits_bytes(levels, 8, **cards))
    with pytest.raises(DataError, match=f"^{re.escape(f'Cannot decode image {path} (truncated or corrupt?): ')}.*{re.escape(reason)}"):
        read_image(path)


# --- multi-frame files: refused, or one frame chosen ----------------------------------------------


def _frames(count=3, size=32):
    return [Image.new("RGB", (size, size), (40 * k + 20, 200 - 40 * k, 90)) for k in range(count)]


MULTI_FRAME = {"animated GIF": ".gif", "multi-page TIFF": ".tif", "animated PNG": ".png", "animated WebP": ".webp"}


def _multi_frame(path, count=3):
    first, *others = _frames(count)
    kwargs = {"lossless": True} if path.suffix == ".webp" else {}
    first.save(path, save_all=True, append_images=others, **kwargs)
    return path


@pytest.mark.parametrize("kind", list(MULTI_FRAME))
def test_multi_frame_files_are_refused_or_read_at_the_frame_asked(tmp_path, kind):
    path = _multi_frame(tmp_path / ("anim" + MULTI_FRAME[kind]))
    with pytest.raises(InputError) as error:
        read_image(path)
    assert str(error.value) == f"{path} has 3 frames (an animated or multi-page image); choose one with frame=K, K from 0 to 2"
    for k, expected in enumerate(_frames()):
        np.testing.assert_allclose(read_image(path, frame=k), np.asarray(expected) / 255.0, atol=1 / 255)
    with pytest.raises(InputError, match="has 3 frames; there is no frame 3"):
        read_image(path, frame=3)


@pytest.mark.parametrize("frame", [-1, 1.0, "1", True])
def test_frame_must_be_a_non_negative_integer(tmp_path, rgb, frame):
    with pytest.raises(InputError, match=re.escape(f"Received: frame={frame!r}")):
        read_image(save(Image.fromarray(rgb), tmp_path / "a.png"), frame=frame)


def test_stored_size_of_a_frame_asked_is_that_frames(tmp_path):
    """The pages of a TIFF may differ in size: `stored_size` gives the page `read_image` reads."""
    path = tmp_path / "pages.tif"
    Image.new("RGB", (32, 20)).save(path, save_all=True, append_images=[Image.new("RGB", (16, 48))])
    assert stored_size(path) == (20, 32) and stored_size(path, frame=1) == read_image(path, frame=1).shape[:2] == (48, 16)
    with pytest.raises(InputError, match="has 2 frames; there is no frame 2"):
        stored_size(path, frame=2)


def test_single_frame_files_ignore_frame_and_mpo_reads_its_primary_image(tmp_path, rgb):
    single = save(Image.fromarray(rgb), tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(single, frame=4), read_image(single))
    primary, preview = _frames(2)
    path = tmp_path / "camera.mpo"
    primary.save(path, format="MPO", save_all=True, append_images=[preview], quality=100)
    np.testing.assert_allclose(read_image(path), np.asarray(primary) / 255.0, atol=3 / 255)


# --- paths that are no image file -----------------------------------------------------------------


@contextlib.contextmanager
def never_blocks_on(fifo, seconds=20):
    """Fails, instead of hanging, a test whose code blocks opening `fifo`: after `seconds` a
    watchdog opens its write end, which releases a reader waiting in open()."""
    done, blocked = threading.Event(), []

    def watch():
        if done.wait(seconds):
            return
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only if a reader waits
            blocked.append(True)
        except OSError:
            pass

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()
        watchdog.join()
    assert not blocked, f"reading {fifo} blocked on the FIFO"


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_paths_that_are_no_file_say_what_they_are(tmp_path, kind):
    if kind == "directory":
        path, message = tmp_path / "folder.png", "is a directory, not an image file"
        path.mkdir()
    elif kind == "fifo":
        path, message = tmp_path / "pipe.png", "is a named pipe (FIFO), not an image file"
        os.mkfifo(path)
    else:
        path, message = pathlib.Path(os.devnull), "is a character device, not an image file"
    with never_blocks_on(path) if kind == "fifo" else contextlib.nullcontext():
        with pytest.raises(InputError, match=re.escape(f"{path} {message}")):
            read_image(path)


# --- through the command ----------------------------------------------------------------------------


def _one_error_line(result, message):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_cli_refuses_a_multi_frame_image_and_reads_the_frame_asked(tmp_path):
    gif = _multi_frame(tmp_path / "a.gif")
    still = save(_frames()[1], tmp_path / "b.png")
    _one_error_line(
        run_cli("score", gif, still, *RANDOM),
        f"{gif} has 3 frames (an animated or multi-page image); choose one with --frame K, K from 0 to 2",
    )
    result = run_cli("score", gif, still, "--frame", "1", *RANDOM)
    assert result.returncode == 0 and "= 0.0000" in result.stdout, result.stderr
    result = run_cli("score", gif, still, "--frame", "0", *RANDOM)
    assert result.returncode == 0 and "= 0.0000" not in result.stdout, result.stderr


def test_cli_compares_the_size_of_the_frame_asked(tmp_path):
    """`score` checks sizes from the files' headers before reading them: of the frame asked."""
    pages = tmp_path / "pages.tif"
    _frames()[0].resize((40, 36)).save(pages, save_all=True, append_images=[_frames()[1]])
    still = save(_frames()[1], tmp_path / "b.png")
    result = run_cli("score", pages, still, "--frame", "1", *RANDOM)
    assert result.returncode == 0 and "= 0.0000" in result.stdout, result.stderr


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_cli_says_what_a_path_that_is_no_file_is(tmp_path, kind):
    still = save(_frames()[0], tmp_path / "b.png")
    if kind == "directory":
        path, message = tmp_path / "folder", "is a directory, not an image file"
        path.mkdir()
    elif kind == "fifo":
        path, message = tmp_path / "pipe", "is a named pipe (FIFO), not an image file"
        os.mkfifo(path)
    else:
        path, message = pathlib.Path(os.devnull), "is a character device, not an image file"
    with never_blocks_on(path) if kind == "fifo" else contextlib.nullcontext():
        _one_error_line(run_cli("score", path, still, *RANDOM), f"{path} {message}")


# --- where images are read in bulk ------------------------------------------------------------------


def test_synth_source_folder_reads_16_bit_images_at_their_values(tmp_path):
    """`data synth --images`: a 16-bit grey PNG is neither clipped to white nor read as black."""
    from keras_lpips.data.synth_patches import Folder

    grey = np.full((70, 70), 32768, np.uint16)
    grey[:, 35:] = 16384
    save(Image.fromarray(grey), tmp_path / "g16.png")
    got = Folder(tmp_path)._load(0)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got[:, :35], 128)
    np.testing.assert_array_equal(got[:, 35:], 64)


def test_training_pipeline_scales_16_bit_pngs(tmp_path):
    """The tf.data pipeline reads 16-bit PNGs as `read_image` does, in 8 bits: grey as value / 65535
    rounded (value / 257), colour by its high byte (Pillow's 8 bits); never clipped."""
    import tensorflow as tf

    from keras_lpips.data.image_kinds import decode_kind
    from keras_lpips.data.pipeline import _read_image

    grey = np.array([[0, 32768, 65535, 1000, 128, 129]], np.uint16)
    rgb = np.stack([grey, 65535 - grey, grey // 2], axis=-1)
    for samples, colour in ((grey[..., None], 0), (rgb, 2), (np.stack([grey, grey], -1), 4)):
        path = _written(tmp_path / f"c{colour}.png", _png_bytes(samples, 16, colour))
        got = _read_image(tf.constant(str(path)), decode_kind(path)).numpy()
        channels = samples[..., :1] if colour != 2 else samples
        expected = np.round(channels / 257) if colour == 0 else channels >> 8
        np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))
        np.testing.assert_array_equal(got, np.round(read_image(path) * 255))


def test_data_verify_flags_animated_pngs(tmp_path):
    """`read_image`, hence fit and eval, refuse an animated PNG: `data verify` says so."""
    from keras_lpips.data.verify import _check_image

    path = _multi_frame(tmp_path / "anim.png")
    expected = "it has 3 frames (an animated or multi-page image); fit and eval read single-frame images only"
    assert _check_image(path) == f"multi-frame image {path}: {expected}"
    assert _check_image(save(_frames()[0], tmp_path / "still.png")) is None


def test_distance_map_picture_puts_each_image_beside_its_map_on_one_scale():
    """score --map's picture: REF, then image and map pairs, 8x nearest scaling of 32x32 tiles
    to 256 rows, 4 white columns apart; both maps coloured on the larger map's scale."""
    from keras_lpips.pictures import distance_map_picture, heatmap

    images = [np.full((32, 32, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    maps = np.stack([np.full((32, 32), 0.5), np.full((32, 32), 2.0)])
    picture = distance_map_picture(images, maps)
    assert picture.dtype == np.uint8 and picture.shape == (256, 5 * 256 + 4 * 4, 3)
    tiles = [picture[0, i * 260] for i in range(5)]
    assert [tuple(t) for t in tiles[:2]] == [(0, 0, 0), (128, 128, 128)] and tuple(tiles[3]) == (255, 255, 255)
    assert tuple(tiles[2]) == tuple(heatmap(np.array([[0.5]]), 2.0)[0, 0]) != tuple(tiles[4])
    assert tuple(tiles[4]) == tuple(heatmap(np.array([[2.0]]))[0, 0])
    assert (picture[:, 256:260] == 255).all()
