"""Behaviour of the LPIPS model: shapes, errors, gradients, serialisation, loss and metric."""

import keras
import re

import numpy as np
import pytest
import tensorflow as tf

import keras_lpips
from keras_lpips import InputError, LPIPS, WeightsError, WeightsUnavailableError
from tests.helpers import random_images


@pytest.fixture(scope="module")
def alex():
    return LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=3)


def test_outputs_have_documented_shapes(alex, rng):
    x0, x1 = random_images(rng, 3, 40, 50), random_images(rng, 3, 40, 50)
    assert tuple(alex([x0, x1]).shape) == (3,)
    assert tuple(alex.per_layer([x0, x1]).shape) == (3, 5)
    assert tuple(alex.spatial_map([x0, x1]).shape) == (3, 40, 50)
    np.testing.assert_allclose(np.asarray(alex.per_layer([x0, x1])).sum(-1), np.asarray(alex([x0, x1])), rtol=1e-6)


def test_batch_of_one_keeps_its_batch_axis(alex, rng):
    x0, x1 = random_images(rng, 1), random_images(rng, 1)
    assert tuple(alex([x0, x1]).shape) == (1,)


def test_identity_symmetry_and_sign(alex, rng):
    x0, x1 = random_images(rng), random_images(rng)
    assert np.allclose(np.asarray(alex([x0, x0])), 0.0)
    np.testing.assert_allclose(np.asarray(alex([x0, x1])), np.asarray(alex([x1, x0])), rtol=1e-6)
    assert (np.asarray(alex([x0, x1])) > 0).all()


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_an_image_compared_with_itself_is_exactly_zero(net, rng):
    """As in the reference, on every machine: each image of a pair goes through the backbone in a
    batch of its own, so the two copies sit at the same position (one batch of both put them at
    positions that AVX2 convolution kernels rounded differently: ~1e-14, not 0)."""
    metric = LPIPS(net=net, backbone_weights=None, lin_weights="v0.1", seed=0, input_range=(0, 1))
    for count, height, width in [(1, 64, 64), (3, 33, 47), (8, 40, 44)]:
        x, other = rng.random((count, height, width, 3), np.float32), rng.random((count, height, width, 3), np.float32)
        assert (np.asarray(metric([x, x])) == 0).all(), (count, height, width)
        assert (np.asarray(metric.spatial_map([x, x])) == 0).all() and (np.asarray(metric.per_layer([x, x])) == 0).all()
        d0, d1 = metric.twoafc(x, x, other)
        assert (np.asarray(d0) == 0).all() and (np.asarray(d1) > 0).all()
    traced = tf.function(lambda a, b: metric([a, b]), jit_compile=True)
    assert (traced(x, x).numpy() == 0).all()


@pytest.mark.parametrize("input_range", [(0.0, 1.0), (0.0, 255.0)])
def test_input_range_gives_same_distance_as_minus_one_to_one(alex, rng, input_range):
    x0, x1 = random_images(rng), random_images(rng)
    low, high = input_range
    scaled = [(x + 1) / 2 * (high - low) + low for x in (x0, x1)]
    other = LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=3, input_range=input_range)
    np.testing.assert_allclose(np.asarray(other(scaled)), np.asarray(alex([x0, x1])), atol=1e-5)


def test_layers_keeps_first_taps(rng):
    full = LPIPS(net="alex", backbone_weights=None, seed=1)
    first4 = LPIPS(net="alex", layers=4, backbone_weights=None, seed=1)
    x0, x1 = random_images(rng), random_images(rng)
    np.testing.assert_allclose(np.asarray(first4.per_layer([x0, x1])), np.asarray(full.per_layer([x0, x1]))[:, :4], atol=1e-6)


def test_cosine_distance_is_two_minus_two_cos(rng):
    metric = LPIPS(net="vgg", distance="cosine", layers=1, backbone_weights=None, seed=0)
    x0, x1 = random_images(rng, 1, 16, 16), random_images(rng, 1, 16, 16)
    f = np.asarray(metric.backbone(metric.scaling(np.concatenate([x0, x1]))), np.float64)
    cos = (f[0] * f[1]).sum(-1) / (np.linalg.norm(f[0], axis=-1) * np.linalg.norm(f[1], axis=-1))
    np.testing.assert_allclose(float(metric([x0, x1])[0]), (2 - 2 * cos).mean(), rtol=1e-5)


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
@pytest.mark.parametrize("kind", ["identical", "black"])
def test_gradients_finite_for_identical_and_black_images(net, kind, rng):
    metric = LPIPS(net=net, backbone_weights=None, lin_weights="v0.1", seed=0, input_range=(0, 1))
    x0 = tf.Variable(np.zeros((1, 32, 32, 3), np.float32) if kind == "black" else rng.random((1, 32, 32, 3), np.float32))
    x1 = tf.Variable(np.zeros((1, 32, 32, 3), np.float32) if kind == "black" else x0.numpy())
    with tf.GradientTape() as tape:
        d = tf.reduce_sum(metric([x0, x1]))
    g0, g1 = tape.gradient(d, [x0, x1])
    assert np.isfinite(g0.numpy()).all() and np.isfinite(g1.numpy()).all()


