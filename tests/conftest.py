"""Shared test setup: quiet TensorFlow, an isolated weight cache, and the shared fixtures.

Fixtures: `rng`; `tiny_bapps` (a small BAPPS-layout set made once per session: read it, do not
change it; `make_tiny_bapps` makes one to damage); `fake_imagenet_home` (a KERAS_HOME whose
weight cache holds seeded stand-ins of the alex and vgg ImageNet backbones, made once per
session); `server` (an HTTP server on 127.0.0.1, tests/helpers.py's `LocalServer`).
`run_cli` / `run_installed` (the program in this process / the installed command) and the
other plain helpers are in tests/helpers.py.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from keras_lpips.weights import sources
from tests.helpers import LocalServer, fake_imagenet_pins, seed_fake_imagenet_cache

REAL_PINS = dict(sources.IMAGENET_FEATURES_SHA256)


@pytest.fixture(autouse=True)
def isolated_keras_home(tmp_path_factory, monkeypatch, request):
    """Each test gets an empty weight cache (and an empty torch.hub cache) and no network
    fallback, unless it is marked `real_weights` (those use the user's cache, which CI fills,
    checked against the real pinned digests)."""
    if request.node.get_closest_marker("real_weights") is None:
        monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "1")
    else:  # in place: modules hold the dict itself, and a session fixture may have pinned fakes in it
        for net, digest in REAL_PINS.items():
            monkeypatch.setitem(sources.IMAGENET_FEATURES_SHA256, net, digest)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_bapps(tmp_path_factory):
    """A tiny BAPPS layout (tests/bapps_fixture.py: 6 train and 4 val 2AFC triplets, 4 JND pairs,
    subset "traditional", 64x64), shared by the session: tests must not modify it."""
    from tests.bapps_fixture import make_tiny_bapps

    return make_tiny_bapps(tmp_path_factory.mktemp("tiny_bapps") / "bapps")


@pytest.fixture(scope="session")
def fake_imagenet_home(tmp_path_factory):
    """A KERAS_HOME whose cache holds seeded stand-ins for the alex and vgg ImageNet backbones
    (`seed_fake_imagenet_cache`), so that backbone_weights="imagenet" loads offline: their
    digests are pinned in `sources.IMAGENET_FEATURES_SHA256` in this process from then on
    (not in subprocesses; `real_weights` tests get the real pins back). Shared: copy it before
    changing it."""
    home = tmp_path_factory.mktemp("fake_imagenet_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        cache = seed_fake_imagenet_cache(("alex", "vgg"), seed=0)
    with pytest.MonkeyPatch.context() as patch:
        for net, digest in fake_imagenet_pins(cache).items():
            patch.setitem(sources.IMAGENET_FEATURES_SHA256, net, digest)
        yield home


@pytest.fixture
def server():
    """A running `LocalServer` on 127.0.0.1, shut down and closed after the test."""
    local = LocalServer()
    try:
        yield local
    finally:
        local.stop()
