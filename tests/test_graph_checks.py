"""Graph mode has the checks eager mode has (keras_lpips.inputs).

Inside a `tf.function` traced with batch and size left open (how `LPIPSLoss` and `MeanLPIPS` run
under `model.fit`), every pair the eager call refuses fails at run time with a
`tf.errors.InvalidArgumentError` carrying the eager `InputError`'s message; a valid pair gives the
eager distances. Under XLA (which drops assertions) a refused pair gives NaN, never a number.
The cost per call is measured in benchmarks/graph_checks.py, not here.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lpips import LPIPS, LPIPSLoss, MeanLPIPS
from keras_lpips.errors import InputError

SIZE = 32  # alex needs 31x31
OPEN = tf.TensorSpec([None, None, None, 3], tf.float32)


@functools.cache
def metric():
    return LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0.0, 1.0))


@functools.cache
def traced(jit_compile=False):
    """One `tf.function` around `metric([a, b])`, traced once for every batch and size."""
    lpips = metric()  # built eagerly, outside the trace
    return tf.function(lambda a, b: lpips([a, b]), input_signature=[OPEN, OPEN], jit_compile=jit_compile)


def images(n=2, height=SIZE, width=SIZE, seed=0, scale=1.0):
    return (np.random.default_rng(seed).uniform(0, 1, (n, height, width, 3)) * scale).astype(np.float32)


def with_value(value, index=0):
    pair = [images(seed=1), images(seed=2)]
    pair[index][1, 5, 7, 2] = value
    return pair


# Pairs the eager call refuses, each for another reason (its message is what graph mode must say).
REFUSED = {
    "different_batches": lambda: [images(2), images(1)],
    "different_heights": lambda: [images(height=SIZE), images(height=SIZE + 8)],
    "too_small": lambda: [images(height=30, width=30), images(height=30, width=30, seed=1)],
    "too_narrow": lambda: [images(width=20), images(width=20, seed=1)],
    "nan": lambda: with_value(np.nan),
    "inf": lambda: with_value(np.inf, index=1),
    "minus_inf": lambda: with_value(-np.inf),
    "values_0_255": lambda: [images(scale=255.0), images()],
    "below_range": lambda: with_value(-0.02, index=1),
}


def eager_message(pair):
    with pytest.raises(InputError) as caught:
        metric()(pair)
    return str(caught.value)


@pytest.mark.parametrize("case", list(REFUSED))
def test_graph_mode_refuses_with_the_eager_message(case):
    pair = REFUSED[case]()
    message = eager_message(pair)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        traced()(*pair)
    assert f"assertion failed: [{message}]" in str(caught.value), (message, str(caught.value)[:500])


@pytest.mark.parametrize("pair", [lambda: [images(seed=1), images(seed=2)], lambda: with_value(1.009)], ids=["valid", "within_tolerance"])
def test_graph_mode_gives_the_eager_distances(pair):
    pair = pair()
    np.testing.assert_allclose(np.asarray(traced()(*pair)), np.asarray(metric()(pair)), rtol=0, atol=1e-6)


def test_an_empty_batch_gives_empty_distances():
    """An empty batch (a replica's share of a short last batch under a `tf.distribute` strategy)
    is no error: empty distances, maps and embeddings, eagerly and under XLA, and LPIPSLoss and
    MeanLPIPS add nothing. (A graph without XLA runs the backbone on it, which TensorFlow's
    oneDNN convolutions on a CPU cannot do; tests/test_distribution.py runs that case without
    oneDNN.)"""
    from keras_lpips import LPIPSLoss, MeanLPIPS

    lpips, empty = metric(), images(0)
    for pair in ([empty, empty], [tf.constant(empty)] * 2):
        assert np.asarray(lpips(pair)).shape == (0,)
        assert np.asarray(lpips.spatial_map(pair)).shape == (0, SIZE, SIZE)
        assert [np.asarray(d).shape for d in lpips.twoafc(*pair, pair[0])] == [(0,), (0,)]
        assert np.asarray(lpips.embed(pair[0])).shape == (0, lpips.embedding_size(SIZE, SIZE))
    assert np.asarray(traced(jit_compile=True)(empty, empty)).shape == (0,)
    assert np.asarray(LPIPSLoss(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))(empty, empty)).size == 0
    mean = MeanLPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
    mean.update_state(images(1, seed=1), images(1, seed=2))
    before = float(mean.result())
    mean.update_state(empty, empty)
    assert float(mean.result()) == before > 0


def test_static_shapes_are_refused_while_tracing():
    """What is known at trace time raises the eager `InputError` itself, before anything runs."""
    pair = [images(2), images(1)]
    lpips = metric()
    function = tf.function(lambda a, b: lpips([a, b]))
    with pytest.raises(InputError, match=r"^The two images must have the same shape. Received img0 of shape \(2, 32, 32, 3\) and img1 of shape \(1, 32, 32, 3\)$"):
        function(*pair)


def _xla_refuses(pair):
    """Under XLA a refused pair is NaN or a compile-time error, never a number."""
    try:
        distances = np.asarray(traced(jit_compile=True)(*pair))
    except tf.errors.InvalidArgumentError:  # XLA's own shape checks (e.g. the concatenation)
        return
    assert distances.size and np.isnan(distances).all(), distances


def test_xla_turns_a_refused_pair_into_nan():
    _xla_refuses(REFUSED["different_batches"]())
    pair = [images(seed=1), images(seed=2)]
    np.testing.assert_allclose(np.asarray(traced(jit_compile=True)(*pair)), np.asarray(metric()(pair)), rtol=0, atol=1e-5)


@pytest.mark.slow  # one XLA compilation per shape
@pytest.mark.parametrize("case", list(REFUSED))
def test_xla_turns_every_refused_pair_into_nan(case):
    _xla_refuses(REFUSED[case]())


# --- under model.fit ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_lpips_tests")
class FirstImage(keras.layers.Layer):
    """A broken generator: one image for the whole batch (the batch sizes then differ)."""

    def call(self, x):
        return x[:1]


def generator(broken=False):
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Conv2D(3, 1, activation="sigmoid")(inputs)
    return keras.Model(inputs, FirstImage()(outputs) if broken else outputs)


def open_dataset(height=SIZE, width=SIZE, n=4, batches=2):
    """(x, y) batches whose batch and image sizes are left open in the dataset's spec: what fit
    traces with is then only known at run time."""

    def pairs():
        for seed in range(batches):
            yield images(n, height, width, seed=seed), images(n, height, width, seed=seed + 5)

    return tf.data.Dataset.from_generator(pairs, output_signature=(OPEN, OPEN))


def lpips_loss():
    return LPIPSLoss(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))


def test_fit_with_the_loss_refuses_batches_of_different_sizes():
    model = generator(broken=True)
    model.compile(optimizer="sgd", loss=lpips_loss(), jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        model.fit(open_dataset(), epochs=1, verbose=0, shuffle=False)
    assert "The two images must have the same shape. Received y_true of shape (4, 32, 32, 3) and y_pred of shape (1, 32, 32, 3)" in str(caught.value)


def test_fit_with_the_loss_refuses_batches_of_different_sizes_known_while_tracing():
    model = generator(broken=True)
    model.compile(optimizer="sgd", loss=lpips_loss(), jit_compile=False)
    with pytest.raises(InputError, match=r"^The two images must have the same shape. Received y_true of shape \(4, 32, 32, 3\) and y_pred of shape \(1, 32, 32, 3\)$"):
        model.fit(images(4, seed=1), images(4, seed=2), batch_size=4, epochs=1, verbose=0, shuffle=False)


def test_fit_with_the_loss_refuses_images_too_small():
    model = generator()
    model.compile(optimizer="sgd", loss=lpips_loss(), jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        model.fit(open_dataset(16, 16, n=2), epochs=1, verbose=0, shuffle=False)
    expected = "Images of 16x16 are too small for this network: it needs at least 31x31. Received shape (2, 16, 16, 3)"
    assert expected in str(caught.value)


def test_fit_with_the_metric_refuses_batches_of_different_sizes():
    model = generator(broken=True)
    mean = MeanLPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
    model.compile(optimizer="sgd", loss="mse", metrics=[mean], jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        model.fit(open_dataset(), epochs=1, verbose=0, shuffle=False)
    assert "The two images must have the same shape. Received y_true of shape (4, 32, 32, 3) and y_pred of shape (1, 32, 32, 3)" in str(caught.value)


def test_fit_with_the_loss_trains_on_valid_images():
    model = generator()
    model.compile(optimizer="sgd", loss=lpips_loss(), metrics=[MeanLPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))],
                  jit_compile=False)  # fmt: skip
    history = model.fit(open_dataset().repeat(), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all() and np.isfinite(history.history["mean_lpips"]).all()


# Every public entry point that runs the network, on images too small for it, eagerly and in a
# graph traced with the size left open: in a child process, since on such images a CPU
# convolution kernel kills the process (SIGFPE) where nothing refuses them first.
TOO_SMALL_ENTRY_POINTS = """
import numpy as np, tensorflow as tf
from keras_lpips import LPIPS
from keras_lpips.embedding import embed_images
from keras_lpips.errors import InputError
from keras_lpips.pairwise import distance_matrix

metric = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0.0, 1.0))
x = np.full((2, 8, 8, 3), 0.5, np.float32)
open_size = tf.TensorSpec([None, None, None, 3], tf.float32)
calls = {
    "call": lambda: metric([x, x]), "features": lambda: metric.features(x), "twoafc": lambda: metric.twoafc(x, x, x),
    "embed": lambda: metric.embed(x), "spatial_map": lambda: metric.spatial_map([x, x]),
    "per_layer": lambda: metric.per_layer([x, x]), "embed_images": lambda: embed_images(metric, x),
    "distance_matrix": lambda: distance_matrix(metric, x),
    "graph_features": lambda: tf.function(metric.features, input_signature=[open_size])(x),
    "graph_twoafc": lambda: tf.function(lambda a, b, c: metric.twoafc(a, b, c), input_signature=[open_size] * 3)(x, x, x),
    "graph_embedding": lambda: tf.function(lambda a: metric.embedding(metric.features(a)), input_signature=[open_size])(x),
}
for name, call in calls.items():
    try:
        call()
        print(name, "ran", flush=True)
    except InputError as error:
        print(name, "refused" if "are too small for this network" in str(error) else error, flush=True)
    except tf.errors.InvalidArgumentError as error:
        print(name, "refused" if "are too small for this network" in error.message else error.message, flush=True)
"""


def test_no_entry_point_runs_the_network_on_images_too_small_for_it():
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", TOO_SMALL_ENTRY_POINTS], capture_output=True, text=True, timeout=300)
    verdicts = dict(line.split(" ", 1) for line in child.stdout.splitlines() if " " in line)
    assert child.returncode == 0, (verdicts, child.stderr[-1500:])
    assert set(verdicts.values()) == {"refused"}, verdicts
    assert len(verdicts) == 11