def test_gradients_are_nonzero_for_different_images(alex, rng):
    x0 = tf.Variable(random_images(rng, 1))
    x1 = random_images(rng, 1)
    with tf.GradientTape() as tape:
        d = tf.reduce_sum(alex([x0, x1]))
    assert np.abs(tape.gradient(d, x0).numpy()).sum() > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"net": "resnet"}, "Unknown net 'resnet'"),
        ({"version": "0.2"}, "version must be"),
        ({"distance": "l2"}, "distance must be"),
        ({"layers": 6}, "layers must be an integer from 1 to 5"),
        ({"layers": 0}, "layers must be an integer"),
        ({"input_range": (0, 2)}, "input_range must be one of"),
        ({"net": "alexnet", "backbone_weights": "keras-imagenet"}, "^backbone_weights='keras-imagenet' exists for vgg only. Received: net='alex'$"),
        ({"net": "vgg", "backbone_weights": "keras-imagenet"}, "calibrated on torchvision"),
    ],
)
def test_bad_constructor_arguments_raise_input_error(kwargs, match):
    kwargs = {"backbone_weights": None, **kwargs}
    with pytest.raises(InputError, match=match):
        LPIPS(**kwargs)


@pytest.mark.parametrize(
    "images,match",
    [
        (lambda r: [random_images(r)], "pair"),
        (lambda r: [random_images(r)[0], random_images(r)[0]], r"\(N, H, W, 3\)"),
        (lambda r: [random_images(r)[..., :2], random_images(r)[..., :2]], r"\(N, H, W, 3\)"),
        (lambda r: [random_images(r, 1, 30, 64), random_images(r, 1, 30, 64)], "too small.*at least 31x31"),
        (lambda r: [random_images(r, 1, 64, 64), random_images(r, 1, 64, 48)], "same shape"),
        (lambda r: [np.full((1, 64, 64, 3), np.nan, np.float32), random_images(r, 1)], "NaN"),
        (lambda r: [np.full((1, 64, 64, 3), np.inf, np.float32), random_images(r, 1)], "NaN or infinite"),
        (lambda r: [random_images(r, 1) * 255, random_images(r, 1)], "outside input_range"),
    ],
)
def test_bad_images_raise_input_error(alex, rng, images, match):
    with pytest.raises(InputError, match=match):
        alex(images(rng))


def test_minimum_size_is_accepted(alex, rng):
    assert alex.min_input_size == 31
    assert np.isfinite(np.asarray(alex([random_images(rng, 1, 31, 31), random_images(rng, 1, 31, 31)]))).all()


def test_missing_and_corrupt_weight_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        LPIPS(backbone_weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsError, match="Cannot read"):
        LPIPS(backbone_weights=str(bad))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(WeightsError, match="features.0"):
        LPIPS(backbone_weights=str(wrong))


def test_offline_without_cache_names_sources_and_remedy():
    with pytest.raises(WeightsUnavailableError, match="keras-lpips weights fetch --net alex.*backbone_weights=PATH"):
        LPIPS(net="alex")


def test_keras_file_round_trip_in_safe_mode(alex, rng, tmp_path):
    x0, x1 = random_images(rng), random_images(rng)
    path = tmp_path / "alex.keras"
    alex.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, LPIPS) and loaded.get_config() == alex.get_config()
    np.testing.assert_array_equal(np.asarray(loaded([x0, x1])), np.asarray(alex([x0, x1])))


def test_config_is_constructor_arguments(alex):
    config = alex.get_config()
    clone = LPIPS.from_config(config)
    assert clone.get_config() == config
    assert {"net", "version", "distance", "layers", "input_range", "seed"} <= set(config)


