"""Reading images from disk into RGB float arrays, and resizing them; the PNGs keras-lpips writes
are `keras_lpips.pictures`.

`read_image(path, frame=None)` reads any file Pillow reads (PNG, JPEG, BMP, WebP, TIFF, ...) as
float32 RGB in [0, 1], with EXIF orientation applied. How each of Pillow's pixel formats (its
image modes) becomes RGB, and which stored value is white (1.0), is one table, `PIXEL_FORMATS`:

| mode | from files such as | converted first to | white |
|---|---|---|---|
| `1` | bilevel PNG, TIFF, BMP | `L` (0 or 255) | 255 |
| `L` | grey PNG, JPEG, TIFF (1/2/4-bit grey scaled up by Pillow) | | 255 |
| `LA`, `RGBA` | with alpha (16-bit PNG/TIFF too: Pillow keeps 8 bits) | | 255 |
| `La`, `RGBa` | premultiplied alpha (TIFF) | `LA`, `RGBA` (alpha undone) | 255 |
| `P`, `PA` | palette PNG, GIF, BMP, TIFF, with or without transparency | `RGBA` | 255 |
| `RGB`, `RGBX` | colour, 8-bit or 16-bit (PNG, TIFF, PPM: Pillow keeps the high 8 bits) | | 255 |
| `CMYK` | CMYK JPEG and TIFF | `RGB` (Pillow's, no colour profile) | 255 |
| `YCbCr` | YCbCr TIFF | `RGB` | 255 |
| `LAB` | CIE L*a*b* TIFF | `RGB` (sRGB, through Little CMS) | 255 |
| `HSV` | none (listed as a mode Pillow has) | `RGB` | 255 |
| `I;16`, `I;16L`, `I;16B`, `I;16N` | 16-bit grey PNG, TIFF, JPEG 2000, FITS | | 65535 (b-bit TIFF: 2**b - 1) |
| `I` | 32-bit integers: 16-bit PGM, 32-bit or signed TIFF, FITS | | 65535 from PGM/PPM, PNG (`INT32_WHITE`); else refused |
| `F` | 32-bit float TIFF, PFM, FITS | | 1.0: finite values in [0, 1] or refused |

Alpha is dropped: colours as stored, not composited over a background. Integer samples stored
as signed (a TIFF's SampleFormat 2, a FITS file's BITPIX 16 without BZERO 32768) are refused,
as is a mode missing from the table: no agreed black and white. A value above its format's
white is refused too, never clipped.

Two conventions of the file Pillow leaves undone are undone here. A min-is-white TIFF
(PhotometricInterpretation 0), which Pillow inverts itself only up to 8 bits, is inverted above
(white minus the value; 1 minus it for floats). A FITS file's BZERO and BSCALE, which Pillow
ignores, are read from its header: BITPIX 16 with BZERO 32768 and BSCALE 1 is unsigned 16-bit
(its two's complement samples, as Pillow returns them, with the high bit flipped back); any
other scaling of 8- or 16-bit integers or floats is refused, as is BITPIX 32 (mode `I`).

A file holding several frames (animated GIF, PNG or WebP, multi-page TIFF) is refused unless
`frame` picks one; files of one frame ignore `frame`. An MPO
(camera JPEG whose further images are previews or depth maps) is read as its first, primary image.

A path that is no regular file (a directory, FIFO, device) is refused by what it is, without
opening it: reading a FIFO would block. Every problem raises one `InputError` naming the file.
"""

import contextlib
import dataclasses
import io
import math
import os
import pathlib
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keras_lpips.argument_checks import check_integer
from keras_lpips.array_checks import RANGE_TOLERANCE
from keras_lpips.errors import DataError, InputError



@dataclasses.dataclass(frozen=True)
class PixelFormat:
    """How one Pillow mode becomes RGB in [0, 1]: `convert` to that Pillow mode first (None: the
    values as stored), then divide by `white`, the stored value of full intensity (None: it
    depends on the file, see `_white`)."""

    convert: str | None
    white: float | None


