"""The Keras internals keras_lpips.keras_compat relies on: present in the installed Keras, or a
failure that says which one is gone and on which Keras."""

import keras
import numpy as np

from keras_lpips import keras_compat


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def test_installed_keras_is_a_tested_series():
    low, high = (_minor(v) for v in keras_compat.TESTED_KERAS)
    assert low <= _minor(keras.__version__) <= high, (
        f"Keras {keras.__version__} is outside the series keras_compat was tested on ({' to '.join(keras_compat.TESTED_KERAS)}): "
        "run the full suite on it, then widen TESTED_KERAS and pyproject.toml's bound"
    )


def test_adam_moments_are_the_slots_adam_updates():
    variable = keras.Variable(np.ones(3, np.float32))
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build([variable])
    optimizer.apply([np.full(3, 2.0, np.float32)], [variable])
    try:
        m, v = keras_compat.adam_moments(optimizer, variable)
    except AttributeError as error:
        raise AssertionError(f"Keras {keras.__version__}: Adam's slot internals changed ({error}); update keras_compat.adam_moments") from None
    np.testing.assert_allclose(np.asarray(m), 0.1 * 2.0, rtol=1e-6)  # (1 - beta_1) * g
    np.testing.assert_allclose(np.asarray(v), 0.001 * 4.0, rtol=1e-6)  # (1 - beta_2) * g^2


def test_the_trainer_build_hook_exists_in_keras():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    assert hasattr(TensorFlowTrainer, "_maybe_symbolic_build"), (
        f"Keras {keras.__version__} has no TensorFlowTrainer._maybe_symbolic_build: "
        "keras_compat.PrebuiltUnderStrategy overrides nothing; check multi-worker training"
    )


def test_loading_a_saved_model_is_seen_inside_load_model_only(tmp_path):
    seen = []

    @keras.saving.register_keras_serializable(package="keras_lpips_test")
    class Probe(keras.layers.Layer):
        @classmethod
        def from_config(cls, config):
            seen.append(keras_compat.loading_a_saved_model())
            return super().from_config(config)

    model = keras.Sequential([keras.Input((2,)), Probe()])
    model.save(tmp_path / "probe.keras")
    assert keras_compat.loading_a_saved_model() is False
    keras.saving.load_model(tmp_path / "probe.keras")
    Probe.from_config(Probe().get_config())
    assert seen == [True, False], f"Keras {keras.__version__}: its saving library's object-sharing scope changed; update keras_compat.loading_a_saved_model"


def test_keras_saving_restores_a_compiled_loss_state_and_no_compiled_metric_state(tmp_path):
    """What `LPIPSLoss` and `MeanLPIPS` rely on (`keras_compat.loading_a_saved_model`): a .keras file
    holds a compiled loss's weights, restored over the loss that compiling the loaded model
    builds; it holds no compiled metric's."""
    import zipfile

    import h5py

    @keras.saving.register_keras_serializable(package="keras_lpips_test")
    class HoldingLoss(keras.losses.MeanSquaredError):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.held = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])

    @keras.saving.register_keras_serializable(package="keras_lpips_test")
    class HoldingMetric(keras.metrics.Mean):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.held = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    loss, metric = HoldingLoss(), HoldingMetric()
    model.compile(optimizer="sgd", loss=loss, metrics=[metric])
    kernel = np.arange(4, dtype=np.float32).reshape(2, 2)
    for holder in (loss, metric):
        holder.held.layers[0].kernel.assign(kernel)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive, archive.open("model.weights.h5") as file, h5py.File(file) as weights:
        saved = []
        weights.visit(saved.append)
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    changed = f"Keras {keras.__version__}: what its saving library keeps of a compiled model changed; update LPIPSLoss.from_config and MeanLPIPS"
    np.testing.assert_array_equal(np.asarray(loaded.loss.held.layers[0].kernel), kernel, err_msg=changed)
    assert "loss/held" in saved and not any("metric" in path for path in saved), changed


def test_the_private_tensorflow_and_keras_attributes_used_exist():
    import tensorflow as tf

    function = tf.function(lambda: 0)
    assert hasattr(function, "_omit_frequent_tracing_warning"), (
        f"TensorFlow {tf.__version__}: tf.function's _omit_frequent_tracing_warning is gone; update keras_compat.once_traced"
    )
    dropout = keras.layers.Dropout(0.5)
    assert isinstance(dropout.seed_generator, keras.random.SeedGenerator), (
        f"Keras {keras.__version__}: Dropout.seed_generator changed; update keras_compat.seed_per_replica"
    )
    keras_compat.seed_per_replica(dropout)
    assert (keras.ops.convert_to_numpy(dropout(np.ones((1, 100), np.float32), training=True)) == 0).any()  # still drops


def test_the_cache_of_traced_functions_keeps_no_metric_alive():
    """Every path that traces functions once per metric (embedding, pair matrices, evaluation,
    the frozen passes) leaves the metric free to be collected once its user lets go of it."""
    import gc
    import weakref

    from keras_lpips import LPIPS
    from keras_lpips.embedding import embed_images
    from keras_lpips.evaluation import distance_functions
    from keras_lpips.pairwise import distance_matrix

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", layers=2)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    embed_images(metric, images)
    for method in ("features", "pairs"):
        distance_matrix(metric, images, method=method)
    distance_functions(metric)[1](images, images)
    freed = weakref.ref(metric)
    del metric
    gc.collect()
    assert freed() is None, "a cached traced function holds the metric"
