"""Behaviour of the individual layers against direct numpy/torch-convention formulas."""

import keras
import numpy as np
import pytest

from keras_lpips.layers import (
    CeilMaxPooling2D,
    ChannelUnitNormalization,
    InputScaling,
    NonNegativeLinearHead,
    bilinear_resize,
)


def torch_bilinear_reference(maps, height, width):
    """Direct float64 loop transcription of torch's upsample_bilinear2d (align_corners=False)."""
    n, in_h, in_w = maps.shape
    out = np.zeros((n, height, width))

    def source(i, in_size, out_size):
        src = max((i + 0.5) * in_size / out_size - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + 1 if i0 < in_size - 1 else i0
        return i0, i1, src - i0

    for y in range(height):
        y0, y1, fy = source(y, in_h, height)
        for x in range(width):
            x0, x1, fx = source(x, in_w, width)
            top = (1 - fx) * maps[:, y0, x0] + fx * maps[:, y0, x1]
            bottom = (1 - fx) * maps[:, y1, x0] + fx * maps[:, y1, x1]
            out[:, y, x] = (1 - fy) * top + fy * bottom
    return out


@pytest.mark.parametrize("in_hw,out_hw", [((3, 4), (97, 131)), ((15, 15), (64, 64)), ((1, 1), (5, 7)), ((6, 9), (6, 9))])
def test_bilinear_resize_matches_torch_formula(rng, in_hw, out_hw):
    maps = rng.random((2, *in_hw)).astype(np.float32)
    got = np.asarray(bilinear_resize(maps, *out_hw))
    np.testing.assert_allclose(got, torch_bilinear_reference(maps.astype(np.float64), *out_hw), atol=1e-6)


def upsampling_weights(n_in, n_out):
    """(n_out, n_in) weights of `bilinear_resize` along one side, read off exactly: it resizes unit impulses."""
    return np.asarray(bilinear_resize(np.eye(n_in, dtype=np.float32)[:, None, :], 1, n_out))[:, 0, :].T


def torch_float32_weights(n_in, n_out):
    """torch's (n_out, n_in) bilinear weights, its float32 index arithmetic emulated in numpy.

    ATen's CPU kernel: `scale = float32(in) / out`, then `src = scale * (i + 0.5) - 0.5` rounded
    once (its vectorised builds fuse it into an FMA; the float64 product here is exact), clamped
    at 0; `lower = floor(src)`, at most `in - 1`; `lambda = src - lower`; upper `min(lower + 1, in - 1)`.
    """
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out)
    src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0))
    lower = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = src - lower.astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    np.add.at(weights, (dst, lower), np.float32(1) - lam)
    np.add.at(weights, (dst, np.minimum(lower + 1, n_in - 1)), lam)
    return weights


# Input sizes up to 300 upsampled up to 4096, and layer-map sides of 1080x1920 and 2160x3840
# images, where the exact fractions once used here were up to 9e-5 off torch's weights.
UPSAMPLING_SIZES = [
    (n_in, n_out)
    for n_in in (1, 2, 3, 5, 7, 15, 31, 48, 59, 67, 97, 120, 135, 173, 240, 300)
    for n_out in (n_in, n_in + 1, 97, 131, 384, 511, 1080, 1920, 2160, 3840, 4096) if n_out >= n_in
] + [(539, 1080), (479, 1920), (959, 1920), (1079, 2160), (1919, 3840)]  # fmt: skip


def test_bilinear_weights_are_torchs_float32_weights_bit_for_bit():
    for n_in, n_out in UPSAMPLING_SIZES:
        expected = torch_float32_weights(n_in, n_out)
        np.testing.assert_array_equal(upsampling_weights(n_in, n_out), expected, f"{n_in} -> {n_out}")


