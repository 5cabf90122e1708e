"""Checks of images given as numpy arrays, which need neither Keras nor TensorFlow: shapes,
sizes, finiteness and range, each an `InputError` with one message.

`keras_lpips.inputs` runs them on the metric's inputs (and adds what tensors and graphs need);
`keras_lpips.litert_metric` on the LiteRT path, which imports no Keras; `keras_lpips.embedding`
and `keras_lpips.pairwise` on the sets they compare.
"""

import sys

import numpy as np

from keras_lpips.errors import InputError

# Values may stray this fraction of the range beyond it (resampling overshoot).
RANGE_TOLERANCE = 0.01


# What the messages call the two images of a pair: an `LPIPS` call's, and a Keras loss's or metric's
# (`LPIPSLoss`, `MeanLPIPS`).
NAMES = ("img0", "img1")
LOSS_NAMES = ("y_true", "y_pred")


def as_numpy(values, dtype=None):
    """`values` as a numpy array (the array itself where it is one of `dtype`). A tensor of the
    Keras backend goes through `keras.ops.convert_to_numpy`, which detaches it and copies it off
    its device: numpy cannot read a torch tensor that requires grad (the metric's outputs and
    embeddings, where its heads are trainable). Keras is not imported here (the LiteRT path runs
    without it): a Keras tensor exists only once it is."""
    keras = sys.modules.get("keras")
    if keras is not None and not isinstance(values, np.ndarray) and keras.ops.is_tensor(values):
        values = keras.ops.convert_to_numpy(values)
    return np.asarray(values, dtype)


def checked_array_pair(inputs, input_range, min_size, names=NAMES, fixed_range=False):
    """A pair [img0, img1] of (N, H, W, 3) images as float32 numpy arrays, or `InputError`
    saying what is wrong (the messages call the two `names`; `fixed_range`: see `check_values`)."""
    check_is_pair(inputs)
    pair = [as_numpy(x, np.float32) for x in inputs]
    check_shapes([x.shape for x in pair], min_size, names)
    for name, x in zip(names, pair):
        check_values(x, input_range, name, fixed_range)
    return pair


def check_is_pair(inputs):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise InputError(f"Expected a pair [img0, img1] of (N, H, W, 3) images. Received: {type(inputs).__name__}")


def check_shapes(shapes, min_size, names=NAMES):
    """`InputError` unless all `shapes` are (N, H, W, 3), no known side is below `min_size` and
    each agrees with the first where both are known (None: a side unknown while tracing); the
    messages call them `names`."""
    for name, shape in zip(names, shapes):
        if len(shape) == 4 and shape[-1] is None:
            raise InputError(
                f"Expected images of shape (N, H, W, 3) (RGB, channels last). Received {name} of shape {tuple(shape)}: "
                "its channels are unknown while tracing; decode with channels=3 (tf.io.decode_png(data, channels=3)) "
                "or fix them with tf.ensure_shape"
            )
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(f"Expected images of shape (N, H, W, 3) (RGB, channels last). Received {name} of shape {tuple(shape)}")
        check_static_size(shape, min_size)
    for name, shape in zip(names[1:], shapes[1:]):
        if any(a is not None and b is not None and a != b for a, b in zip(shapes[0], shape)):
            raise InputError(
                f"The two images must have the same shape. Received {names[0]} of shape {tuple(shapes[0])} and {name} of shape {tuple(shape)}"
            )


def check_image_set(images, input_range, min_size, name="images", minimum=1):
    """`images`, at least `minimum` images of one size (an (N, H, W, 3) array or a list of
    (H, W, 3) ones), as a float32 numpy array, or `InputError` saying what is wrong: the sets
    that embeddings and distance matrices are computed over."""
    if isinstance(images, (list, tuple)):
        images = [as_numpy(image, np.float32) for image in images]
        if len({image.shape for image in images}) > 1:
            shapes = sorted({image.shape for image in images})
            raise InputError(f"Need images of one size in {name}: give each size apart. Received images of shapes {shapes[0]} and {shapes[1]}")
    images = as_numpy(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) < minimum:
        least = ("one image", "two images")[minimum - 1]
        raise InputError(f"Need at least {least} of one size in {name}, shape (N, H, W, 3). Received shape {images.shape}")
    check_values(images, input_range, name)
    check_static_size(images.shape, min_size)
    return images


def check_static_size(shape, min_size):
    """`InputError` where a known side of `shape` (N, H, W, C) is below `min_size`."""
    if len(shape) == 4 and any(side is not None and side < min_size for side in shape[1:3]):
        raise InputError(
            f"Images of {shape[1]}x{shape[2]} are too small for this network: it needs at least "
            f"{min_size}x{min_size}. Received shape {shape}"
        )


def range_bounds(input_range):
    """(least, greatest): the values an image in `input_range` may hold, the range widened by
    `RANGE_TOLERANCE` of it on each side. The one tolerance rule: the numpy checks here, the eager,
    traced and graph checks of `keras_lpips.inputs` all compare with these bounds."""
    low, high = (float(v) for v in input_range)
    slack = RANGE_TOLERANCE * (high - low)
    return low - slack, high + slack


def values_advice(input_range, fixed_range=False):
    """What a message about values outside `input_range` ends with: pass a matching input_range,
    or, for a model that takes one range only (`fixed_range`: an export, the LiteRT scorer),
    that range."""
    low, high = (float(v) for v in input_range)
    if fixed_range:
        return f"; this model takes images in [{low:g}, {high:g}] only (8-bit pixels divided by 255)"
    return f", outside input_range=({low:g}, {high:g}); pass input_range matching your images, e.g. (0, 1) or (0, 255)"


def check_values(values, input_range, name="image", fixed_range=False):
    """Raises `InputError` for an empty array, NaN/inf or values outside `input_range` (+-
    tolerance); the message ends with `values_advice`."""
    check_not_empty(values.shape, name)
    # Two vectorised passes: min and max propagate NaN, and any inf is one of them.
    lo, hi = float(values.min()), float(values.max())
    check_extremes(lo, hi, np.isfinite(lo) and np.isfinite(hi), input_range, name, fixed_range)


def check_not_empty(shape, name="image"):
    """`InputError` where `shape` (a tuple of ints) holds no value: there is nothing to check."""
    if 0 in shape:
        raise InputError(f"{name} is empty. Received shape {tuple(shape)}")


def check_extremes(lo, hi, finite, input_range, name="image", fixed_range=False):
    """The rule of `check_values` on an image's reductions, wherever they were computed (numpy's
    here, the tensor's device's in `keras_lpips.inputs`): `InputError` unless `finite` (every
    value is: min and max need not propagate NaN on every device) and `lo` and `hi`, its least
    and greatest value, lie within `input_range` up to `RANGE_TOLERANCE` of it."""
    if not finite:
        raise InputError(f"{name} contains NaN or infinite values")
    least, greatest = range_bounds(input_range)
    if lo < least or hi > greatest:
        raise InputError(f"{name} has values in [{lo:.4g}, {hi:.4g}]{values_advice(input_range, fixed_range)}")
