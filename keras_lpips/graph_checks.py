"""The checks of images inside a TensorFlow graph (`tf.function`, how `LPIPSLoss` and `MeanLPIPS`
run under `model.fit`, and an export's signatures): what is only known at run time (a batch or
a size left open, the values) as graph assertions before the network, whose messages are the
eager ones (`keras_lpips.inputs`); where assertions are dropped (XLA, TFLite, ONNX) the
outputs are NaN instead. `checked_request` checks what an export's client sends."""

import functools

import keras
import numpy as np

from keras_lpips.array_checks import range_bounds, values_advice


def in_tensorflow_graph(pair):
    """Whether the tensors of `pair` are symbolic ones of a TensorFlow graph being traced
    (`tf.function`), whose values and open sizes only the graph's assertions can check."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly() and all(isinstance(x, tf.Tensor) for x in pair)


def graph_checked(pair, input_range, min_size, names, fixed_range=False):
    """The pair behind the graph's checks, in the eager order (the first failing one names the
    problem). Passing costs a few scalar ops and three reductions per image; the messages are
    only formatted when a check fails."""
    outside = values_advice(input_range, fixed_range)
    checks = _shape_checks(pair, names, min_size)
    for name, x in zip(names, pair):
        checks += _value_checks(name, x, _within(x, input_range), outside, empty_ok=True)
    return asserted(pair, checks)


def checked_request(images, input_range, min_size):
    """A served signature's request (`keras_lpips.export`): `images`, name -> float32 (N, H, W, 3)
    tensor as the client sent it, behind graph assertions whose messages speak to that client
    (its own values against `input_range`, the signature's, which it cannot change), and
    `valid`, (N,) bool: whether each item passes them (sizes and shapes are the whole request's).

    Where assertions are dropped (TFLite, ONNX) the request runs on: a refused item's images are
    zeros from here on, so that its values reach no other item through what takes the batch as
    one (the metric's own checks, a quantized kernel), and the caller makes its outputs NaN by
    `valid`, after every kernel that could turn NaN into a number (an int8 one does). Returns
    `(images, valid)`."""
    import tensorflow as tf

    names, tensors = list(images), list(images.values())
    low, high = (float(v) for v in input_range)
    contract = f"; this signature takes images in [{low:g}, {high:g}] (8-bit pixels divided by 255)"
    shape_checks = _shape_checks(tensors, names, min_size)
    items_ok = [_within(x, input_range, axis=(1, 2, 3)) for x in tensors]
    checks = list(shape_checks)
    for name, x, ok in zip(names, tensors, items_ok):
        checks += _value_checks(name, x, ok, contract)
    cleared = [_zeros_where_refused(x, ok) for x, ok in zip(tensors, items_ok)]
    # `valid` after the assertion: batches of two sizes fail with its message, not with logical_and's.
    checked = _behind_assertion(cleared + items_ok, checks, _all(checks))
    valid = functools.reduce(tf.logical_and, checked[len(tensors) :], _all(shape_checks))  # broadcast, as the outputs are
    return dict(zip(names, checked[: len(tensors)])), valid


def _zeros_where_refused(images, ok):
    """`images` (N, H, W, C) with each item not `ok` (N,) replaced by zeros. Gathered, not
    selected: tf2onnx writes a select without a NaN constant as `ok * x + (1 - ok) * zeros`,
    through which a NaN passes (NaN * 0 is NaN)."""
    import tensorflow as tf

    rows = tf.where(ok, tf.range(tf.shape(images)[0]) + 1, 0)  # 0: the zero image in front
    zero = tf.zeros(tf.shape(images[:1]), images.dtype)  # a Fill: ZerosLike is no op of `savedmodel_ops.EXPORT_OPS`
    return tf.gather(tf.concat([zero, images], axis=0), rows)


def _shape_checks(images, names, min_size):
    """The checks of a request's shapes, `(ok, make_message)` pairs: every image at least
    `min_size`, each of one shape with the first (the messages call them `names`)."""
    import tensorflow as tf

    shapes = [tf.shape(x) for x in images]
    checks = [(tf.reduce_all(s[1:3] >= min_size), too_small_message(s, min_size)) for s in shapes]
    for name, shape in zip(names[1:], shapes[1:]):
        checks.append((tf.reduce_all(tf.equal(shapes[0], shape)), _different_shapes_message((names[0], name), shapes[0], shape)))
    return checks


def _value_checks(name, x, ok, outside, empty_ok=False):
    """The checks of one image's values, `(ok, make_message)` pairs: not empty (unless
    `empty_ok`: the metric gives an empty batch, a replica's share of a short last batch under a
    `tf.distribute` strategy, empty distances; an export's client is told), and `ok` (a bool, or
    one per item: `_within`, true for an empty tensor), else "NAME has values in [lo, hi]" then
    `outside`, or NaN/inf."""
    import tensorflow as tf

    shape = tf.shape(x)
    values = [(tf.reduce_all(ok), _values_message(name, x, outside))]
    return values if empty_ok else [(tf.reduce_prod(shape) > 0, _empty_message(name, shape)), *values]


def _within(x, input_range, axis=None):
    """Whether `x` (each item of it, with `axis` its image axes) is finite and within
    `input_range`, up to its tolerance (`range_bounds`). Three reductions, no temporaries: the
    sum is NaN or inf when any value is (addition propagates NaN on every device; min and max
    need not, e.g. under XLA)."""
    import tensorflow as tf

    least, greatest = range_bounds(input_range)
    lo, hi, total = tf.reduce_min(x, axis), tf.reduce_max(x, axis), tf.reduce_sum(x, axis)
    return tf.math.is_finite(total) & (lo >= least) & (hi <= greatest)


def _all(checks):
    """Whether every `(ok, make_message)` check holds, a bool tensor."""
    import tensorflow as tf

    return tf.reduce_all(tf.stack([ok for ok, _ in checks]))


def asserted(tensors, checks):
    """`tensors` behind the graph assertion that every `(ok, make_message)` check holds; the
    message of the first that fails. Where assertions are dropped (XLA; a TFLite conversion),
    the tensors are NaN when one fails, so that no number comes out."""
    import tensorflow as tf

    passed = _all(checks)
    guarded = [x + tf.where(passed, tf.constant(0, x.dtype), tf.constant(np.nan, x.dtype)) for x in tensors]  # x + 0 is x
    return _behind_assertion(guarded, checks, passed)


def _behind_assertion(tensors, checks, passed):
    """`tensors` behind the graph assertion that every `(ok, make_message)` check holds (`passed`,
    their `_all`), failing with the message of the first that does not; as they are under XLA,
    which has no assertions."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util  # no public way to tell an XLA trace

    if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return tensors

    def fail():
        message = tf.constant("")
        for ok, make_message in reversed(checks):
            message = tf.where(ok, message, make_message())
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    with tf.control_dependencies([tf.cond(passed, lambda: tf.constant(True), fail)]):
        return [tf.identity(x) for x in tensors]


def _text(*parts):
    """A string tensor joining Python strings and the text of integer tensors."""
    import tensorflow as tf

    return tf.strings.join([p if isinstance(p, str) else tf.strings.as_string(p) for p in parts])


def _shape_text(shape):
    import tensorflow as tf

    return _text("(", tf.strings.reduce_join(tf.strings.as_string(shape), separator=", "), ")")


def too_small_message(shape, min_size):
    """The message, made only when the check fails, for images of the run-time `shape` smaller
    than `min_size`: `array_checks.check_static_size`'s words."""
    return lambda: _text(
        "Images of ", shape[1], "x", shape[2], f" are too small for this network: it needs at least "
        f"{min_size}x{min_size}. Received shape ", _shape_text(shape),
    )  # fmt: skip


def _different_shapes_message(names, shape0, shape1):
    return lambda: _text(
        f"The two images must have the same shape. Received {names[0]} of shape ", _shape_text(shape0),
        f" and {names[1]} of shape ", _shape_text(shape1),
    )  # fmt: skip


def _empty_message(name, shape):
    return lambda: _text(f"{name} is empty. Received shape ", _shape_text(shape))


def _values_message(name, x, outside):
    def make():
        import tensorflow as tf

        lo, hi = (tf.strings.as_string(f(x), precision=4, shortest=True) for f in (tf.reduce_min, tf.reduce_max))
        return tf.where(tf.reduce_all(tf.math.is_finite(x)), _text(f"{name} has values in [", lo, ", ", hi, "]" + outside),
                        f"{name} contains NaN or infinite values")  # fmt: skip

    return make
