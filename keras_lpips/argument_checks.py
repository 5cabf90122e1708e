"""What counts as an integer or a number where keras-lpips takes one, and the one message that
refuses an integer argument out of its range.

An integer is a Python int or a numpy integer (`np.int64(3)` from an array is as good as 3),
never a bool (`True` is an int to Python, but no count or size); a float equal to an integer
(2.0) is no integer. A number is any real number (int, float, numpy ones), never a bool.
File readers use the predicates under their own error (`DataError`, `WeightsError`).
Every seed that seeds Keras or NumPy's global generators (a training run's, the metric's, the
ranking head's) is an integer from 0 to `MAX_SEED` (`check_seed`); every batch size and load size
(fit, eval, the data pipeline) one up to `MAX_BATCH_SIZE` and `MAX_LOAD_SIZE` (`check_batch_size`,
`check_load_size`).
"""

import numbers

import numpy as np

from keras_lpips.errors import InputError

MAX_SEED = 2**32 - 1  # what training's seeding takes (keras.utils.set_random_seed: numpy's legacy seed)
# The most triplets or pairs per batch that fit and eval take: far more than any accelerator
# holds; beyond, memory runs out (TensorFlow's batching thread then spins, deaf to SIGINT and SIGTERM).
MAX_BATCH_SIZE = 2**16
# The largest side fit and eval resize patches to: 64 times BAPPS' 64, a triplet of such
# patches 600 MB of float32 input (a larger one fails in TensorFlow with a traceback).
MAX_LOAD_SIZE = 4096


def is_integer(value):
    """True for a Python int or a numpy integer, False for a bool and everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """True for a real number (int, float, numpy integer or floating; NaN and inf included),
    False for a bool, a complex and everything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_integer(name, value, minimum=None, maximum=None, allow_none=False, note=""):
    """`value` as a Python int (None where `allow_none` and it is None), or `InputError`:
    "`name` must be an integer >= `minimum` [or None] [`note`]. Received: `name`=`value`"
    (from `minimum` to `maximum` where both bound it, <= `maximum` where only that does)."""
    if value is None and allow_none:
        return None
    if is_integer(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return int(value)
    expected = "an integer" + _bounds(minimum, maximum) + (" or None" if allow_none else "") + (f" {note}" if note else "")
    raise InputError(f"{name} must be {expected}. Received: {name}={value!r}")


def check_seed(value, allow_none=False):
    """`value` as a Python int from 0 to `MAX_SEED` (None where `allow_none` and it is None), or
    `check_integer`'s `InputError`: "seed must be an integer from 0 to 4294967295. Received: seed=..."."""
    return check_integer("seed", value, 0, MAX_SEED, allow_none=allow_none)


def check_batch_size(value):
    """`value` as a Python int from 1 to `MAX_BATCH_SIZE`, the triplets or pairs per batch that fit,
    eval and the data pipeline take, or `check_integer`'s `InputError`."""
    return check_integer("batch_size", value, 1, MAX_BATCH_SIZE)


def check_load_size(value, min_size=1, net=None, layers=None):
    """`value`, the side patches are resized to (fit, eval, the data pipeline), as a Python int from 1
    to `MAX_LOAD_SIZE`, or `InputError`: `check_integer`'s, or, where it is below `min_size`, the
    least the backbone `net` with its first `layers` tapped layers takes, "load_size 16 is too small
    for alex with 5 layers (needs >= 31)": said before any patch is read, rather than by the
    network's own check on the first batch."""
    value = check_integer("load_size", value, 1, MAX_LOAD_SIZE)
    if value < min_size:
        described = f"{net} with {layers} layers" if layers is not None else net
        raise InputError(f"load_size {value} is too small for {described} (needs >= {min_size})")
    return value


def _bounds(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""