def test_loss_and_metric_weigh_pairs_and_refuse_weights_of_another_count(rng):
    """One weight for all or one per pair (any shape holding N); another count is one InputError
    naming sample_weight (Keras' was a TensorFlow 'Incompatible shapes' error)."""
    from keras_lpips import LPIPSLoss, MeanLPIPS
    from keras_lpips.errors import InputError

    a, b = random_images(rng, 2, low=0.0), random_images(rng, 2, low=0.0)
    loss = LPIPSLoss(backbone_weights=None, seed=0, input_range=(0, 1))
    d = np.asarray(loss.metric([a, b]))
    for weights in (0.5, [0.5], [1.0, 3.0], [[1.0], [3.0]], [[1.0, 3.0]]):
        want = np.mean(d * np.reshape(np.broadcast_to(np.asarray(weights, np.float32).reshape(-1), (2,)), -1))
        assert float(loss(a, b, sample_weight=np.asarray(weights, np.float32))) == pytest.approx(want, rel=1e-6)
    for weights in (np.ones(5), np.ones((2, 2)), np.ones((3, 1))):
        message = rf"^sample_weight must hold one weight per pair \(2\) or one for all. Received: sample_weight of shape {re.escape(str(weights.shape))}$"
        with pytest.raises(InputError, match=message):
            loss(a, b, sample_weight=weights)
        with pytest.raises(InputError, match=message):
            MeanLPIPS(backbone_weights=None, seed=0, input_range=(0, 1)).update_state(a, b, sample_weight=weights)


def test_loss_trains_a_generator_towards_its_target(rng):
    loss = keras_lpips.LPIPSLoss(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
    keras.utils.set_random_seed(0)
    target = rng.random((4, 32, 32, 3)).astype(np.float32)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    before = float(loss(target, model.predict(target, verbose=0)))
    model.fit(target, target, epochs=30, verbose=0)
    assert float(loss(target, model.predict(target, verbose=0))) < before
    assert keras_lpips.LPIPSLoss.from_config(loss.get_config()).get_config() == loss.get_config()


def test_mean_metric_averages_distances(alex, rng):
    metric = keras_lpips.MeanLPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=3)
    batches = [(random_images(rng), random_images(rng)) for _ in range(2)]
    for a, b in batches:
        metric.update_state(a, b)
    expected = np.mean([np.asarray(alex([a, b])) for a, b in batches])
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-5)


def test_from_config_rebuilds_the_metric_with_its_weights(rng):
    metric = LPIPS(net="alex", backbone_weights=None, lin_weights="v0.0", seed=5)
    clone = LPIPS.from_config(metric.get_config())
    assert clone.get_config()["lin_weights"] == "v0.0"
    x0, x1 = random_images(rng), random_images(rng)
    np.testing.assert_array_equal(np.asarray(clone([x0, x1])), np.asarray(metric([x0, x1])))


def test_preset_round_trips_through_its_config(fake_imagenet_home, monkeypatch, rng):
    from keras_lpips.presets import PRESETS

    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    metric = LPIPS.from_preset("alex-v0.1", input_range=(0, 1))
    assert {k: metric.get_config()[k] for k in PRESETS["alex-v0.1"]["config"]} == PRESETS["alex-v0.1"]["config"]
    direct = LPIPS(net="alex", version="0.1", backbone_weights="imagenet", lin_weights="v0.1", input_range=(0, 1))
    x0, x1 = random_images(rng, low=0), random_images(rng, low=0)
    np.testing.assert_array_equal(np.asarray(metric([x0, x1])), np.asarray(direct([x0, x1])))
    clone = LPIPS.from_config(metric.get_config())
    np.testing.assert_array_equal(np.asarray(clone([x0, x1])), np.asarray(metric([x0, x1])))
    with pytest.raises(InputError, match="Unknown preset 'alex-v9'.*alex-v0.1"):
        LPIPS.from_preset("alex-v9")


def test_keras_file_of_an_imagenet_metric_loads_without_the_cache(fake_imagenet_home, monkeypatch, tmp_path, rng):
    """The file supplies every weight: loading it reads no weight source (here: an empty cache)."""
    from keras_lpips.resolve import load_metric

    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    metric = LPIPS(net="alex", input_range=(0, 1))
    metric.save(tmp_path / "m.keras")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    loaded = load_metric(tmp_path / "m.keras")
    x0, x1 = random_images(rng, low=0), random_images(rng, low=0)
    np.testing.assert_array_equal(np.asarray(loaded([x0, x1])), np.asarray(metric([x0, x1])))


