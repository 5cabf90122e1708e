"""The 2AFC trainer: an `LPIPS` metric plus the ranking head, learning from human judgments."""

import keras
import tensorflow as tf
from keras import ops

from keras_lpips.errors import InputError
from keras_lpips import keras_compat
from keras_lpips.keras_compat import PrebuiltUnderStrategy
from keras_lpips.model import LPIPS
from keras_lpips.ranking import DistanceToLogit, TwoAFCScore, ranking_loss


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPSTrainer(PrebuiltUnderStrategy, keras.Model):
    """An `LPIPS` model plus the ranking head, trained on 2AFC batches, as the reference `lpips.Trainer`.

    Batches are dicts `{"ref", "p0", "p1": (N, H, W, 3) images in the metric's input_range,
    "judge": (N,) fraction of raters preferring p1}`, as `keras_lpips.data.twoafc_dataset`
    yields. Each step computes d0 = d(ref, p0) and d1 = d(ref, p1) with one backbone pass per
    image (`LPIPS.twoafc`), P(p1 preferred) = ranker(d0, d1), and the binary cross-entropy against
    the judgment (`ranking_loss`, averaged over the global batch). `call` returns
    `{"d0", "d1", "prob"}`; `fit` reports `loss` and `2afc`.

    Args:
        lpips: the `LPIPS` model whose linear weights (and backbone, if `train_backbone`) learn;
            its `dropout` acts before the linear heads in training (the reference's 0.5).
        ranker: a `DistanceToLogit` (default: a new one, seeded with the metric's seed).
        train_backbone: False freezes the backbone ("lin" mode).

    The linear weights keep their `NonNeg` constraint, which Keras applies after each optimiser
    step, as the reference's `clamp_weights`. Under a distribution strategy each replica draws
    its own dropout masks (`keras_compat.seed_per_replica`, which changes the metric's dropout
    layers for good: harmless on one device). Under a mixed-precision policy the
    backbone runs in the mixed dtype while normalisation, heads, distances, the ranker and the
    loss stay float32.

    Example:
    >>> trainer = LPIPSTrainer(LPIPS(net="alex", lin_weights=None, dropout=0.5))
    >>> trainer.compile(optimizer=reference_adam())
    >>> trainer.fit(keras_lpips.data.twoafc_dataset(records, input_range=(-1, 1)), epochs=1)
    """

    def __init__(self, lpips, ranker=None, train_backbone=False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # no autocast of images or judges at this level
        super().__init__(**kwargs)
        if isinstance(lpips, dict):
            lpips = keras.saving.deserialize_keras_object(lpips)
        if isinstance(ranker, dict):
            ranker = keras.saving.deserialize_keras_object(ranker)
        if not isinstance(lpips, LPIPS):
            raise InputError(f"lpips must be a keras_lpips.LPIPS model. Received: {type(lpips).__name__}")
        self.lpips = lpips
        self.ranker = ranker if ranker is not None else DistanceToLogit(seed=lpips.seed)
        if not self.ranker.built:
            self.ranker.build()
        self.train_backbone = bool(train_backbone)
        self.lpips.backbone.trainable = self.train_backbone
        for head in self.lpips.heads:
            if head.dropout_layer is not None:
                keras_compat.seed_per_replica(head.dropout_layer)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.score_tracker = TwoAFCScore(name="2afc")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.score_tracker]

    def distances(self, batch, training=None):
        """(d0, d1) of a batch: d(ref, p0) and d(ref, p1)."""
        return self.lpips.twoafc(batch["ref"], batch["p0"], batch["p1"], training=training)

    def call(self, inputs, training=None):
        d0, d1 = self.distances(inputs, training=training)
        return {"d0": d0, "d1": d1, "prob": self.ranker([d0, d1])}

    def _loss(self, judge, prob):
        """This replica's share of the mean loss over the global batch: sum / global count.

        Gradients are summed over replicas, so the result is the gradient of the global batch
        mean, also for a last batch split unevenly (or with an empty share) across replicas."""
        per_triplet = ranking_loss(judge, prob)
        count = ops.cast(ops.shape(per_triplet)[0], "float32")
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return ops.sum(per_triplet) / ops.maximum(count, 1.0), per_triplet

    def train_step(self, data):
        data = _batch(data)
        judge = ops.cast(data["judge"], "float32")
        with tf.GradientTape() as tape:
            out = self(data, training=True)
            loss, per_triplet = self._loss(judge, out["prob"])
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)  # then the NonNeg clamp
        return self._update_metrics(per_triplet, out, judge)

    def test_step(self, data):
        data = _batch(data)
        judge = ops.cast(data["judge"], "float32")
        out = self(data, training=False)
        return self._update_metrics(ranking_loss(judge, out["prob"]), out, judge)

    def _update_metrics(self, per_triplet, out, judge):
        self.loss_tracker.update_state(per_triplet)
        self.score_tracker.update_state(out["d0"], out["d1"], judge)
        logs = {"loss": self.loss_tracker.result(), "2afc": self.score_tracker.result()}
        if _several_workers(tf.distribute.get_strategy()):
            # Keras reduces each step's logs across workers with strategy.reduce("MEAN", v, axis=0),
            # which needs an axis: give them one. (Epoch logs come from the synced metrics.) With a
            # single worker (no TF_CONFIG) Keras does not reduce, and the logs must stay scalars.
            logs = {k: ops.reshape(v, (1,)) for k, v in logs.items()}
        return logs

    def get_config(self):
        return {
            **super().get_config(),
            "lpips": keras.saving.serialize_keras_object(self.lpips),
            "ranker": keras.saving.serialize_keras_object(self.ranker),
            "train_backbone": self.train_backbone,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _batch(data):
    """The batch dict, also where a dataset yields it in a 1-tuple."""
    return data[0] if isinstance(data, (tuple, list)) else data


def _several_workers(strategy):
    """True under a MultiWorkerMirroredStrategy whose cluster (TF_CONFIG) has more than one task."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) > 1
