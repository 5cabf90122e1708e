"""The only place keras-lpips reaches into Keras internals, each where no public API does the job.

- `adam_moments`: torch's Adam update (`TorchAdam`) needs Adam's moment slots for a variable;
  Keras keeps them in `_momentums` / `_velocities`, indexed by `_get_variable_index`.
- `PrebuiltUnderStrategy`: under a `tf.distribute` strategy Keras' TensorFlow trainer builds a
  model from a data batch that it first all-reduces (`_maybe_symbolic_build`), which fails for
  dict batches under MultiWorkerMirroredStrategy; a model whose variables all exist from its
  constructor skips that and only builds its optimiser.
- `loading_a_saved_model`: whether `from_config` is running inside `keras.models.load_model`
  (whose file then supplies the weights): Keras says so only through the object-sharing scope
  its saving library holds while it reads or writes a `.keras` file.

`TESTED_KERAS` is the range of Keras minor series the test suite passed on; tests/test_keras_compat.py
fails, naming what changed, on a Keras where these internals are gone.
"""

TESTED_KERAS = ("3.12", "3.15")


def adam_moments(optimizer, variable):
    """(first moment, second moment) slot variables of a built Keras `Adam` for `variable`."""
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


class PrebuiltUnderStrategy:
    """Mixin for a `keras.Model` built in its constructor: no data-driven build under a strategy."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def loading_a_saved_model():
    """Whether Keras is reading (or writing) a `.keras` file right now: `saving_lib` holds its
    object-sharing scope then, and only then."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("shared_objects/id_to_obj_map") is not None
