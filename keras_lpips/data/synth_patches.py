"""Source patches of the synthetic set (`keras_lpips.data.synth`): procedurally generated ones
(gradients, value-noise and stripe textures, antialiased shapes) or random crops of the images in
a folder (downscaled first so their shorter side is at most 256 px)."""

import functools
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from keras_lpips import files
from keras_lpips.errors import InputError
from keras_lpips.images import read_image

PATCH = 64
MAX_SOURCE_SIDE = 256  # images from a folder are downscaled so their shorter side is at most this


def to_uint8(x):
    """An array of pixel values rounded and clipped to uint8."""
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _grid(size):
    """(y, x) coordinate grids of a size x size patch, in pixels (float32)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _two_colours(rng, field):
    """field (H, W) in [0, 1] -> (H, W, 3) blend of two random colours."""
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    return c0 + field[..., None] * (c1 - c0)


def _gradient(rng, size):
    angle = rng.uniform(0, 2 * np.pi)
    y, x = _grid(size)
    t = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
    t -= t.min()
    return _two_colours(rng, t / (t.max() + 1e-6))


def _value_noise(rng, size):
    cells = int(rng.integers(3, 17))
    grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))
    return _two_colours(rng, np.clip(field, 0, 1))


def _stripes(rng, size):
    angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.05, 0.6), rng.uniform(0, 2 * np.pi)
    y, x = _grid(size)
    along = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
    wave = 0.5 + 0.5 * np.sin(np.float32(freq) * along + np.float32(phase))
    if rng.random() < 0.5:
        wave = (wave > 0.5).astype(np.float32)
    return _two_colours(rng, wave)


def procedural_patch(rng, size=PATCH):
    """A seeded synthetic patch (uint8, size x size x 3): a gradient, one or two textures
    (value noise, stripes), and up to four shapes drawn at twice the size and box-downscaled."""
    image = _gradient(rng, size)
    for texture in rng.permutation(2)[: int(rng.integers(1, 3))]:
        weight = np.float32(rng.uniform(0.2, 0.8))
        image = (1 - weight) * image + weight * (_value_noise, _stripes)[texture](rng, size)
    shapes = int(rng.integers(0, 5))
    if not shapes:
        return to_uint8(image)
    big = 2 * size
    canvas = Image.fromarray(to_uint8(image)).resize((big, big), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for _ in range(shapes):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * big
        w, h = rng.uniform(0.1, 0.6, 2) * big
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            points = rng.uniform(0, big, (int(rng.integers(3, 6)), 2))
            draw.polygon([tuple(p) for p in points], fill=colour)
    return np.asarray(canvas.resize((size, size), Image.BOX))


class Folder:
    """Random crops of the images in a folder, each image downscaled and decoded once (LRU)."""

    def __init__(self, folder):
        folder = pathlib.Path(folder)
        self.paths = files.image_files(folder, recursive=True, required=True)
        self.folder = folder
        self._load = functools.lru_cache(maxsize=256)(self._read)

    def _read(self, index):
        """The image as uint8 RGB, read as every image is (`images.read_image`: 16-bit and other
        pixel formats scaled right); a multi-frame file gives its first frame, a source of crops."""
        image = Image.fromarray(np.round(read_image(self.paths[index], frame=0) * 255).astype(np.uint8))
        short = min(image.size)
        if short > MAX_SOURCE_SIDE:
            scale = MAX_SOURCE_SIDE / short
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.BOX)
        return np.asarray(image)

    def patch(self, rng, size=PATCH):
        for _ in range(len(self.paths) + 10):
            image = self._load(int(rng.integers(len(self.paths))))
            h, w = image.shape[:2]
            if h >= size and w >= size:
                y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
                return image[y : y + size, x : x + size]
        raise InputError(f"No image in {self.folder} is at least {size}x{size} pixels")
