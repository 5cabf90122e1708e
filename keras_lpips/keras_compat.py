"""The only place keras-lpips reaches into Keras (and TensorFlow) internals, each where no public
API does the job.

- `adam_moments`: torch's Adam update (`TorchAdam`) needs Adam's moment slots for a variable;
  Keras keeps them in `_momentums` / `_velocities`, indexed by `_get_variable_index`.
- `PrebuiltUnderStrategy`: under a `tf.distribute` strategy Keras' TensorFlow trainer builds a
  model from a data batch that it first all-reduces (`_maybe_symbolic_build`), which fails for
  dict batches under MultiWorkerMirroredStrategy; a model whose variables all exist from its
  constructor skips that and only builds its optimiser.
- `seed_per_replica`: under a `tf.distribute` strategy every replica reads the same mirrored
  state of a `Dropout`'s `seed_generator` and draws the same masks; its generator's class is
  swapped for one that adds the replica's index (its state variable, tracked by the layer and
  in checkpoints, unchanged).
- `once_traced`: TensorFlow's "frequent retracing" warning counts the traces of one code object
  across `tf.function`s; a function made once per metric turns it off with the private switch
  TensorFlow sets on a restored SavedModel's functions.
- `loading_a_saved_model`: whether `from_config` is running inside `keras.models.load_model`
  (whose file then supplies the weights): Keras says so only through the object-sharing scope
  its saving library holds while it reads or writes a `.keras` file. Used with what that library
  does with a compiled model: it writes and, after compiling, restores the state of its loss
  (`LPIPSLoss`'s network, so built from no source when loaded), not of its compiled metrics
  (`MeanLPIPS`'s, so rebuilt from its sources).

Beside them, `traced_per_metric` and `image_batch_spec`: the one cache of functions traced once
per metric (evaluation, the frozen passes, pair matrices), which keeps no metric alive; and
`eager_value`, a variable's value read while a function is traced.

`TESTED_KERAS` is the range of Keras minor series the test suite passed on; tests/test_keras_compat.py
fails, naming what changed, on a Keras where these internals are gone.
"""

import weakref

import keras
from keras import ops

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


class _PerReplicaSeedGenerator(keras.random.SeedGenerator):
    """A `SeedGenerator` whose seeds, under a distribution strategy of several replicas, add the
    replica's index: the replicas' shares of a batch get different dropout masks, as one
    device's masks differ along its batch. On one device, and on replica 0, the seeds are a
    plain `SeedGenerator`'s."""

    def next(self, ordered=True):
        import tensorflow as tf

        seed = super().next(ordered)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        replica = ops.cast(context.replica_id_in_sync_group, seed.dtype)
        return seed + ops.stack([replica, ops.zeros_like(replica)])


def seed_per_replica(dropout):
    """Makes the `keras.layers.Dropout` `dropout` draw its own masks on each replica of a
    strategy (its generator's class changed: its state variable stays the one the layer tracks)."""
    dropout.seed_generator.__class__ = _PerReplicaSeedGenerator


# What `traced_per_metric` made for each metric, {key: functions}.
_TRACED = weakref.WeakKeyDictionary()


def traced_per_metric(metric, key, make):
    """`make(metric_ref)` (functions of `once_traced`), made once per `metric` and `key` and kept
    for its next calls; `make` gets a weak reference to the metric (the cache keeps no metric alive)."""
    made = _TRACED.setdefault(metric, {})
    if key not in made:
        made[key] = make(weakref.ref(metric))
    return made[key]


def eager_value(variable):
    """A Keras variable's value as numpy, also while a TensorFlow function is traced (read outside
    the graph, as `tf.init_scope` lifts it): a check of the weights that `embed` makes."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.init_scope():
            return keras.ops.convert_to_numpy(variable.value)
    return keras.ops.convert_to_numpy(variable)


def image_batch_spec():
    """The `tf.TensorSpec` of a float32 (N, H, W, 3) image batch of any batch and image size: a
    function traced with it serves every batch and size with one trace."""
    import tensorflow as tf

    return tf.TensorSpec([None, None, None, 3], tf.float32)


def once_traced(function, input_signature=None):
    """`function` as a `tf.function` of `input_signature`, so traced once (without one: once per
    input shapes, with TensorFlow's `reduce_retracing`); made once per metric, each one's trace
    is expected, and TensorFlow's "frequent retracing" warning (which counts the traces of every
    metric's copy of `function` together: one code object) is off for it. Without AutoGraph:
    Keras ops need none, and AutoGraph's process-wide cache of converted methods would keep the
    metric alive."""
    import tensorflow as tf

    compiled = tf.function(function, input_signature=input_signature, reduce_retracing=input_signature is None, autograph=False)
    compiled._omit_frequent_tracing_warning = True
    return compiled
