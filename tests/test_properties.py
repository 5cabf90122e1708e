"""Property tests (hypothesis): metric axioms and finite gradients; fuzzed image and weight files."""

import functools
import io
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from keras_lpips import InputError, LPIPS
from keras_lpips.images import read_image

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SIZE = 32


@functools.cache
def metric():
    return LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=0, input_range=(0.0, 1.0))


pixels = st.one_of(
    arrays(np.float32, (1, SIZE, SIZE, 3), elements=st.floats(0, 1, width=32)),
    st.sampled_from([0.0, 1.0, 0.5]).map(lambda v: np.full((1, SIZE, SIZE, 3), v, np.float32)),
    st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).integers(0, 2, (1, SIZE, SIZE, 3)).astype(np.float32)
    ),
)


@SETTINGS
@given(a=pixels, b=pixels)
def test_metric_axioms(a, b):
    d_ab, d_ba, d_aa = (float(metric()(pair)[0]) for pair in ([a, b], [b, a], [a, a]))
    assert np.isfinite(d_ab) and d_ab >= 0.0
    assert d_aa == pytest.approx(0.0, abs=1e-7)
    assert d_ab == pytest.approx(d_ba, rel=1e-5, abs=1e-7)


@SETTINGS
@given(a=pixels, b=pixels)
def test_gradients_are_finite(a, b):
    x0, x1 = tf.Variable(a), tf.Variable(b)
    with tf.GradientTape() as tape:
        d = tf.reduce_sum(metric()([x0, x1]))
    for g in tape.gradient(d, [x0, x1]):
        assert np.isfinite(g.numpy()).all()


def _encoded(fmt):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _damaged(data, flips, cut):
    """`data` with bytes overwritten at the (relative position, value) `flips`, then cut to a
    `cut` fraction of its length (kept whole from 0.98 on)."""
    data = bytearray(data)
    for position, value in flips:
        data[int(position * (len(data) - 1))] = value
    return bytes(data[: max(1, int(cut * len(data)))] if cut < 0.98 else data)


@SETTINGS
@given(
    fmt=st.sampled_from(["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"]),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8),
)
def test_image_reader_fuzz_returns_rgb_or_input_error(tmp_path_factory, fmt, cut, flips):
    data = _damaged(_encoded(fmt), flips, cut)
    path = tmp_path_factory.mktemp("fuzz") / f"x.{fmt.lower()}"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except InputError:
        return
    assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


def _weight_sources():
    """(suffix, bytes) of weight files to damage: the shipped linear weights, a compressed npz,
    and the tiny torch fixtures (zip and legacy formats)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buffer, **{f"lin{k}": rng.random(c).astype(np.float32) for k, c in enumerate((64, 192, 384, 256, 256))})
    return [
        (".npz", (root / "saved_models/lpips_lin/v0.1/alex.npz").read_bytes()),
        (".npz", buffer.getvalue()),
        (".pth", (root / "tests/fixtures/tiny_zip.pth").read_bytes()),
        (".pth", (root / "tests/fixtures/tiny_legacy.pth").read_bytes()),
    ]


WEIGHT_SOURCES = _weight_sources()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=st.integers(0, len(WEIGHT_SOURCES)),  # the last: random bytes
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8),
    noise=st.binary(min_size=1, max_size=2000),
    suffix=st.sampled_from([".npz", ".pth"]),
)
@example(source=1, cut=1.0, flips=[(0.25, 0)], noise=b"\0", suffix=".npz")  # zlib.error escaped np.load once
def test_weight_reader_fuzz_returns_arrays_or_weights_error(tmp_path_factory, source, cut, flips, noise, suffix):
    """Damaged or random weight files read as arrays or raise WeightsError; linear weights come
    out as finite float32 vectors of the right sizes or raise WeightsError."""
    from keras_lpips.backbones import get_backbone
    from keras_lpips.errors import WeightsError
    from keras_lpips.weights.loading import lin_vectors, read_weight_file

    if source < len(WEIGHT_SOURCES):
        suffix, original = WEIGHT_SOURCES[source]
        data = _damaged(original, flips, cut)
    else:
        data = noise
    path = tmp_path_factory.mktemp("weights") / f"w{suffix}"
    path.write_bytes(data)
    try:
        state = read_weight_file(path)
    except WeightsError:
        return
    assert state and all(isinstance(v, np.ndarray) for v in state.values())
    spec = get_backbone("alex")
    try:
        vectors = lin_vectors(str(path), spec, 5)
    except WeightsError:
        return
    for vector, channels in zip(vectors, spec.channels):
        assert vector.dtype == np.float32 and vector.shape == (channels,) and np.isfinite(vector).all()
