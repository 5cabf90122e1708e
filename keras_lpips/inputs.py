"""Checks of the image pairs given to the metric: type, shape, size, finiteness, range.

Each check raises `InputError` with one message, wherever the metric runs:

- eagerly (numpy arrays, eager tensors, Python lists): all of them, in Python (an empty batch
  has no values to check: it gives empty distances); a torch or JAX
  tensor's values are reduced where the tensor lies (its min, max and sum, on its GPU) and only
  those scalars come to the host, never the images (TensorFlow's eager tensors too, except on
  the CPU, where numpy reads them in place, faster);
- while a graph is traced (`tf.function`, `jax.jit`, a Keras functional model): the type and
  whatever shape is known then (rank, channels, sizes and batches that are static);
- inside a TensorFlow graph (`tf.function`, how `LPIPSLoss` and `MeanLPIPS` run under
  `model.fit`): what is only known at run time (a batch or a size left open, the values) as
  graph assertions, checked before the network runs, whose failure is a
  `tf.errors.InvalidArgumentError` carrying the same message ("assertion failed: [MESSAGE]").
  XLA (`jit_compile=True`, Keras' default for `fit` on a GPU) and a TFLite conversion drop
  assertions: there a pair that fails them gives NaN distances, never a number. Under JAX's
  `jit` (`model.fit` and `predict` on the JAX backend) and `torch.compile` (`jit_compile=True` on
  the torch backend) the shapes are checked where static; the values cannot raise (under
  `torch.compile` a check in Python would break its graph and recompile it for each value), so a
  pair that fails their checks gives NaN distances, as under XLA.

The graph's checks are `keras_lpips.graph_checks`, where an export's signatures
(`keras_lpips.export`) check what a client sends (`checked_request`): the same checks, messages
in the client's terms, and in TFLite and ONNX NaN outputs for each refused item alone.

Integer images are accepted and converted to float32 (their values checked against
`input_range` like any other: uint8 images need `input_range=(0, 255)`); booleans, complex
numbers, strings and objects are refused.
"""

import contextlib
import os

import keras
import numpy as np
from keras import ops

from keras_lpips.array_checks import NAMES, check_extremes, check_is_pair, check_shapes, check_static_size, check_values, range_bounds
from keras_lpips.errors import InputError, reason
from keras_lpips.graph_checks import asserted, graph_checked, in_tensorflow_graph, too_small_message

_PIXEL_DTYPES = ("float", "bfloat", "int", "uint")


def check_image_pair(inputs, input_range, min_size, names=NAMES, fixed_range=False):
    """Returns the pair as float32 tensors, or raises `InputError` saying what is wrong (in a
    TensorFlow graph: the tensors, behind assertions of what is unknown until run time); the
    messages call the two `names` (`fixed_range`: see `array_checks.values_advice`)."""
    check_is_pair(inputs)
    return check_images(inputs, input_range, min_size, names, fixed_range)


def check_images(images, input_range, min_size, names, fixed_range=False):
    """`check_image_pair` for any number of images of one shape, one per name (`LPIPS.twoafc`'s
    triplet, `LPIPS.embed`'s one batch), each checked once."""
    images = [as_image_batch(x, name) for name, x in zip(names, images)]
    tensors = [_as_float32(x) for x in images]
    check_shapes([static_shape(x, name) for name, x in zip(names, tensors)], min_size, names)
    if in_tensorflow_graph(tensors):
        return graph_checked(tensors, input_range, min_size, names, fixed_range)
    if _traced_by_jax(tensors) or _compiled_by_torch():
        return _nan_unless_within(tensors, input_range)
    for name, image, x in zip(names, images, tensors):
        if static_shape(x)[0] == 0:
            continue  # an empty batch: no values to check, no distances to give
        if isinstance(image, np.ndarray):  # already on the host: checked as it is, no round trip
            check_values(image, input_range, name, fixed_range)
        elif _read_by_numpy(x):
            values = _concrete(x)
            if values is not None:
                check_values(values, input_range, name, fixed_range)
        elif not _symbolic(x):
            _check_on_device(x, input_range, name, fixed_range)
    return tensors


def _as_float32(x):
    """`x` as a float32 tensor; a `KerasTensor` (a functional model being built) as it is: an op
    on it here, outside any layer, would become a node of the model (its auto-generated name,
    e.g. "convert_to_tensor", then clashes with another's when the saved model loads). The layer
    it goes into runs on the real tensor, which is converted then."""
    if isinstance(x, keras.KerasTensor):
        return x
    return ops.cast(ops.convert_to_tensor(x), "float32")


