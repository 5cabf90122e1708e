"""Lin mode's shortcut: a frozen backbone's work done once per triplet instead of every epoch.

With the backbone frozen, what it gives for a triplet never changes, so `fit` can compute it once
and train and validate on that (`FrozenBackbone`):

- cosine distance (only the ranking head learns): each triplet's (d0, d1);
- lpips, validation: per-channel spatial means of the squared feature differences
  (`LPIPS.channel_means`), which any linear weights turn into the distances
  (`LPIPS.distances_from_channel_means`);
- lpips, training: those squared differences themselves, what the linear heads and their
  dropout act on, when they fit in a quarter of the free memory (else: train on the images).

Same batches, order, dropout masks, checkpoints and history as training on the images, and the
same numbers up to float rounding. Under a mixed-precision policy the validation outputs come from
a float32 copy of the metric (`val_metric`): validation scores what the run saves.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_lpips import keras_compat
from keras_lpips.data.pipeline import naming_bad_images, twoafc_dataset
from keras_lpips.errors import InputError
from keras_lpips.memory import available_memory_bytes
from keras_lpips.training.trainer import LPIPSTrainer

KINDS = ("distances", "means", "maps")


@keras.saving.register_keras_serializable(package="keras_lpips")
class FrozenBackboneTrainer(LPIPSTrainer):
    """An `LPIPSTrainer` whose batches carry what the frozen backbone gave instead of images:
    `{"d0", "d1"}` (cosine), `{"m0", "m1"}` (validation) or `{"diff0", "diff1"}` (see the module)."""

    def distances(self, batch, training=None):
        metric = self.lpips
        if self.train_backbone:
            raise InputError("precomputed backbone outputs only stand in for a frozen backbone")
        if "d0" in batch:
            if metric.heads:
                raise InputError("precomputed distances d0/d1 only stand in for a metric without linear weights")
            return batch["d0"], batch["d1"]
        if "m0" in batch:
            if training and metric.dropout and metric.heads:
                raise InputError("per-channel means m0/m1 only stand in for the metric outside training")
            return metric.distances_from_channel_means(batch["m0"]), metric.distances_from_channel_means(batch["m1"])
        return tuple(metric.total(metric.weigh(batch[k], training)) for k in ("diff0", "diff1"))


def frozen_twoafc_arrays(metric, records, batch_size=50, load_size=64, kind="distances", progress=None):
    """What `metric`'s frozen backbone gives for each triplet of `records`, in one pass over the
    images (in the metric's input_range): `{"d0", "d1"}` (N,) for kind "distances", `{"m0", "m1"}`
    (N, channels of the kept layers) for "means", `{"diff0", "diff1"}` (a list of (N, h, w, C)
    arrays per kept layer) for "maps". See the module docstring. `progress(k)` is called after
    each batch of k triplets."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}. Received: kind={kind!r}")
    compute = _compiled_pass(metric, kind)
    data = twoafc_dataset(records, batch_size=batch_size, load_size=load_size, input_range=metric.input_range, shuffle=False)
    arrays, done = None, 0
    for batch in data:
        values = tf.nest.map_structure(lambda t: np.asarray(t, np.float32), compute(batch["ref"], batch["p0"], batch["p1"]))
        if arrays is None:  # filled in place: no second copy of a large set
            arrays = tf.nest.map_structure(lambda v: np.empty((len(records), *v.shape[1:]), np.float32), values)
        n = len(tf.nest.flatten(values)[0])
        for target, value in zip(tf.nest.flatten(arrays), tf.nest.flatten(values)):
            target[done : done + n] = value
        done += n
        if progress:
            progress(n)
    names = {"distances": ("d0", "d1"), "means": ("m0", "m1"), "maps": ("diff0", "diff1")}[kind]
    return {name: (list(value) if kind == "maps" else value) for name, value in zip(names, arrays)}


def _compiled_pass(metric, kind):
    """`frozen_twoafc_arrays`' pass of `kind` over a batch (ref, p0, p1), compiled once per metric
    (`keras_compat.traced_per_metric`: any batch and image size) and kept for its next calls."""

    def make(metric_ref):
        def compute(ref, p0, p1):
            return _frozen_outputs(metric_ref(), kind, ref, p0, p1)

        return keras_compat.once_traced(compute, [keras_compat.image_batch_spec()] * 3)

    return keras_compat.traced_per_metric(metric, ("frozen", kind), make)


def _frozen_outputs(metric, kind, ref, p0, p1):
    """One batch's outputs of `frozen_twoafc_arrays` (d0, d1; or the per-layer squared feature
    differences, or their spatial means)."""
    if kind == "distances":
        return metric.twoafc(ref, p0, p1, training=False)
    diffs = list(metric.twoafc_squared_differences(ref, p0, p1, training=False))
    if kind == "maps":
        return diffs
    return [metric.channel_means(per_layer) for per_layer in diffs]


