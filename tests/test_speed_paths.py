"""The compiled call path, precision="bf16", and the memory estimate."""

import keras
import numpy as np
import pytest

from keras_lpips import InputError, LPIPS
from keras_lpips.memory import conv_macs, estimate_memory_bytes, layer_output_shapes
from tests.conftest import random_images


@pytest.fixture(scope="module")
def alex():
    return LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=3)


def test_compiled_call_matches_keras_call_and_traces_once(alex, rng):
    for n, h, w in ((2, 64, 64), (3, 40, 50), (1, 97, 131), (5, 31, 33)):
        pair = [random_images(rng, n, h, w), random_images(rng, n, h, w)]
        fast = np.asarray(alex(pair))
        keras_call = np.asarray(keras.Model.__call__(alex, [keras.ops.convert_to_tensor(x) for x in pair]))
        np.testing.assert_allclose(fast, keras_call, rtol=1e-6, atol=1e-7)
    assert alex._graph_distance.experimental_get_tracing_count() == 1


def test_training_call_takes_keras_path(alex, rng):
    pair = [random_images(rng, 2), random_images(rng, 2)]
    np.testing.assert_allclose(np.asarray(alex(pair, training=False)), np.asarray(alex(pair)), rtol=1e-6)
    assert tuple(alex(pair, training=True).shape) == (2,)  # dropout on: Keras' own call


def test_bf16_is_close_to_float32_and_keeps_float32_outside_the_backbone(rng):
    f32 = LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=1)
    b16 = LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=1, precision="bf16")
    pair = [random_images(rng, 4), random_images(rng, 4)]
    d32, d16 = np.asarray(f32(pair)), np.asarray(b16(pair))
    assert d16.dtype == np.float32
    np.testing.assert_allclose(d16, d32, rtol=3e-2)
    convs = [layer for layer in b16.backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32" for layer in convs)
    assert b16.normalize.compute_dtype == "float32" and b16.heads[0].compute_dtype == "float32"
    assert all(f.dtype == "float32" for f in b16.features(pair[0]))
    assert LPIPS.from_config(b16.get_config()).precision == "bf16"


def test_unknown_precision_raises_input_error():
    with pytest.raises(InputError, match="precision must be one of"):
        LPIPS(net="alex", backbone_weights=None, precision="fp16")


def test_memory_estimate_grows_with_size_and_batch(alex):
    one = estimate_memory_bytes(alex, 256, 256, 1)
    assert isinstance(one, int) and one > 0
    assert estimate_memory_bytes(alex, 256, 256, 2) > one
    assert estimate_memory_bytes(alex, 512, 512, 1) > 3 * one


def test_layer_shapes_and_macs_follow_the_architecture(alex):
    shapes = dict((layer.name, shape) for layer, shape in layer_output_shapes(alex, 224, 224))
    assert shapes["conv1"] == (55, 55, 64) and shapes["conv5"] == (13, 13, 256)
    assert conv_macs(alex, 224, 224) == 655_566_528  # torchvision AlexNet's conv layers at 224x224
