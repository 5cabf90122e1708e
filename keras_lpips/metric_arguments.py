"""The checks of `LPIPS`'s arguments, made before anything is built or read (`InputError`s that
say what was received), and the choices they take; `fit` checks its options with them too."""

import os

import numpy as np

from keras_lpips.argument_checks import check_integer, check_seed, is_number
from keras_lpips.errors import InputError

INPUT_RANGES = ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0))
PRECISIONS = ("float32", "bf16")
# What a message refusing a half-precision dtype advises instead.
HALF_PRECISION = (
    'for half precision set a mixed policy before building (keras.config.set_dtype_policy("mixed_float16")) '
    'or pass precision="bf16"'
)


def check_choices(spec, version, distance, layers, input_range, precision="float32"):
    """Validates the constructor's choices for the backbone `spec` (`InputError`); returns the
    number of taps kept. `RunConfig` checks a run's options with it when it is made."""
    if version not in ("0.1", "0.0"):
        raise InputError(f"version must be '0.1' or '0.0'. Received: version={version!r}")
    if distance not in ("lpips", "cosine"):
        raise InputError(f"distance must be 'lpips' or 'cosine'. Received: distance={distance!r}")
    if isinstance(input_range, (str, bytes)) or _floats(input_range) not in INPUT_RANGES:
        raise InputError(f"input_range must be one of {INPUT_RANGES}. Received: input_range={input_range!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}")
    total = len(spec.taps)
    if layers is None:
        return total
    return check_integer("layers", layers, 1, total, note=f"for net {spec.name!r}")


def _floats(values):
    """`values` as a tuple of floats, or None when it is no sequence of numbers."""
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def check_arguments(dropout, seed, train_backbone, **weights):
    """Validates the constructor's numbers, flag and weight sources (names and paths;
    `restore_weights` reads them), before any weight is read or fetched."""
    if not (is_number(dropout) and 0 <= dropout < 1):
        raise InputError(f"dropout must be a number from 0 to less than 1. Received: dropout={dropout!r}")
    check_seed(seed, allow_none=True)
    for name, value in weights.items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{name} must be a name, a path or None. Received: {name}={value!r}")
    if not isinstance(train_backbone, (bool, np.bool_)):
        raise InputError(f"train_backbone must be True or False. Received: train_backbone={train_backbone!r}")
