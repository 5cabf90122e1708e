"""Shared test setup: quiet TensorFlow, an isolated weight cache, and small helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def isolated_keras_home(tmp_path_factory, monkeypatch, request):
    """Each test gets an empty weight cache and no network fallback, unless it
    is marked `real_weights` (those use the user's cache, which CI fills)."""
    if request.node.get_closest_marker("real_weights") is None:
        monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_images(rng, n=2, height=64, width=64, low=-1.0, high=1.0):
    return rng.uniform(low, high, (n, height, width, 3)).astype(np.float32)
