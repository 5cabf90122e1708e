"""keras-lpips: LPIPS (Zhang et al., CVPR 2018) for TensorFlow/Keras 3, matching the reference `lpips`.

The Keras classes are imported on first use, so that `import keras_lpips` (and
the CLI's `--help`) does not pay TensorFlow's start-up time.
"""

import importlib

from keras_lpips.errors import (
    ChecksumError,
    DataError,
    DiskFullError,
    DownloadError,
    InputError,
    InsufficientMemoryError,
    KerasLPIPSError,
    OutputError,
    UnsafeFileError,
    WeightsError,
    WeightsUnavailableError,
)

__version__ = "0.1.0"

_LAZY = {"LPIPS": "keras_lpips.model", "LPIPSLoss": "keras_lpips.losses", "MeanLPIPS": "keras_lpips.metrics"}
__all__ = [
    "LPIPS", "LPIPSLoss", "MeanLPIPS", "ChecksumError", "DownloadError", "InputError", "KerasLPIPSError",
    "UnsafeFileError", "WeightsError", "WeightsUnavailableError", "DiskFullError", "InsufficientMemoryError",
    "DataError", "OutputError",
]  # fmt: skip


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_lpips' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
