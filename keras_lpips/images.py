"""Reading images from disk into RGB float arrays, and writing distance maps as PNG.

Any format Pillow reads (PNG, JPEG, BMP, WebP, ...), 8- or 16-bit, grayscale,
RGBA, palette or CMYK, becomes RGB with EXIF orientation applied; floating-point
images must hold finite values in [0, 1]. Unreadable input raises `InputError`
naming the file.
"""

import pathlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keras_lpips import files
from keras_lpips.errors import InputError

# Floating-point pixels may stray this far outside [0, 1] (as `inputs.RANGE_TOLERANCE`; not imported: keras).
FLOAT_TOLERANCE = 0.01


def read_image(path):
    """Returns the image at `path` as float32 RGB in [0, 1], shape (H, W, 3)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"No such image file: {path}")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            image.load()
            if image.mode == "F":
                return _float_gray_to_rgb(np.asarray(image, dtype=np.float32), path)
            return _to_rgb_float(image)
    except UnidentifiedImageError:
        raise InputError(f"Not an image (or a format Pillow cannot read): {path}") from None
    except InputError:
        raise
    except Exception as error:  # decoders of hostile files raise many types; all mean "corrupt"
        raise InputError(f"Cannot decode image {path} (truncated or corrupt?): {error}") from None


def _float_gray_to_rgb(gray, path):
    """A floating-point image (e.g. a 32-bit TIFF) must hold finite values in [0, 1]:
    clipping NaN, inf or a [0, 255] image would give a silently wrong distance."""
    lo, hi = float(gray.min()), float(gray.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"Image {path} has NaN or infinite pixel values")
    if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
        raise InputError(f"Image {path} holds floating-point pixels in [{lo:.4g}, {hi:.4g}]; expected [0, 1]")
    return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)


def _to_rgb_float(image):
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16/32-bit grayscale
        gray = np.asarray(image, dtype=np.float64) / (65535.0 if image.mode.startswith("I;16") else 2**32 - 1)
        return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1).astype(np.float32)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")  # alpha dropped: colours as stored, not composited
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def resize_image(image, height, width):
    """Resizes a float RGB image with bicubic filtering (for `--resize`)."""
    channels = [Image.fromarray(image[..., c].astype(np.float32), mode="F") for c in range(3)]
    resized = [np.asarray(ch.resize((width, height), Image.BICUBIC)) for ch in channels]
    return np.clip(np.stack(resized, axis=-1), 0.0, 1.0).astype(np.float32)


# A perceptually ordered dark-to-bright colour ramp ("inferno"-like) for heatmaps.
_RAMP = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float32,
)


def heatmap(values, vmax=None):
    """Colours a 2-D array (0 dark .. vmax bright) as uint8 RGB."""
    vmax = float(vmax if vmax is not None else max(values.max(), 1e-12))
    t = np.clip(values / vmax, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (t - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[high] * frac).astype(np.uint8)


def save_png(array, path):
    """Writes a uint8 RGB array as PNG, whole or not at all (`files.atomic_path`); a missing or
    unwritable output folder raises `InputError`."""
    path = pathlib.Path(path)
    with files.atomic_path(path, as_input_error=True) as partial:
        Image.fromarray(array).save(partial, format="PNG")
    return path


def side_by_side(tiles, min_height=256, gap=4):
    """Joins uint8 RGB tiles of one size left to right, scaled up (nearest) to `min_height`."""
    scale = max(1, -(-min_height // tiles[0].shape[0]))
    tiles = [np.repeat(np.repeat(t, scale, axis=0), scale, axis=1) for t in tiles]
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile]
    return np.concatenate(row, axis=1)