def checked_size(images, min_size):
    """`images`, (N, H, W, C), refused when a side is below `min_size`: an `InputError` where
    the size is known (eagerly, or static while tracing), else, in a TensorFlow graph, behind
    an assertion with the same message, and in graphs `traced_for_export` padded with NaN up
    to `min_size`. The network's own guard (`LPIPS.features`): on images too small a CPU
    convolution kernel can kill the process (SIGFPE) instead of raising."""
    if not hasattr(images, "shape"):  # Python lists
        images = ops.convert_to_tensor(images)
    shape = static_shape(images)
    check_static_size(shape, min_size)
    if len(shape) != 4 or None not in shape[1:3] or not in_tensorflow_graph([images]):
        return images
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util  # as in `graph_checks._behind_assertion`

    size = tf.shape(images)
    (images,) = asserted([images], [(tf.reduce_all(size[1:3] >= min_size), too_small_message(size, min_size))])
    if not _padding_too_small or control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return images
    short = tf.maximum(min_size - size[1:3], 0)
    n, height, width = size[0], size[1], size[2]
    # Concatenated NaN blocks rather than tf.pad, whose amounts as tensors leave the channels
    # unknown to a converter (TFLite then refuses the first convolution).
    below = tf.fill(tf.stack([n, short[0], width, shape[3]]), tf.constant(np.nan, images.dtype))
    taller = tf.concat([images, below], axis=1)
    right = tf.fill(tf.stack([n, height + short[0], short[1], shape[3]]), tf.constant(np.nan, images.dtype))
    return tf.concat([taller, right], axis=2)


@contextlib.contextmanager
def traced_for_export():
    """Graphs traced inside (`keras_lpips.export`: the SavedModel, and from it TFLite and ONNX)
    also pad an image too small for the network, NaN by then, up to its minimum with NaN
    (`checked_size`): TFLite and ONNX drop assertions, and onnxruntime's convolution dies
    (SIGFPE) on a zero output size. Elsewhere the assertion stops such images before the
    network, and the pad (1-3% of a graph call, measured) is left out; XLA compiles each shape
    on its own and needs none."""
    global _padding_too_small
    previous, _padding_too_small = _padding_too_small, True
    try:
        yield
    finally:
        _padding_too_small = previous


_padding_too_small = False


def static_shape(x, name="images"):
    """The shape of `x` with each side an int where it is known, else None (TensorFlow's open
    sides, JAX's symbolic ones while tracing): what can be compared. `InputError` for a rank
    unknown while tracing (the message calls `x` `name`)."""
    if getattr(x.shape, "rank", 0) is None:
        raise InputError(f"Expected images of shape (N, H, W, 3) (RGB, channels last). Received {name}: a tensor of unknown rank")
    return tuple(int(side) if isinstance(side, (int, np.integer)) else None for side in x.shape)


def as_image_batch(x, name="images"):
    """`x` as an array or tensor of real numbers (Python lists become float32 numpy arrays), or
    `InputError` for None, a path or string, or a dtype that holds no pixel values."""
    if x is None or isinstance(x, (str, bytes, os.PathLike)):
        hint = "; read image files with keras_lpips.images.read_image" if x is not None else ""
        raise InputError(f"{name} must be an (N, H, W, 3) array or tensor of pixel values{hint}. Received: {x!r:.100}")
    kind = _not_dense(x)
    if kind:
        raise InputError(
            f"{name} must be a dense (N, H, W, 3) array or tensor. Received: a {kind} tensor ({type(x).__name__}); "
            "make it dense first (a ragged batch of images of one size: .to_tensor(); a sparse one: "
            "tf.sparse.to_dense or .to_dense())"
        )
    if not hasattr(x, "dtype"):  # Python lists and numbers
        try:
            x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise InputError(f"{name} is not an array of numbers ({reason(error)}). Received: {type(x).__name__}") from None
    try:
        dtype = keras.backend.standardize_dtype(x.dtype)
    except (TypeError, ValueError):  # numpy's object, str and structured dtypes
        dtype = str(x.dtype)
    if not dtype.startswith(_PIXEL_DTYPES):
        raise InputError(
            f"{name} must hold real pixel values (a float or integer dtype). Received: {type(x).__name__} of dtype {dtype}"
        )
    return x


def _not_dense(x):
    """"ragged" or "sparse" where `x` is such a tensor (TensorFlow's `RaggedTensor` and
    `SparseTensor`, a torch sparse tensor, JAX's BCOO/BCSR), else None: the network takes dense
    images, and their values could not be checked."""
    kind = {"RaggedTensor": "ragged", "SparseTensor": "sparse", "BCOO": "sparse", "BCSR": "sparse"}.get(type(x).__name__)
    return kind or ("sparse" if getattr(x, "is_sparse", False) is True else None)