def test_nested_in_a_layer_called_in_training_the_distance_is_deterministic(alex, rng):
    """dropout defaults to 0: a surrounding layer's training=True cannot make the distance random."""

    class Outer(keras.layers.Layer):
        def __init__(self, metric):
            super().__init__()
            self.metric = metric

        def call(self, pair, training=None):
            return self.metric(pair, training=training)

    x0, x1 = random_images(rng), random_images(rng)
    expected = np.asarray(alex([x0, x1]))
    outer = Outer(alex)
    first, second = (np.asarray(outer([x0, x1], training=True)) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    assert alex.get_config()["dropout"] == 0.0


def test_twoafc_checks_its_three_batches_as_a_pair_is_checked(alex, rng):
    """Eagerly and in a graph traced with shapes left open: a p0 batch of another size was
    sliced into wrong distances, values outside input_range were scored."""
    import tensorflow as tf

    from keras_lpips.errors import InputError

    ref, p1 = random_images(rng, 2), random_images(rng, 2)
    traced = tf.function(alex.twoafc, input_signature=[tf.TensorSpec([None, None, None, 3])] * 3)
    for name, (a, b, c) in {"p0": (ref, ref[:1], p1), "p1": (ref, p1, p1[:1])}.items():
        with pytest.raises(InputError, match=rf"must have the same shape. Received ref of shape \(2, 64, 64, 3\) and {name}"):
            alex.twoafc(a, b, c)
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"Received ref of shape \(2, 64, 64, 3\) and {name}"):
            traced(a, b, c)
    with pytest.raises(InputError, match=r"^p1 has values in \[.*\], outside input_range=\(-1, 1\)"):
        alex.twoafc(ref, ref, p1 * 255)


def test_twoafc_and_channel_means_agree_with_the_pair_distance(alex, rng):
    ref, p0, p1 = (random_images(rng, 3) for _ in range(3))
    d0, d1 = alex.twoafc(ref, p0, p1)
    np.testing.assert_allclose(np.asarray(d0), np.asarray(alex([ref, p0])), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d1), np.asarray(alex([ref, p1])), rtol=1e-6)
    diffs = alex.squared_differences(alex.features(ref), alex.features(p0))
    means = np.concatenate([np.asarray(d).mean(axis=(1, 2)) for d in diffs], axis=-1)
    np.testing.assert_allclose(np.asarray(alex.distances_from_channel_means(means)), np.asarray(d0), rtol=1e-5)
    diff0, diff1 = alex.twoafc_squared_differences(ref, p0, p1)  # what twoafc and lin mode's precompute take
    np.testing.assert_allclose(np.asarray(alex.channel_means(diff0)), means, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(alex.total(alex.weigh(diff1))), np.asarray(d1), rtol=0, atol=0)


def test_weight_paths_are_recorded_as_strings_and_save(tmp_path, rng):
    import pathlib

    from keras_lpips.weights.loading import shipped_lin_path

    source = tmp_path / "lin.npz"
    source.write_bytes(pathlib.Path(str(shipped_lin_path("v0.1", "alex"))).read_bytes())
    metric = LPIPS(net="alex", backbone_weights=None, lin_weights=source, seed=0)
    assert metric.get_config()["lin_weights"] == str(source)
    metric.save(tmp_path / "m.keras")
    x0, x1 = random_images(rng), random_images(rng)
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded([x0, x1])), np.asarray(metric([x0, x1])))


def test_keras_load_model_reads_no_weight_source(fake_imagenet_home, monkeypatch, tmp_path, rng):
    """`keras.saving.load_model` itself (not only keras-lpips' loader): the file supplies every
    weight, so a deleted weight file or an empty cache does not matter, and nothing is fetched."""
    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    import pathlib

    from keras_lpips.weights.loading import shipped_lin_path

    source = tmp_path / "lin.npz"
    source.write_bytes(pathlib.Path(str(shipped_lin_path("v0.1", "alex"))).read_bytes())
    metric = LPIPS(net="alex", lin_weights=source, input_range=(0, 1))
    metric.save(tmp_path / "m.keras")
    source.unlink()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "1")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    x0, x1 = random_images(rng, low=0), random_images(rng, low=0)
    np.testing.assert_array_equal(np.asarray(loaded([x0, x1])), np.asarray(metric([x0, x1])))
    assert not (tmp_path / "empty_home" / "keras_lpips" / "alex-imagenet-features.npz").exists()


