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


def test_unit_normalization_gradient_finite_at_zero():
    import tensorflow as tf

    x = tf.zeros((1, 2, 2, 8))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(ChannelUnitNormalization()(x))
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
    x = np.ones((1, 2, 2, 3), np.float32)
    np.testing.assert_allclose(np.asarray(head(x)), np.zeros((1, 2, 2, 1)))
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
