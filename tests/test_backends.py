"""The metric gives the reference's numbers under Keras' JAX and PyTorch backends too."""

import pathlib

import pytest

from tests.helpers import backend_check_report

CHECK = pathlib.Path(__file__).parent / "backend_parity_check.py"


# Each case is a fresh interpreter on another backend (11 to 35 s): the fast tier runs alex on JAX
# (in the test extra); the full suite both nets on both backends.
CASES = [
    pytest.param("jax", "jax", "alex", id="alex-jax"),
    pytest.param("jax", "jax", "squeeze", id="squeeze-jax", marks=pytest.mark.slow),
    pytest.param("torch", "torch", "alex", id="alex-torch", marks=pytest.mark.slow),
    pytest.param("torch", "torch", "squeeze", id="squeeze-torch", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend,package,net", CASES)
def test_backend_matches_reference(backend, package, net):
    report = backend_check_report(CHECK, backend, net, package=package)
    assert report["worst"] <= 1e-5
    if backend == "jax":
        assert report["traced"].startswith("The two images must have the same shape. Received img0 of shape ("), report
        assert report["traced_values_nan"] == [True, True], report  # were numbers: 0-255 images scored as (-1, 1)


API_CHECK = pathlib.Path(__file__).parent / "backend_api_check.py"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_api_works_on_the_backend(backend):
    """tests/backend_api_check.py, warnings as errors: a functional model holding the metric loads
    after clear_session (the input checks add no operation of their own to it); embeddings and
    distances as the metric returns them (under PyTorch tensors that require grad) go into
    all_pairs, nearest, pair_statistics, twoafc_score and jnd_map; the loss gives a float without
    a warning, and a gradient w.r.t. y_pred (7 s on torch, 16 s on jax)."""
    report = backend_check_report(API_CHECK, backend)
    assert report["operations"] == ["InputLayer", "InputLayer", "LPIPS"]
    assert report["reloaded"] < 1e-6 and report["all_pairs"] < 1e-5
    assert report["nearest"] == [[0]] and report["pair_mean"] > 0
    assert report["twoafc"] == 0.0 and report["jnd"] == 1.0
    assert report["loss"] > 0 and report["gradient"] is not None and report["gradient"] > 0
