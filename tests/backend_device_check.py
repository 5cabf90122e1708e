"""Run in a subprocess with KERAS_BACKEND=torch, jax or tensorflow: the metric's input checks on
that backend's eager tensors (tests/test_device_checks.py). Prints one JSON line. TensorFlow's
tensors on this CPU are read by numpy (faster there): they are checked here as if they lay on a
GPU (`inputs._read_by_numpy` answers no), as torch and JAX tensors always are.

Usage: KERAS_BACKEND=torch python tests/backend_device_check.py

For each case, an `LPIPS` call on the backend's tensors: the message it raises (None if none),
the message of the same call on numpy arrays, and the shapes of what `keras.ops.convert_to_numpy`
was given meanwhile (what came to the host; the images are (2, 32, 32, 3), or (0, 32, 32, 3)). Under
PyTorch, also whether `torch.compile(fullgraph=True)` traces the checks (a graph break raises)
and gives NaN for a refused pair.
"""

import json

import keras
import numpy as np
from keras import ops

import keras_lpips
from keras_lpips import inputs

rng = np.random.default_rng(0)
images = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
with_nan, with_inf = images.copy(), images.copy()
with_nan[1, 5, 5, 0] = np.nan
with_inf[0, 7, 3, 2] = np.inf
CASES = {
    "valid": (images, images[::-1]),
    "nan": (images, with_nan),
    "inf": (with_inf, images),
    "range": (images * 255, images),
    "huge": (images, np.full_like(images, 3e38)),  # finite, but their sum overflows to inf
    "empty": (images[:0], images[:0]),
}

if keras.backend.backend() == "tensorflow":
    inputs._read_by_numpy = lambda x: False

metric = keras_lpips.LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
seen = []  # shapes of what convert_to_numpy was given
convert_to_numpy = ops.convert_to_numpy


def spy(x):
    seen.append(list(np.shape(x)))
    return convert_to_numpy(x)


def message(pair):
    try:
        metric(list(pair))
    except keras_lpips.InputError as error:
        return str(error)
    return None


report = {"backend": keras.backend.backend(), "cases": {}}
for case, pair in CASES.items():
    tensors = [ops.convert_to_tensor(x) for x in pair]
    seen.clear()
    keras.ops.convert_to_numpy = spy
    try:
        received = message(tensors)
    finally:
        keras.ops.convert_to_numpy = convert_to_numpy
    report["cases"][case] = {"message": received, "numpy_message": message(pair), "converted": list(seen)}

if keras.backend.backend() == "torch":
    import torch

    checked = torch.compile(lambda a, b: inputs.check_image_pair([a, b], (0, 1), 16)[0].sum(), fullgraph=True)
    try:
        passed = checked(torch.tensor(images), torch.tensor(images))
        refused = checked(torch.tensor(images * 255), torch.tensor(images))
        report["compiled"] = [bool(torch.isfinite(passed)), bool(torch.isnan(refused))]
    except Exception as error:  # a graph break under fullgraph=True
        report["compiled"] = f"{type(error).__name__}: {str(error)[:300]}"
print(json.dumps(report))