@pytest.mark.parametrize("imports", [
    "import keras_lpips, keras", "import keras, keras_lpips", "import keras_lpips.model, keras",
    "import keras_lpips, importlib.util; importlib.util.find_spec('keras'); import keras",  # a lookup first
])
def test_keras_files_load_in_a_fresh_process_after_import_keras_lpips(tmp_path, rng, imports):
    """LPIPS, LPIPSLoss and MeanLPIPS are imported lazily, yet Keras finds them when it loads a
    file in a process that only imported keras_lpips (in either order with keras)."""
    import subprocess
    import sys

    metric = LPIPS(net="alex", backbone_weights=None, seed=1, input_range=(0, 1))
    metric.save(tmp_path / "metric.keras")
    inputs = [keras.Input((None, None, 3)), keras.Input((None, None, 3))]
    keras.Model(inputs, metric(inputs)).save(tmp_path / "wrapped.keras")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")])
    lpips_args = {"net": "alex", "backbone_weights": None, "seed": 1, "input_range": (0, 1)}
    model.compile(optimizer="adam", loss=keras_lpips.LPIPSLoss(**lpips_args), metrics=[keras_lpips.MeanLPIPS(**lpips_args)])
    images = rng.random((2, 32, 32, 3)).astype(np.float32)
    model.fit(images, images, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    x0, x1 = random_images(rng, low=0), random_images(rng, low=0)
    np.save(tmp_path / "x.npy", np.stack([x0, x1]))
    script = f"""
{imports}
import numpy as np
x0, x1 = np.load({str(tmp_path / "x.npy")!r})
print(float(np.asarray(keras.saving.load_model({str(tmp_path / "metric.keras")!r})([x0, x1]))[0]))
print(float(keras.saving.load_model({str(tmp_path / "wrapped.keras")!r}).predict([x0, x1], verbose=0)[0]))
model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
print(type(model.loss).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    distance, wrapped, loss = result.stdout.split()
    expected = float(np.asarray(metric([x0, x1]))[0])
    assert float(distance) == pytest.approx(expected, abs=1e-7) and loss == "LPIPSLoss"
    assert float(wrapped) == pytest.approx(expected, abs=1e-6)


def test_a_compiled_loss_keeps_its_weights_and_the_metric_its_arguments(fake_imagenet_home, monkeypatch, tmp_path, rng):
    """A .keras file of a model compiled with LPIPSLoss holds the loss's network as it was (here
    with halved heads; 10 MB for alex) and, loaded in a new process with an empty cache and
    offline, the loss is that network, read from the file alone. Keras saves no compiled metric's
    weights: MeanLPIPS is rebuilt from its sources, so with compile=True it loads where they need
    no cache (an untrained backbone, shipped lin weights) and, where they do, its error says to
    pass compile=False."""
    import json
    import os
    import subprocess
    import sys
    import zipfile

    import h5py

    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    images = rng.random((2, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    untrained = {"net": "alex", "backbone_weights": None, "seed": 1, "input_range": (0, 1)}
    loss = keras_lpips.LPIPSLoss(net="alex", input_range=(0, 1))
    for head in loss.metric.heads:
        head.kernel.assign(head.kernel * 0.5)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(3, 1, activation="sigmoid")])
    model.compile(optimizer="adam", loss=loss, metrics=[keras_lpips.MeanLPIPS(**untrained)])
    model.fit(images, images * 0.9, epochs=1, verbose=0)
    expected = model.evaluate(images, images * 0.9, verbose=0, return_dict=True)
    model.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive, archive.open("model.weights.h5") as file, h5py.File(file) as weights:
        assert sorted(weights) == ["layers", "loss", "optimizer", "vars"]  # no compiled metric's
    assert (tmp_path / "model.keras").stat().st_size > 9_000_000
    metric_only = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(3, 1)])
    metric_only.compile(optimizer="adam", loss="mse", metrics=[keras_lpips.MeanLPIPS(net="alex", input_range=(0, 1))])
    metric_only.save(tmp_path / "metric.keras")
    script = f"""
import json, keras, keras_lpips, numpy as np
from keras_lpips import WeightsUnavailableError
images = np.load({str(tmp_path / "x.npy")!r})
model = keras.saving.load_model({str(tmp_path / "model.keras")!r})
report = model.evaluate(images, images * 0.9, verbose=0, return_dict=True)
keras.saving.load_model({str(tmp_path / "metric.keras")!r}, compile=False)
try:
    keras.saving.load_model({str(tmp_path / "metric.keras")!r})
except WeightsUnavailableError as error:
    report["error"] = str(error)
