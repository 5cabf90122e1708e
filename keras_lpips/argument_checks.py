"""What counts as an integer or a number where keras-lpips takes one, and the one message that
refuses an integer argument out of its range.

An integer is a Python int or a numpy integer (`np.int64(3)` from an array is as good as 3),
never a bool (`True` is an int to Python, but no count or size); a float equal to an integer
(2.0) is no integer. A number is any real number (int, float, numpy ones), never a bool.
File readers use the predicates under their own error (`DataError`, `WeightsError`).
Every seed that seeds Keras or NumPy's global generators (a training run's, the metric's, the
ranking head's) is an integer from 0 to `MAX_SEED` (`check_seed`).
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


def _bounds(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""
