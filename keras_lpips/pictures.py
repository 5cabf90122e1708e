"""The pictures keras-lpips writes: distance maps coloured as heatmaps beside their images
(`score --map`), written as PNG whole or not at all."""

import pathlib

import numpy as np
from PIL import Image

from keras_lpips import files


# A perceptually ordered dark-to-bright colour ramp ("inferno"-like) for heatmaps.
_RAMP = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float32,
)


def heatmap(values, vmax=None):
    """Colours a 2-D array (0 dark .. vmax bright; vmax: its maximum by default) as uint8 RGB; an
    all-zero array is dark."""
    vmax = max(float(values.max() if vmax is None else vmax), 1e-12)
    t = np.clip(values / vmax, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (t - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[high] * frac).astype(np.uint8)


def save_png(array, path, overwrite=True):
    """Writes a uint8 RGB array as PNG, whole or not at all (`files.atomic_path`); a missing or
    unwritable output folder raises `InputError`, and so does an existing `path` without
    `overwrite` (one that appears while writing included)."""
    path = pathlib.Path(path)
    with files.atomic_path(path, as_input_error=True, overwrite=overwrite) as partial:
        Image.fromarray(array).save(partial, format="PNG")
    return path


def distance_map_picture(images, maps):
    """`score --map`'s picture: the reference, then each other image beside its distance map, as
    uint8 RGB. `images`: the reference then the others, (H, W, 3) in [0, 1]; `maps`: one (H, W)
    map per other image, all on one colour scale (bright = perceptually different)."""
    vmax = float(np.max(maps))
    tiles = [_to_uint8(images[0])]
    for image, distance_map in zip(images[1:], maps):
        tiles += [_to_uint8(image), heatmap(distance_map, vmax)]
    return _side_by_side(tiles)


def _to_uint8(image):
    return (np.asarray(image) * 255).round().astype(np.uint8)


def _side_by_side(tiles, min_height=256, gap=4):
    """Joins uint8 RGB tiles of one size left to right, `gap` white columns apart, scaled up
    (nearest) to at least `min_height` rows."""
    scale = max(1, -(-min_height // tiles[0].shape[0]))
    tiles = [np.repeat(np.repeat(t, scale, axis=0), scale, axis=1) for t in tiles]
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile]
    return np.concatenate(row, axis=1)