print(json.dumps({{key: str(value) if key == "error" else float(value) for key, value in report.items()}}))
"""
    empty = {**os.environ, "KERAS_HOME": str(tmp_path / "empty_home"), "KERAS_LPIPS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=empty)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    assert report["mean_lpips"] == pytest.approx(expected["mean_lpips"], abs=1e-6)
    assert report["error"].startswith("No ImageNet weights for net 'alex'")
    assert report["error"].endswith("a .keras file keeps MeanLPIPS's arguments, not its weights, and load_model rebuilds it "
                                    "from them: keras.saving.load_model(path, compile=False) loads the model without it")
    assert not (tmp_path / "empty_home" / "keras_lpips" / "alex-imagenet-features.npz").exists()


def test_a_loss_that_load_model_rebuilt_and_did_not_restore_refuses_to_run(tmp_path):
    """An LPIPSLoss rebuilt inside keras.saving.load_model reads no weight source: one the file
    does not restore (held where Keras' saving does not reach, e.g. a compiled metric's
    attribute) raises rather than computing with weights that came from nowhere."""
    from keras_lpips import keras_compat
    from keras_lpips.errors import WeightsError

    config = keras_lpips.LPIPSLoss(net="alex", backbone_weights=None, seed=1, input_range=(0, 1)).get_config()
    rebuilt = []

    @keras.saving.register_keras_serializable(package="keras_lpips_test")
    class Probe(keras.layers.Layer):
        @classmethod
        def from_config(cls, layer_config):
            assert keras_compat.loading_a_saved_model()
            rebuilt.append(keras_lpips.LPIPSLoss.from_config(config))
            return super().from_config(layer_config)

    keras.Sequential([keras.Input((2,)), Probe()]).save(tmp_path / "probe.keras")
    keras.saving.load_model(tmp_path / "probe.keras")
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(WeightsError, match=r"did not restore .* build it with LPIPSLoss\(\*\*config\)"):
        rebuilt[0](images, images)
    assert float(keras_lpips.LPIPSLoss.from_config(config)(images, images)) == 0.0  # outside load_model: from its sources


def test_loss_and_metric_configs_hold_paths_as_strings(tmp_path, rng):
    import pathlib

    from keras_lpips.weights.loading import shipped_lin_path

    path = pathlib.Path(str(shipped_lin_path("v0.1", "alex")))
    args = {"net": "alex", "backbone_weights": None, "seed": 0, "lin_weights": path, "input_range": (0, 1)}
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(3, 3, padding="same")])
    model.compile(optimizer="adam", loss=keras_lpips.LPIPSLoss(**args), metrics=[keras_lpips.MeanLPIPS(**args)])
    assert model.loss.get_config()["lin_weights"] == str(path)
    model.save(tmp_path / "m.keras")  # a Path in the config could not be written


def test_backbone_is_frozen_as_the_reference_s(rng):
    """A model that holds the metric trains at most its linear heads (the reference's backbone has
    requires_grad=False); `trainable = False` freezes the heads too, as the loss and the metric do."""
    metric = LPIPS(net="alex", backbone_weights=None, seed=0)
    assert metric.backbone.trainable_variables == [] and len(metric.trainable_variables) == len(metric.heads)
    metric.trainable = False
    assert metric.trainable_variables == []
    args = dict(net="alex", backbone_weights=None, seed=0)
    assert keras_lpips.LPIPSLoss(**args).metric.trainable_variables == []
    assert keras_lpips.MeanLPIPS(**args)._lpips.trainable_variables == []


def test_what_trains_survives_the_constructor_save_load_and_clone(tmp_path):
    """`trainable=False` freezes the heads as the setter does (Keras' setter, run by the base
    constructor, reached no layer: none existed yet), and a frozen or fine-tuned metric nested in
    a model trains the same weights after `save`/`load_model` and `clone_model` (they came back
    trainable: 7 weights instead of the model's 2; a tuned backbone came back frozen)."""
    inputs = [keras.Input((32, 32, 3)), keras.Input((32, 32, 3))]
    args = dict(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
    assert LPIPS(**args, trainable=False).trainable_variables == []
    for kwargs, count in (({"trainable": False}, 0), ({}, 5), ({"train_backbone": True}, 15)):
        model = keras.Model(inputs, LPIPS(**args, **kwargs)(inputs))
        model.save(tmp_path / "m.keras")
        loaded = keras.models.load_model(tmp_path / "m.keras")
        counts = [len(m.trainable_weights) for m in (model, loaded, keras.models.clone_model(model))]
        assert counts == [count] * 3, kwargs
    with pytest.raises(InputError, match="train_backbone must be True or False. Received: train_backbone='yes'"):
        LPIPS(**args, train_backbone="yes")


@pytest.mark.parametrize("weights", ["missing.pth", "imagenet", "keras-imagenet"])
def test_a_bad_train_backbone_is_refused_before_any_weight_is_read(tmp_path, monkeypatch, weights):
    """train_backbone was checked after the weight sources were read: a missing file failed
    first, and "imagenet" or "keras-imagenet" not cached were downloaded, for an argument error."""
    import keras_lpips.model

    def unexpected_read(*args):
        raise AssertionError("a weight source was read before train_backbone was checked")

    monkeypatch.setattr(keras_lpips.model, "restore_weights", unexpected_read)
    weights = str(tmp_path / weights) if weights.endswith(".pth") else weights
    with pytest.raises(InputError, match="^train_backbone must be True or False. Received: train_backbone='yes'$"):
        LPIPS(net="vgg", backbone_weights=weights, lin_weights=None, train_backbone="yes")


@pytest.mark.parametrize("cls", ["LPIPSLoss", "MeanLPIPS"])
@pytest.mark.parametrize("kwargs", [{"dropout": 0.5}, {"trainable": True}, {"train_backbone": True}])
def test_the_loss_and_metric_refuse_arguments_that_would_be_ignored(cls, kwargs):
    """They compute with the metric frozen, in inference: dropout and what trains do not apply."""
    (key, value), = kwargs.items()
    with pytest.raises(InputError, match=rf"^{cls} computes with its metric frozen, in inference: .* Received: {key}={value}$"):
        getattr(keras_lpips, cls)(net="alex", backbone_weights=None, seed=0, **kwargs)
    getattr(keras_lpips, cls)(net="alex", backbone_weights=None, seed=0, dropout=0.0, trainable=False)  # their values: accepted


def test_views_of_the_metric_build_into_a_functional_model_and_export(tmp_path, rng):
    """spatial_map and per_layer on a functional model's inputs (their batch is None: slicing the
    features failed) give the eager values; a bare metric exports with Keras' own `export` (it
    said "never called": eager calls run the traced function), and the export's distances are
    the metric's."""
    import tensorflow as tf

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
    inputs = [keras.Input((32, 32, 3)), keras.Input((32, 32, 3))]
    model = keras.Model(inputs, [metric.spatial_map(inputs), metric.per_layer(inputs)])
    a, b = (rng.random((2, 32, 32, 3), dtype=np.float32) for _ in range(2))
    maps, per_layer = model.predict([a, b], verbose=0)
    np.testing.assert_allclose(maps, np.asarray(metric.spatial_map([a, b])), rtol=0, atol=1e-6)
    np.testing.assert_allclose(per_layer, np.asarray(metric.per_layer([a, b])), rtol=0, atol=1e-6)
    metric([a, b])
    metric.export(tmp_path / "export", verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "export"))  # kept: its functions need its variables
    np.testing.assert_allclose(np.asarray(loaded.serve([a, b])), np.asarray(metric([a, b])), rtol=0, atol=1e-6)


def test_preset_arguments_cannot_be_overridden():
    with pytest.raises(InputError, match=r"Preset 'alex-v0.1' sets net itself.*Received: net='vgg'"):
        LPIPS.from_preset("alex-v0.1", net="vgg")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16"])
def test_a_dtype_that_would_only_round_the_inputs_is_refused(dtype):
    """The layers follow the global policy, not a dtype= argument: any but float32 would only round
    the images (a mixed one too: 5e-3 relative off, no faster)."""
    with pytest.raises(InputError, match=rf"mixed policy.*precision=\"bf16\". Received: dtype='{dtype}'$"):
        LPIPS(net="alex", backbone_weights=None, dtype=dtype)


def test_a_float32_dtype_is_accepted_and_no_dtype_is_recorded():
    """dtype="float32" builds; the config records no dtype, and one written before (a policy of its
    own) is dropped when rebuilding: the metric follows the global policy."""
    metric = LPIPS(net="alex", backbone_weights=None, layers=1, seed=0, dtype="float32")
    config = metric.get_config()
    assert "dtype" not in config
    old = {**config, "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}, "registered_name": None}}
    assert LPIPS.from_config(old).dtype_policy.name == "float32"


def test_a_metric_spec_with_a_preset_or_model_takes_no_other_option():
    from keras_lpips.resolve import MetricSpec

    with pytest.raises(InputError, match="^preset=vgg-v0.0 fixes the whole metric: drop net=$"):
        MetricSpec(preset="vgg-v0.0", net="squeeze")
    with pytest.raises(InputError, match="^model=m.keras fixes the whole metric: drop preset=alex-v0.1, version=, layers=$"):
        MetricSpec(model="m.keras", preset="alex-v0.1", version="0.0", layers=2)
    with pytest.raises(InputError, match="^model=m.keras fixes the whole metric: drop preset=alex-v0.1$"):
        MetricSpec(model="m.keras", preset="alex-v0.1")
    assert MetricSpec(preset="vgg-v0.0").net == "alex"  # defaults are not options given


def test_a_global_float64_policy_still_builds(rng):
    """Only a dtype= argument is refused; the layers follow a global policy (floatx) as before."""
    keras.config.set_floatx("float64")
    try:
        metric = LPIPS(net="alex", backbone_weights=None, layers=1, seed=0)
    finally:
        keras.config.set_floatx("float32")
    assert np.isfinite(np.asarray(metric([random_images(rng), random_images(rng)]))).all()


@pytest.mark.parametrize("dtypes", [("float32", "uint8"), ("uint8", "uint8")])
def test_a_metric_nested_in_a_saved_model_loads_its_weights_from_the_file(tmp_path, rng, dtypes):
    """Inside keras.models.load_model no weight source is read: a functional model holding the
    metric gets the metric's weights from the file (its lin weights file is gone). Loaded after
    `clear_session`, as in a new process: the metric's input checks add no operation of their own
    to the model (their auto-generated names, "convert_to_tensor" twice, refused the reload); the
    layer converts integer images to float32 itself (two uint8 inputs built no model before)."""
    import pathlib

    from keras_lpips.weights.loading import shipped_lin_path

    source = tmp_path / "lin.npz"
    source.write_bytes(pathlib.Path(str(shipped_lin_path("v0.1", "alex"))).read_bytes())
    keras.backend.clear_session()  # operations named as in a new process
    metric = LPIPS(net="alex", backbone_weights=None, seed=2, lin_weights=source, input_range=(0, 1))
    inputs = [keras.Input((None, None, 3), dtype=dtype) for dtype in dtypes]
    wrapped = keras.Model(inputs, metric(inputs))
    operations = [type(operation).__name__ for operation in wrapped.operations]
    wrapped.save(tmp_path / "wrapped.keras")
    source.unlink()
    x0, x1 = (rng.integers(0, 2, (2, 64, 64, 3)).astype(dtype) for dtype in dtypes)
    if dtypes[0] == "float32":
        x0 = random_images(rng, low=0)
    expected = np.asarray(metric([x0, x1]))
    np.testing.assert_allclose(np.asarray(wrapped([x0, x1])), expected, atol=1e-6)
    keras.backend.clear_session()
    loaded = keras.saving.load_model(tmp_path / "wrapped.keras")
    np.testing.assert_allclose(np.asarray(loaded.predict([x0, x1], verbose=0)), expected, atol=1e-6)
    assert operations == ["InputLayer", "InputLayer", "LPIPS"]


def test_keras_imagenet_that_cannot_be_fetched_is_one_error(monkeypatch):
    """Keras' get_file raises a bare Exception for a failed download: it becomes the one-line
    WeightsUnavailableError that offline ImageNet weights give."""
    from keras.src.applications import vgg16

    from keras_lpips.errors import WeightsUnavailableError

    def unreachable(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/vgg16.h5: None -- [Errno 111] Connection refused")

    monkeypatch.setattr(vgg16.file_utils, "get_file", unreachable)  # where Keras Applications' VGG16 fetches
    with pytest.raises(WeightsUnavailableError, match=r"Cannot fetch Keras Applications' ImageNet VGG16 .*URL fetch failure"):
        LPIPS(net="vgg", backbone_weights="keras-imagenet", lin_weights=None)


def test_an_untrained_backbone_without_a_seed_is_rebuilt_from_its_config(rng):
    """seed=None draws one that get_config records: from_config gave another random network
    (distances 0.1 apart); two metrics built alike still differ."""
    metric = LPIPS(net="alex", backbone_weights=None, lin_weights=None, input_range=(0, 1))
    images = [random_images(rng, 2, 40, 48, low=0.0) for _ in range(2)]
    clone = LPIPS.from_config(metric.get_config())
    assert metric.get_config()["seed"] is not None
    np.testing.assert_array_equal(np.asarray(clone(images)), np.asarray(metric(images)))
    other = LPIPS(net="alex", backbone_weights=None, lin_weights=None, input_range=(0, 1))
    assert not np.allclose(np.asarray(other(images)), np.asarray(metric(images)))


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_a_channels_first_process_builds_loads_and_scores_nhwc_images(net, rng, tmp_path):
    """keras.config.set_image_data_format("channels_first") (code ported from PyTorch) leaves the
    metric as it is: it builds, scores NHWC images as in a channels-last process, and a saved
    metric loads; the process keeps its format."""
    pair = [random_images(rng, 2, 48, low=0.0), random_images(rng, 2, 48, low=0.0)]
    want = np.asarray(LPIPS(net=net, backbone_weights=None, seed=0, input_range=(0, 1))(pair))
    keras.config.set_image_data_format("channels_first")
    try:
        metric = LPIPS(net=net, backbone_weights=None, seed=0, input_range=(0, 1))
        np.testing.assert_allclose(np.asarray(metric(pair)), want, rtol=1e-5, atol=1e-7)
        metric.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
        np.testing.assert_allclose(np.asarray(loaded(pair)), want, rtol=1e-5, atol=1e-7)
        assert keras.config.image_data_format() == "channels_first"
    finally:
        keras.config.set_image_data_format("channels_last")
