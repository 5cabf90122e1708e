"""keras-lpips: LPIPS (Zhang et al., CVPR 2018) for TensorFlow/Keras 3, matching the reference `lpips`.

The Keras classes are imported on first use, so that `import keras_lpips` (and
the CLI's `--help`) does not pay TensorFlow's start-up time; Keras finds them all the same when
it loads a `.keras` file (`keras_registration`).
"""

import importlib

from keras_lpips.errors import (
    ChecksumError,
    DataError,
    DiskFullError,
    DownloadError,
    InputError,
    InsufficientMemoryError,
    InUseError,
    KerasLPIPSError,
    KerasLPIPSNote,
    OutputError,
    ResourceError,
    UnsafeFileError,
    WeightsError,
    WeightsUnavailableError,
)
from keras_lpips.keras_registration import CLASSES, register_with_keras

__version__ = "0.1.0"

__all__ = [
    "LPIPS", "LPIPSLoss", "MeanLPIPS", "ChecksumError", "DownloadError", "InputError", "KerasLPIPSError",
    "UnsafeFileError", "WeightsError", "WeightsUnavailableError", "DiskFullError", "InsufficientMemoryError",
    "DataError", "OutputError", "ResourceError", "InUseError", "KerasLPIPSNote",
]  # fmt: skip


register_with_keras()


def __getattr__(name):
    if name in CLASSES:
        return getattr(importlib.import_module(CLASSES[name]), name)
    raise AttributeError(f"module 'keras_lpips' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