def frozen_maps_bytes(metric, count, load_size=64):
    """Bytes of `frozen_twoafc_arrays(kind="maps")` for `count` triplets of load_size x load_size."""
    outputs = metric.backbone.compute_output_spec(keras.KerasTensor((1, int(load_size), int(load_size), 3)))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return int(count) * 2 * 4 * sum(int(np.prod(o.shape[1:])) for o in outputs)


class FrozenBackbone:
    """The frozen backbone's outputs for a run's train and val triplets, computed on first use:
    the train ones by `metric` (the trainer's, in the run's precision), the val ones by `val_metric`
    (None: `metric`; a float32 copy of it under a mixed policy: see the module docstring), each
    released once its split's outputs are (the final score reuses the val outputs, not the copy).
    `log` says what is computed; `bar`: with a progress bar (`keras.utils.Progbar`) while it is."""

    def __init__(self, metric, train_records, val_records, data_root, batch_size, load_size, log, val_metric=None, bar=False):
        self.metric, self.data_root, self.log, self.bar = metric, data_root, log, bar
        self.metrics = {"train": metric, "val": metric if val_metric is None else val_metric}
        self.batch_size, self.load_size = int(batch_size), int(load_size)
        self.records = {"train": train_records, "val": val_records}
        self.kinds = {"train": "maps", "val": "means"} if metric.heads else {"train": "distances", "val": "distances"}
        if self.kinds["train"] == "maps":
            needed, available = frozen_maps_bytes(metric, len(train_records), load_size), available_memory_bytes()
            if available is None or needed > available // 4:
                self.kinds["train"] = None
                log(f"frozen backbone: the training maps need {needed / 2**30:.1f} GiB; training on the images instead")
        self._arrays = {}

    @property
    def trains_on_images(self):
        return self.kinds["train"] is None

    def arrays(self, split):
        if split not in self._arrays:
            records = self.records[split]
            self.log(f"frozen backbone: computing the {split} triplets' {self.kinds[split]} once ({len(records)} triplets)")
            progress = keras.utils.Progbar(len(records), unit_name="triplet").add if self.bar else None
            with naming_bad_images(records, self.data_root):
                arrays = frozen_twoafc_arrays(
                    self.metrics[split], records, self.batch_size, self.load_size, self.kinds[split], progress
                )  # fmt: skip
            self._arrays[split] = {**arrays, "judge": np.array([r.judge for r in records], np.float32)}
            del self.metrics[split]  # computed once: val's float32 copy of the model is not needed again
        return self._arrays[split]

    def validation_data(self, drop_remainder):
        return _array_dataset(self.arrays("val"), self.batch_size, drop_remainder)

    def training_data(self, orders, drop_remainder):
        """Every remaining epoch's batches, epoch `i` in `orders[i]` (arrays of triplet indices)."""
        if self.kinds["train"] == "maps":
            return _maps_dataset(self.arrays("train"), self.batch_size, drop_remainder, orders)
        parts = [_array_dataset(self.arrays("train"), self.batch_size, drop_remainder, order) for order in orders]
        return concatenated(parts)

    def validation_distances(self, metric):
        """(d0, d1) of every validation triplet under `metric`'s (trained, float32) weights (the
        backbone's part: `val_metric`'s float32 outputs)."""
        arrays = self.arrays("val")
        if "m0" in arrays:
            return tuple(np.asarray(metric.distances_from_channel_means(ops.convert_to_tensor(arrays[k]))) for k in ("m0", "m1"))
        return arrays["d0"], arrays["d1"]


def concatenated(datasets):
    """One `tf.data.Dataset` yielding each of `datasets` in turn."""
    joined = datasets[0]
    for dataset in datasets[1:]:
        joined = joined.concatenate(dataset)
    return joined


def _maps_dataset(arrays, batch_size, drop_remainder, orders):
    """Batches of the "maps" arrays plus "judge", epoch after epoch, each epoch in its order,
    gathered from the arrays as they are needed."""

    def batches():
        for order in orders:
            stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
            for start in range(0, stop, batch_size):
                index = order[start : start + batch_size]
                yield {
                    "diff0": tuple(a[index] for a in arrays["diff0"]),
                    "diff1": tuple(a[index] for a in arrays["diff1"]),
                    "judge": arrays["judge"][index],
                }

    maps = tuple(tf.TensorSpec((None, *a.shape[1:]), tf.float32) for a in arrays["diff0"])
    signature = {"diff0": maps, "diff1": maps, "judge": tf.TensorSpec((None,), tf.float32)}
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


def _array_dataset(arrays, batch_size, drop_remainder, order=None):
    """Batches of in-memory arrays, in `order` if given."""
    if order is not None:
        arrays = {k: v[order] for k, v in arrays.items()}
    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=bool(drop_remainder))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
