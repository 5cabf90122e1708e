"""BAPPS data: reading the layout, tf.data pipelines, a synthetic stand-in, download and checks.

The TensorFlow pipeline (`twoafc_dataset`, `jnd_dataset`) is imported on first use, so that
reading, synthesizing and downloading do not load TensorFlow (verifying does, once its checks
reach the images: it decodes each as the pipeline does).
"""

import importlib

from keras_lpips.data.bapps import (
    JND_SUBSETS,
    TRAIN_SUBSETS,
    VAL_SUBSETS,
    JNDRecord,
    TwoAFCRecord,
    list_jnd,
    list_twoafc,
    resolve_root,
)
from keras_lpips.data.download import DownloadedSplit, download_split, safe_extract
from keras_lpips.data.synth import synthesize
from keras_lpips.data.verify import VerifyReport, verify_dataset

_LAZY = {"twoafc_dataset", "jnd_dataset"}

__all__ = [
    "JND_SUBSETS", "TRAIN_SUBSETS", "VAL_SUBSETS", "DownloadedSplit", "JNDRecord", "TwoAFCRecord",
    "VerifyReport", "download_split", "jnd_dataset", "list_jnd", "list_twoafc", "resolve_root",
    "safe_extract", "synthesize", "twoafc_dataset", "verify_dataset",
]  # fmt: skip


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module("keras_lpips.data.pipeline"), name)
    raise AttributeError(f"module 'keras_lpips.data' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