def check_sample_weight(sample_weight, images):
    """Refuses (`InputError`) a `sample_weight` that is neither one weight for all pairs nor one
    per pair of the (N, H, W, 3) `images`, where both sizes are known (otherwise Keras' own error
    or broadcasting decides at run time): `LPIPSLoss` and `MeanLPIPS` weigh distances with it."""
    if sample_weight is None:
        return
    if getattr(getattr(sample_weight, "shape", None), "rank", 0) is None:  # Keras cannot weigh it either
        raise InputError("sample_weight must have a known rank (one weight per pair, (N,), or one for all). Received: a tensor of unknown rank")
    shape = tuple(np.shape(sample_weight)) if not hasattr(sample_weight, "shape") else static_shape(sample_weight, "sample_weight")
    pairs = static_shape(images)[0]
    if pairs is None or None in shape:
        return
    if int(np.prod(shape)) != 1 and [side for side in shape if side != 1] != [pairs]:
        raise InputError(
            f"sample_weight must hold one weight per pair ({pairs}) or one for all. Received: sample_weight of shape {shape}"
        )


# --- values of eager tensors ----------------------------------------------------------------------


def _read_by_numpy(x):
    """Whether `x` is a TensorFlow tensor in the CPU's memory (or one without values yet), whose
    values numpy reads where they lie, faster than TensorFlow reduces them (measured); one on a
    GPU is reduced there (`_check_on_device`), as torch and JAX tensors are."""
    return keras.backend.backend() == "tensorflow" and "CPU" in getattr(x, "device", "CPU")


def _concrete(x):
    """The tensor's values as numpy, or None while tracing a graph."""
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # symbolic tensors (tf.function, KerasTensor) have no values
        return None


def _check_on_device(x, input_range, name, fixed_range=False):
    """`check_values` for an eager torch or JAX tensor, without copying its images to the host
    (on a GPU, a copy of the whole batch on each call: each training step with `LPIPSLoss`):
    min, max and sum reduced where it lies, and only those three scalars brought back, in one
    transfer."""
    x = ops.stop_gradient(x)  # no autograd record of the checks
    lo, hi, total = (float(v) for v in ops.convert_to_numpy(ops.stack(_extremes(x))))
    # The sum is NaN or inf where a value is (min and max need not propagate NaN on every
    # device), or where finite values overflow it: only then is each value looked at.
    finite = bool(np.isfinite(total)) or bool(ops.convert_to_numpy(ops.all(ops.isfinite(x))))
    check_extremes(lo, hi, finite, input_range, name, fixed_range)


def _symbolic(x):
    """Whether `x` has no values to check: a `KerasTensor` (a functional model being built), or a
    torch tensor on the "meta" device (Keras' torch backend infers a layer's output with them)."""
    return isinstance(x, keras.KerasTensor) or getattr(x, "is_meta", False)


# --- values while JAX traces or torch compiles ----------------------------------------------------


def _traced_by_jax(pair):
    """Whether the pair is being traced by JAX (`jax.jit`; `model.fit` and `predict` on the JAX
    backend), whose values are unknown until run time and which has no assertions."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return any(isinstance(x, jax.core.Tracer) for x in pair)


def _compiled_by_torch():
    """Whether `torch.compile` (Keras' `jit_compile=True` on the torch backend) is tracing the
    call: values brought to Python there break its graph, and each one becomes a guard that
    recompiles it on the next batch."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


def _extremes(x):
    """(min, max, sum) of `x` as backend scalars, reduced where `x` lies: what the checks of
    eager torch and JAX tensors and of traced ones compare (the sum is NaN or inf where a value
    is). amin/amax: Keras' torch min and max break a torch.compile graph (an isinstance it
    cannot trace)."""
    return ops.amin(x), ops.amax(x), ops.sum(x)


def _nan_unless_within(pair, input_range):
    """The pair, NaN throughout where any value is NaN, infinite or outside `input_range`: JAX's
    traced values and those `torch.compile` traces cannot raise, so a refused pair gives NaN
    distances (and a NaN loss), never a number, as under XLA. Three reductions per image
    (`_extremes`')."""
    least, greatest = range_bounds(input_range)
    passed = None
    for x in pair:
        if static_shape(x)[0] == 0:
            continue  # an empty batch (torch cannot reduce it), whose distances are empty
        lo, hi, total = _extremes(x)
        ok = ops.isfinite(total) & (lo >= least) & (hi <= greatest)
        passed = ok if passed is None else passed & ok
    if passed is None:
        return pair
    guard = ops.where(passed, 0.0, float("nan"))
    return [x + guard for x in pair]
