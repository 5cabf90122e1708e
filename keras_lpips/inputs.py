"""Checks of the image pairs given to the metric: shape, size, finiteness, range.

Shape and size are checked whenever they are known (also while tracing a
graph); values (NaN, inf, out of range) when the images are concrete arrays,
i.e. in eager calls, where a wrong number would otherwise pass silently.
"""

import numpy as np
from keras import ops

from keras_lpips.errors import InputError

# Values may stray this fraction of the range beyond it (resampling overshoot).
RANGE_TOLERANCE = 0.01


def check_image_pair(inputs, input_range, min_size):
    """Returns the pair as float32 tensors, or raises `InputError` saying what is wrong."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise InputError(f"Expected a pair [img0, img1] of (N, H, W, 3) images. Received: {type(inputs).__name__}")
    # numpy inputs are checked as they are: no round trip through a tensor.
    arrays = [x if isinstance(x, np.ndarray) else None for x in inputs]
    pair = [ops.cast(ops.convert_to_tensor(x), "float32") for x in inputs]
    shapes = [tuple(x.shape) for x in pair]
    for shape in shapes:
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(f"Expected images of shape (N, H, W, 3) (RGB, channels last). Received shape {shape}")
        if any(side is not None and side < min_size for side in shape[1:3]):
            raise InputError(
                f"Images of {shape[1]}x{shape[2]} are too small for this network: it needs at least "
                f"{min_size}x{min_size}. Received shape {shape}"
            )
    if all(s is not None for s in shapes[0] + shapes[1]) and shapes[0] != shapes[1]:
        raise InputError(f"The two images must have the same shape. Received {shapes[0]} and {shapes[1]}")
    for name, array, x in zip(("img0", "img1"), arrays, pair):
        values = array if array is not None else _concrete(x)
        if values is not None:
            check_values(values, input_range, name)
    return pair


def check_values(values, input_range, name="image"):
    """Raises `InputError` for NaN/inf or values outside `input_range` (+- tolerance)."""
    if values.size == 0:
        raise InputError(f"{name} is empty. Received shape {values.shape}")
    # Two vectorised passes: min and max propagate NaN, and any inf is one of them.
    lo, hi = float(values.min()), float(values.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{name} contains NaN or infinite values")
    low, high = input_range
    slack = RANGE_TOLERANCE * (high - low)
    if lo < low - slack or hi > high + slack:
        raise InputError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], outside input_range=({low:g}, {high:g}); "
            f"pass input_range matching your images, e.g. (0, 1) or (0, 255)"
        )


def _concrete(x):
    """The tensor's values as numpy, or None while tracing a graph."""
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # symbolic tensors (tf.function, jax.jit, KerasTensor) have no values
        return None
