"""The input checks of eager torch and JAX tensors, and of TensorFlow's on a GPU, run where the
tensors lie: only their min, max and sum come to the host, never the images (a whole batch copied
off the GPU on each training step, before), with the same messages as for numpy arrays; under torch.compile the checks trace
into the graph (no break, no recompile per batch) and a refused pair gives NaN."""

import functools
import pathlib

import pytest

from tests.helpers import backend_check_report

CHECK = pathlib.Path(__file__).parent / "backend_device_check.py"

ADVICE = ", outside input_range=(0, 1); pass input_range matching your images, e.g. (0, 1) or (0, 255)"
MESSAGES = {
    "valid": None,
    "nan": "img1 contains NaN or infinite values",
    "inf": "img0 contains NaN or infinite values",
    "range": "img0 has values in [0.02754, 255]" + ADVICE,
    "huge": "img1 has values in [3e+38, 3e+38]" + ADVICE,  # their sum overflows: not "NaN or infinite"
    "empty": None,  # an empty batch: empty distances
}


@functools.cache
def _report(backend):
    """tests/backend_device_check.py's report on the backend (10 s each)."""
    return backend_check_report(CHECK, backend)


@pytest.fixture(params=["torch", "jax", "tensorflow"])
def report(request):
    return _report(request.param)


@pytest.mark.parametrize("case", list(MESSAGES))
def test_eager_tensors_are_checked_on_their_device(report, case):
    """The message numpy arrays get (pinned here), and no image batch through convert_to_numpy:
    the three scalars (min, max, sum) of each checked image, and where the sum is not finite
    whether all values are."""
    outcome = report["cases"][case]
    assert outcome["message"] == outcome["numpy_message"] == MESSAGES[case]
    assert all(shape in ([3], []) for shape in outcome["converted"]), outcome


def test_torch_compile_traces_the_checks():
    """fullgraph=True: a graph break in the checks raises; an accepted pair gives a number, a
    refused one NaN."""
    assert _report("torch")["compiled"] == [True, True]


def test_tensorflow_tensors_are_read_by_numpy_on_the_cpu_only():
    """The rule that sends a TensorFlow tensor to numpy (in place, on the CPU) or to the device
    reductions (on a GPU: `backend_device_check.py` runs those with the rule answering no)."""
    import tensorflow as tf

    from keras_lpips import inputs

    class OnGPU:
        device = "/job:localhost/replica:0/task:0/device:GPU:0"

    assert inputs._read_by_numpy(tf.zeros((1, 2))) and not inputs._read_by_numpy(OnGPU())