_8BIT = PixelFormat(None, 255)
_16BIT = PixelFormat(None, 65535)
PIXEL_FORMATS = {
    "1": PixelFormat("L", 255),
    "L": _8BIT,
    "LA": _8BIT,
    "La": PixelFormat("LA", 255),
    "P": PixelFormat("RGBA", 255),
    "PA": PixelFormat("RGBA", 255),
    "RGB": _8BIT,
    "RGBA": _8BIT,
    "RGBa": PixelFormat("RGBA", 255),
    "RGBX": _8BIT,
    "CMYK": PixelFormat("RGB", 255),
    "YCbCr": PixelFormat("RGB", 255),
    "LAB": PixelFormat("RGB", 255),
    "HSV": PixelFormat("RGB", 255),
    "I;16": _16BIT,
    "I;16L": _16BIT,
    "I;16B": _16BIT,
    "I;16N": _16BIT,
    "I": PixelFormat(None, None),
    "F": PixelFormat(None, 1.0),
}
# White of mode "I" (32-bit signed integers) by file format, where Pillow fills it from 16 bits:
# PGM/PPM of any maxval above 255 is rescaled to 0..65535; older Pillow read 16-bit grey PNG as "I".
INT32_WHITE = {"PPM": 65535, "PNG": 65535}

# The most pixels (width x height) `read_image` decodes: Pillow refuses a larger image before
# decoding it (DecompressionBombError, above twice its MAX_IMAGE_PIXELS: 178,956,970). The
# SavedModel's bytes signatures apply the same limit (`keras_lpips.encoded_images`).
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS

_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLE_FORMAT, _TIFF_SIGNED = 258, 339, 2
_TIFF_PHOTOMETRIC, _TIFF_MIN_IS_WHITE = 262, 0
_INVERTED_BY_PILLOW = ("1", "L")  # min-is-white TIFFs of 1 to 8 bits; not 16-bit or float ones
# BZERO of unsigned FITS integers by BITPIX (8-bit samples are stored unsigned, 16-bit ones signed),
# with BSCALE 1; a BZERO 2**(BITPIX - 1) lower makes them signed.
_FITS_UNSIGNED_ZERO = {8: 0, 16: 32768}
_FITS_CARD, _FITS_BLOCK = 80, 2880
_FITS_MAX_AXES = 999  # the largest NAXIS the FITS standard allows
_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def read_image(path, frame=None):
    """Returns the image at `path` as float32 RGB in [0, 1], shape (H, W, 3).

    `frame` (0 is the first) picks one frame of a multi-frame file (animated GIF/PNG/WebP,
    multi-page TIFF), which is refused without it; files of one frame ignore it."""
    path = pathlib.Path(path)
    _check_frame(frame)
    _check_regular_file(path)
    return _decode(path, path, frame)


def stored_size(path, frame=None):
    """(height, width) of the image file at `path` as `read_image` returns it (EXIF orientation
    applied), read from its header without decoding it: what a command checks (sizes that must
    match, the memory it has) before reading a huge image whole. With `frame`, that frame's of a
    multi-frame file (the pages of a TIFF may differ; refused as `read_image` refuses it);
    without, the first's."""
    path = pathlib.Path(path)
    _check_frame(frame)
    _check_regular_file(path)
    with _reading(path), Image.open(path) as image:
        if frame is not None:
            _seek_frame(image, path, frame)
        width, height = _stored_width_height(image)
        turned = image.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn
        return (width, height) if turned else (height, width)


_ORIENTATION = 0x0112  # the EXIF tag
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257  # the TIFF tags