def test_bilinear_weights_keep_their_bits_in_a_graph_with_unknown_sizes():
    """As SavedModel and TFLite signatures run it: Grappler's rewrites of the graph's float
    arithmetic (it regroups sums) must not move a weight."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Grappler rewrites TensorFlow graphs only: the TensorFlow backend")
    import tensorflow as tf

    traced = tf.function(
        lambda impulses, n_out: bilinear_resize(impulses, 1, n_out),
        input_signature=[tf.TensorSpec([None, 1, None], tf.float32), tf.TensorSpec([], tf.int32)],
    )
    for n_in, n_out in UPSAMPLING_SIZES:
        got = traced(np.eye(n_in, dtype=np.float32)[:, None, :], n_out).numpy()[:, 0, :].T
        np.testing.assert_array_equal(got, torch_float32_weights(n_in, n_out), f"{n_in} -> {n_out}")


def test_ceil_max_pooling_matches_torch_output_sizes(rng):
    layer = CeilMaxPooling2D(3, 2)
    for size in range(2, 12):
        x = rng.random((1, size, size + 1, 1)).astype(np.float32)
        out = np.asarray(layer(x))
        expect = lambda n: -(-(n - 3) // 2) + 1  # noqa: E731  torch ceil_mode formula
        assert out.shape[1:3] == (expect(size), expect(size + 1))
        # the last window hangs over the edge and sees only in-bounds values
        assert out[0, -1, -1, 0] == x[0, 2 * (out.shape[1] - 1) :, 2 * (out.shape[2] - 1) :, 0].max()


def test_unit_normalization_values_and_zero_vectors():
    layer = ChannelUnitNormalization()
    x = np.array([[[[3.0, 4.0], [0.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(layer(x)), [[[[0.6, 0.8], [0.0, 0.0]]]], atol=1e-7)


def test_unit_normalization_adds_the_reference_epsilon_to_the_norm():
    """x / (||x|| + 1e-10), as lpips.normalize_tensor: visible on vectors of norm near 1e-10."""
    x = np.array([[3e-10, 4e-10], [3e-9, 4e-9]], np.float32)
    norms = np.array([[5e-10], [5e-9]])
    np.testing.assert_allclose(np.asarray(ChannelUnitNormalization()(x)), x / (norms + 1e-10), rtol=1e-6)


@pytest.mark.parametrize("vector", [[0.0, 0.0], [1e-20, 0.0], [1e-30, -1e-30], [1e-3, 0.0]], ids=str)
def test_unit_normalization_gradient_finite_at_and_near_zero(vector):
    """Finite gradients at a zero vector and at tiny ones (where a plain sqrt's is inf or NaN)."""
    import tensorflow as tf

    x = tf.constant([[vector] * 3], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(ChannelUnitNormalization()(x) * tf.constant([1.0, 2.0]))
    assert np.isfinite(tape.gradient(y, x).numpy()).all()


@pytest.mark.parametrize("input_range", [(0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)])
def test_input_scaling_maps_range_then_applies_reference_shift_scale(rng, input_range):
    low, high = input_range
    x = rng.uniform(low, high, (1, 4, 4, 3)).astype(np.float32)
    unit = (x - low) / (high - low) * 2 - 1
    expect = (unit - np.array([-0.030, -0.088, -0.188])) / np.array([0.458, 0.448, 0.450])
    np.testing.assert_allclose(np.asarray(InputScaling(input_range)(x)), expect, atol=1e-5)
    np.testing.assert_allclose(np.asarray(InputScaling(input_range, mode="lpips-v0.0")(x)), unit, atol=1e-6)


def test_input_scaling_caffe_mode_is_bgr_mean_subtracted():
    x = np.array([[[[1.0, 0.0, -1.0]]]], np.float32)  # RGB 255, 127.5, 0
    out = np.asarray(InputScaling(mode="caffe")(x))
    np.testing.assert_allclose(out[0, 0, 0], [0 - 103.939, 127.5 - 116.779, 255 - 123.68], atol=1e-4)


def test_linear_head_is_weighted_channel_sum_and_clamped_by_constraint():
    head = NonNegativeLinearHead(3, dropout=0.0)
    head.build()
    head.kernel.assign([[1.0], [2.0], [-3.0]])
    x = np.array([[[[1.0, 1.0, 1.0], [0.5, 2.0, 0.25]], [[0.0, 0.0, 1.0], [3.0, 0.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(head(x))[..., 0], [[[0.0, 3.75], [-3.0, 3.0]]], rtol=1e-6)
    head.kernel.assign(head.kernel.constraint(head.kernel))
    np.testing.assert_allclose(np.asarray(head.kernel)[:, 0], [1.0, 2.0, 0.0])


@pytest.mark.parametrize(
    "layer",
    [InputScaling((0, 255), "caffe"), ChannelUnitNormalization(1e-8), NonNegativeLinearHead(5, 0.25), CeilMaxPooling2D(3, 2)],
)
def test_layers_round_trip_through_config(layer):
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)).get_config() == layer.get_config()
