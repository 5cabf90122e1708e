"""Mixed precision: under a global "mixed_float16" or "mixed_bfloat16" policy the backbone computes
in half precision, while normalisation, linear heads and distances stay float32, finite, and close
to float32's: |d - d_float32| <= atol + rtol * d_float32 (TOLERANCES; measured on the CPU at most
2e-3 relative in float16 and 2e-2 in bfloat16 on pairs of noise sd 0.05, up to 4e-3 and 5e-2 on
closer ones, d ~ 1e-3, where atol takes over), and exactly 0 for identical images.

The current backend (TensorFlow) in this process; JAX, and in the full suite PyTorch, each in a
fresh interpreter through tests/mixed_precision_check.py (KERAS_BACKEND is fixed per process).
"""

import pathlib

import keras
import numpy as np
import pytest

from keras_lpips.layers import ChannelUnitNormalization
from tests.helpers import backend_check_report
from tests.mixed_precision_check import POLICIES, check

CHECK = pathlib.Path(__file__).parent / "mixed_precision_check.py"
TOLERANCES = {"mixed_float16": (1e-4, 1e-2), "mixed_bfloat16": (1e-3, 6e-2)}  # (atol, rtol)
HALF = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def assert_mixed_close(result):
    float32 = np.asarray(result["float32"])
    assert float32[0] == 0.0 and (float32[1:] > 0).all()
    for policy in POLICIES:
        seen = result["policies"][policy]
        distances = np.asarray(seen["distances"])
        assert seen["backbone_dtype"] == HALF[policy], "the backbone should compute in half precision"
        assert seen["dtype"] == seen["feature_dtype"] == "float32"
        assert seen["head_dtypes"] == ["float32"]
        assert np.isfinite(distances).all()
        assert abs(distances[0]) <= 1e-7, f"{policy}: identical images at {distances[0]}"
        atol, rtol = TOLERANCES[policy]
        error = np.abs(distances - float32)
        assert (error <= atol + rtol * float32).all(), f"{policy}: errors {error} against float32 {float32}"


def test_mixed_policies_in_process():
    result = check("alex")
    assert_mixed_close(result)
    assert keras.config.dtype_policy().name == "float32"


SUBPROCESS_CASES = [
    pytest.param("jax", "alex", id="jax-alex"),
    pytest.param("torch", "alex", id="torch-alex", marks=pytest.mark.slow),
    pytest.param("jax", "vgg", id="jax-vgg", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend,net", SUBPROCESS_CASES)
def test_mixed_policies_on_other_backends(backend, net):
    report = backend_check_report(CHECK, backend, net)
    assert report["tensorflow_imported"] is False
    assert_mixed_close(report)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_unit_normalization_never_normalises_in_half_precision(half):
    # In float16, 300^2 overflows and (1e-4)^2 underflows; a layer given a half-precision policy
    # still normalises in float32, as the reference does.
    x = np.array([[300.0, 400.0], [1e-4, 0.0], [0.0, 0.0]], np.float32)
    expected = ChannelUnitNormalization()(x)
    layer = ChannelUnitNormalization(dtype=f"mixed_{half}")
    out = layer(keras.ops.cast(x, half))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(expected), rtol=1e-2, atol=1e-6)


def test_mixed_float16_gradient_is_finite():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("GradientTape needs the TensorFlow backend")
    from keras_lpips.model import LPIPS

    keras.config.set_dtype_policy("mixed_float16")
    try:
        metric = LPIPS(net="alex", backbone_weights=None, seed=0)
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    x0 = tf.constant(rng.uniform(-1, 1, (2, 64, 64, 3)), tf.float32)
    x1 = tf.Variable(np.array(x0)[::-1])
    x1[0].assign(x0[0])  # one identical pair: the gradient at d = 0
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(metric([x0, x1]))
    gradient = tape.gradient(loss, x1)
    assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).max() > 0