def _stored_width_height(image):
    """The image's width and height as stored, before its EXIF orientation: Pillow reports some
    TIFF pages' sizes already turned (it turns them as it loads them), so a TIFF's are read from
    its tags."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and _TIFF_WIDTH in tags and _TIFF_LENGTH in tags:
        return int(tags[_TIFF_WIDTH]), int(tags[_TIFF_LENGTH])
    return image.width, image.height


def decode_image(data, name, frame=None):
    """`read_image` of an image file's bytes, read from anywhere (a Beam file system, a
    request); `name` stands for the file in error messages."""
    _check_frame(frame)
    return _decode(io.BytesIO(data), name, frame)


def _check_frame(frame):
    check_integer("frame", frame, 0, allow_none=True)


def _decode(source, path, frame):
    """The image in `source` (a path or a binary file object) as `read_image` returns it;
    `path` names it in errors."""
    with _reading(path), Image.open(source) as image:
        _seek_frame(image, path, frame)
        flip_sign_bit = _fits_unsigned_16_bit(image, path)  # before loading, which closes the file
        image.load()
        white = _white(image, path)
        inverted = _min_is_white_left(image)
        return _to_rgb(ImageOps.exif_transpose(image), white, path, flip_sign_bit=flip_sign_bit, inverted=inverted)


@contextlib.contextmanager
def _reading(path):
    """Pillow's errors, reading the image `path` names, as one `DataError` each (`InputError`s
    pass). Pillow's warnings are silenced: of a "decompression bomb" from 89 megapixels (the
    memory a command needs is checked against what is free instead: `keras_lpips.memory`), and
    its UserWarnings (corrupt EXIF data, a palette's transparency), which the image still reads
    through and a user can do nothing about; each would add lines to a command's output."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    except UnidentifiedImageError:
        raise DataError(f"Not an image (or a format Pillow cannot read): {path}") from None
    except Image.DecompressionBombError as error:  # over 179 megapixels: refused by Pillow, not corrupt
        raise DataError(f"{path} is too large to decode: {error}") from None
    except InputError:
        raise
    except PermissionError as error:
        raise DataError(f"Cannot read image file {path}: {error.strerror}") from None
    except Exception as error:  # decoders of hostile files raise many types; all mean "corrupt"
        raise DataError(f"Cannot decode image {path} (truncated or corrupt?): {error}") from None


def is_multi_frame(path):
    """Whether the image file at `path` holds several frames a reader must choose between
    (`frame_count`), read from its header (and frame table) without decoding it."""
    path = pathlib.Path(path)
    _check_regular_file(path)
    with _reading(path), Image.open(path) as image:
        return frame_count(image) > 1


def frame_count(image):
    """The frames of an open Pillow image a reader must choose between: 1 for an MPO, whose
    further images are previews or depth maps of its first."""
    return 1 if image.format == "MPO" else getattr(image, "n_frames", 1)


def _check_regular_file(path):
    """Refuses a missing path, or one that is a directory, FIFO, device or socket, from its
    `os.stat` alone: opening a FIFO would block until something writes to it."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"No such image file: {path}") from None
    except OSError as error:
        raise DataError(f"Cannot read image file {path}: {error.strerror or error}") from None
    for is_kind, kind in _NOT_FILES:
        if is_kind(mode):
            raise InputError(f"{path} is {kind}, not an image file")


def _seek_frame(image, path, frame):
    frames = frame_count(image)
    if frames == 1:
        return
    last = f"K from 0 to {frames - 1}"
    if frame is None:
        raise InputError(
            f"{path} has {frames} frames (an animated or multi-page image); choose one with frame=K, {last}"
        )
    if frame >= frames:
        raise InputError(f"{path} has {frames} frames; there is no frame {frame} ({last})")
    image.seek(frame)


def _white(image, path):
    """The stored value of full intensity of the loaded `image`: its mode's row of
    `PIXEL_FORMATS`, except where the file says more (a TIFF's bit depth, mode "I" by format)."""
    if image.mode not in PIXEL_FORMATS:
        raise DataError(
            f"Image {path} has Pillow mode {image.mode!r}, which keras-lpips does not read; "
            f"expected one of {', '.join(PIXEL_FORMATS)}"
        )
    tags = getattr(image, "tag_v2", {}) if image.format == "TIFF" else {}
    if _TIFF_SIGNED in tags.get(_TIFF_SAMPLE_FORMAT, ()):
        raise DataError(
            f"Image {path} holds signed integer samples, which have no agreed black and white; "
            "save it with unsigned samples or as floating point in [0, 1]"
        )
    white = PIXEL_FORMATS[image.mode].white
    if image.mode == "I":
        white = INT32_WHITE.get(image.format)
        if white is None:
            raise DataError(
                f"Image {path} holds 32-bit integer pixels ({image.format}, Pillow mode 'I'), whose white level "
                "is unknown; save it with 8 or 16 bits per sample or as floating point in [0, 1]"
            )
    if white == 65535 and tags.get(_TIFF_BITS_PER_SAMPLE):
        white = 2 ** max(tags[_TIFF_BITS_PER_SAMPLE]) - 1  # a 12-bit TIFF holds 0..4095
    return white


def _min_is_white_left(image):
    """Whether the loaded `image` is a min-is-white TIFF (0 stored for white) whose samples Pillow
    returns as stored: it inverts 1- to 8-bit grey itself, not 16-bit or floating-point grey."""
    tags = image.tag_v2 if image.format == "TIFF" else {}
    return tags.get(_TIFF_PHOTOMETRIC) == _TIFF_MIN_IS_WHITE and image.mode not in _INVERTED_BY_PILLOW


def _fits_unsigned_16_bit(image, path):
    """Whether `image`, not yet loaded, is a FITS file of unsigned 16-bit samples (BITPIX 16,
    BZERO 32768, BSCALE 1), which it stores as signed (the value - 32768): Pillow, ignoring BZERO,
    returns their two's complement, whose high bit must be flipped back. Refuses the scalings
    Pillow ignores that keras-lpips does not undo: signed samples, any other BZERO or BSCALE. 32-bit
    integers (BITPIX 32) are refused by `_white`, whatever their scaling."""
    if image.format != "FITS":
        return False
    cards = _fits_header(image.fp)
    compressed = b"Z" if cards.get(b"ZIMAGE") == b"T" else b""
    axes = _fits_axes(cards, compressed, image.fp)
    planes = math.prod(axes[2:])  # Python integers: no overflow to 0
    if planes > 1:  # Pillow reads the first plane alone, silently
        raise InputError(
            f"Image {path} holds {planes} planes (a FITS cube of axes {axes[2:]} beyond the image's two), "
            "of which Pillow reads only the first; save the plane to compare as an image of its own"
        )
    bitpix = int(cards[compressed + b"BITPIX"])
    zero, scale = (float(cards.get(key, default).replace(b"D", b"E")) for key, default in ((b"BZERO", b"0"), (b"BSCALE", b"1")))
    unsigned_zero = _FITS_UNSIGNED_ZERO.get(bitpix, 0)
    if bitpix == 32:
        return False  # refused by `_white`, whatever its scaling
    if (zero, scale) == (unsigned_zero, 1):
        return bitpix == 16
    if bitpix in _FITS_UNSIGNED_ZERO and (zero, scale) == (unsigned_zero - 2 ** (bitpix - 1), 1):
        raise DataError(
            f"Image {path} holds signed integer samples (FITS BITPIX {bitpix}, BZERO {zero:g}), which have no agreed "
            "black and white; save it with unsigned samples (BITPIX 8, or 16 with BZERO 32768) or as floating point in [0, 1]"
        )
    raise DataError(
        f"Image {path} holds scaled samples (FITS BITPIX {bitpix}, BZERO {zero:g}, BSCALE {scale:g}), whose white level "
        f"is unknown; expected BZERO {unsigned_zero} and BSCALE 1"
    )


def _fits_axes(cards, prefix, file):
    """The axis lengths (NAXIS1 to NAXISn, a missing one 1) the FITS header `cards` declares,
    `prefix` b"Z" for a compressed image's. `ValueError` (a corrupt file) for a NAXIS outside the
    0 to 999 FITS allows, a negative length, or an uncompressed image declaring more bytes of
    samples than the open `file` holds: the lengths it returns are then of a size that exists."""
    count = int(cards[prefix + b"NAXIS"])
    if not 0 <= count <= _FITS_MAX_AXES:
        raise ValueError(f"FITS NAXIS {count} is outside 0 to {_FITS_MAX_AXES}")
    axes = [int(cards.get(prefix + b"NAXIS%d" % axis, b"1")) for axis in range(1, count + 1)]
    if any(length < 0 for length in axes):
        raise ValueError("a FITS axis length (NAXISn) is negative")
    if not prefix:
        position = file.tell()
        size = file.seek(0, os.SEEK_END)
        file.seek(position)
        if abs(int(cards[b"BITPIX"])) // 8 * math.prod(axes) > size:  # Python integers: no overflow
            raise ValueError(f"its FITS header declares more bytes of samples than the file's {size} bytes")
    return axes


def _fits_header(file):
    """The keywords of the FITS header Pillow reads the image of, with their values (bytes, as
    Pillow parses them), read from the start of the open `file` in 80-byte cards: merged as Pillow
    merges them (a primary header without data, then its extension's) up to the first END whose
    header has data (NAXIS above 0). `file` is left where it was."""
    position, cards = file.tell(), {}
    file.seek(0)
    for card in iter(lambda: file.read(_FITS_CARD), b""):
        keyword = card[:8].strip()
        if keyword == b"END":
            if int(cards.get(b"NAXIS", b"0")) > 0:
                break
            file.seek(-(-file.tell() // _FITS_BLOCK) * _FITS_BLOCK)  # the next header starts a block
            continue
        value = card[8:].split(b"/")[0].strip()
        cards[keyword] = value[1:].strip() if value.startswith(b"=") else value
    file.seek(position)
    return cards


def _to_rgb(image, white, path, flip_sign_bit=False, inverted=False):
    """Converts as `PIXEL_FORMATS` says, checks the range, divides by `white`; grey is repeated
    into three channels, alpha and padding channels are dropped. `flip_sign_bit`: the 16-bit
    samples are two's complement of values 32768 lower (a FITS's BZERO 32768); `inverted`: the
    file stores 0 for white (a min-is-white TIFF Pillow has not inverted)."""
    convert = PIXEL_FORMATS[image.mode].convert
    values = np.asarray(image.convert(convert) if convert else image)
    if flip_sign_bit:
        values = values ^ np.uint16(0x8000)
    if values.dtype.kind == "f":
        lo, hi = float(values.min()), float(values.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(f"Image {path} has NaN or infinite pixel values")
        if lo < -RANGE_TOLERANCE or hi > white + RANGE_TOLERANCE:
            raise DataError(f"Image {path} holds floating-point pixels in [{lo:.4g}, {hi:.4g}]; expected [0, 1]")
    elif values.size and (values.min() < 0 or values.max() > white):
        raise DataError(
            f"Image {path} holds values in [{values.min()}, {values.max()}], outside the 0..{white:g} its format implies"
        )
    values = np.clip(values.astype(np.float64) / white, 0.0, 1.0)
    if inverted:
        values = 1.0 - values
    if values.ndim == 2:
        values = values[..., None]
    rgb = values[..., :3] if values.shape[-1] >= 3 else np.repeat(values[..., :1], 3, axis=-1)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def read_images(paths, size=None, resize=False, frame=None):
    """The images at `paths` (`read_image`, `frame` of multi-frame ones) as one (N, H, W, 3)
    float32 array, all of (height, width) `size` (default: the first image's); an image of
    another size is resized to it with `resize` (`resize_image`), else refused (`InputError`
    naming `resize=True`)."""
    images, first = [], None
    for path in paths:
        image = read_image(path, frame)
        if size is None:
            size, first = image.shape[:2], path
        if tuple(image.shape[:2]) != tuple(size):
            if not resize:
                raise InputError(_size_mismatch(path, image.shape[:2], size, first))
            image = resize_image(image, *size)
        images.append(image)
    return np.stack(images)


def check_same_size(paths, sizes):
    """Refuses (`InputError` naming `resize=True`) images whose (height, width) `sizes` (e.g. their
    `stored_size`) differ from the first's: what `read_images` would refuse, before decoding."""
    for path, size in zip(paths[1:], sizes[1:]):
        if tuple(size) != tuple(sizes[0]):
            raise InputError(_size_mismatch(path, size, sizes[0], paths[0]))


def _size_mismatch(path, size, wanted, first=None):
    like = f"but {first} is {wanted[1]}x{wanted[0]}" if first is not None else f"not {wanted[1]}x{wanted[0]} like the images it is compared with"
    return f"{path} is {size[1]}x{size[0]} {like}; pass resize=True to resize it"


def resize_image(image, height, width):
    """Resizes a float RGB image with bicubic filtering (for `resize=True`)."""
    channels = [Image.fromarray(image[..., c].astype(np.float32), mode="F") for c in range(3)]
    resized = [np.asarray(ch.resize((width, height), Image.BICUBIC)) for ch in channels]
    return np.clip(np.stack(resized, axis=-1), 0.0, 1.0).astype(np.float32)
