"""Learning LPIPS from human 2AFC judgments, as the reference `lpips.Trainer` / `train.py` does,
with Keras `fit`, `tf.distribute` and mixed precision; and scoring metrics on BAPPS.

    from keras_lpips.training import fit_run, evaluate_run
    summary = fit_run("dataset", "runs/alex-lin", backbone="alex", mode="lin")
    results = evaluate_run("dataset", model="runs/alex-lin")

`LPIPSTrainer` holds an `LPIPS` model and the ranking head (`DistanceToLogit`). Each step
computes the features of ref, p0 and p1 in one backbone pass over the concatenated batch,
d0 = d(ref, p0) and d1 = d(ref, p1), P(p1 preferred) = head(d0, d1), and minimises the
binary cross-entropy against the raters' judgment. Modes, as the reference's flags:

- "lin": the backbone is frozen; the linear weights and the head learn (`--train_trunk` off);
- "tune": the pretrained backbone learns too (`--train_trunk`);
- "scratch": the backbone starts from a seeded random init and learns (`--from_scratch --train_trunk`).

With distance="cosine" there are no linear weights: only the head learns (mode "lin" only).
Training needs the TensorFlow backend (it uses `tf.GradientTape`, `tf.data`, `tf.distribute`).
"""

import csv
import datetime
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_lpips.backbones import get_backbone
from keras_lpips.errors import InputError, UnsafeFileError, WeightsError
from keras_lpips.lpips import LPIPS, _check_choices
from keras_lpips.memory import available_memory_bytes
from keras_lpips.ranking import DistanceToLogit, TwoAFCScore, jnd_map, ranking_loss, twoafc_scores

MODES = ("lin", "tune", "scratch")
PRECISIONS = ("auto", "off", "bf16", "fp16")
STRATEGIES = ("auto", "one-device", "mirrored", "multiworker", "tpu")
POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
INPUT_RANGE = (0.0, 1.0)  # what fit feeds and what model.keras expects (the CLI's range)
CHECKPOINT_DIR = "checkpoint"
RUN_FILES = (
    "run.json", "history.csv", "loss.png", "accuracy.png", "model.keras", "trainer.keras", "lin_weights.npz",
    "val_distances.npz",
)  # fmt: skip


# --- the model ----------------------------------------------------------------------------------


def twoafc_distances(metric, ref, p0, p1, training=None):
    """d(ref, p0) and d(ref, p1), each `(N,)`, with one backbone pass over [ref; p0; p1].

    Equal to `metric([ref, p0])`, `metric([ref, p1])` (the reference computes ref's features
    twice; here they are computed once: 3 images' worth of backbone work per triplet, not 4).
    With `training=True` the linear heads' dropout draws a separate mask for each distance, as
    the reference's two forward passes do.
    """
    n = ops.shape(ref)[0]
    features = metric.features(ops.concatenate([ref, p0, p1], axis=0), training=training)
    f_ref = [f[:n] for f in features]
    d0 = _sum_of_means(metric.compare(f_ref, [f[n : 2 * n] for f in features], training=training))
    d1 = _sum_of_means(metric.compare(f_ref, [f[2 * n :] for f in features], training=training))
    return d0, d1


def _sum_of_means(maps):
    """sum_l mean_hw(map_l), layer by layer in order, as the reference adds them."""
    total = ops.mean(maps[0], axis=(1, 2, 3))
    for m in maps[1:]:
        total = total + ops.mean(m, axis=(1, 2, 3))
    return total


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPSTrainer(keras.Model):
    """An `LPIPS` model plus the ranking head, trained on 2AFC batches.

    Batches are dicts `{"ref", "p0", "p1": (N, H, W, 3) images in the metric's input_range,
    "judge": (N,) fraction of raters preferring p1}`, as `keras_lpips.data.twoafc_dataset`
    yields. `call` returns `{"d0", "d1", "prob"}`; `fit` minimises the reference's loss
    (`ranking_loss`, averaged over the global batch) and reports `loss` and `2afc`.

    Args:
        lpips: the `LPIPS` model whose linear weights (and backbone, if `train_backbone`) learn.
        ranker: a `DistanceToLogit` (default: a new one, seeded with the metric's seed).
        train_backbone: False freezes the backbone ("lin" mode).

    The linear weights keep their `NonNeg` constraint, which Keras applies after each optimiser
    step, as the reference's `clamp_weights`. The trainer computes in float32 at its own level;
    under a mixed-precision policy the backbone runs in the mixed dtype while normalisation,
    linear heads, distances, the head and the loss stay float32.

    Example:
    >>> trainer = LPIPSTrainer(LPIPS(net="alex", lin_weights=None))
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5, epsilon=1e-8))
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
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.score_tracker = TwoAFCScore(name="2afc")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.score_tracker]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TF trainer builds a model created under a strategy from a data batch that it
        # first all-reduces (strategy.reduce("MEAN", batch)), which fails for dict batches under
        # MultiWorkerMirroredStrategy and costs a batch of traffic. Every variable of this model
        # exists from its constructor; only the optimiser may still need building.
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        if "d0" in inputs:  # distances a frozen cosine metric gave once (`frozen_twoafc_arrays`)
            if self.lpips.heads or self.train_backbone:
                raise InputError("precomputed distances d0/d1 only stand in for a frozen metric without linear weights")
            d0, d1 = inputs["d0"], inputs["d1"]
        elif "m0" in inputs:  # per-channel means a frozen backbone gave once: validation only
            if self.train_backbone or (training and self.lpips.dropout and self.lpips.heads):
                raise InputError("per-channel means m0/m1 only stand in for a frozen metric outside training")
            d0, d1 = self.distances_from_means(inputs["m0"]), self.distances_from_means(inputs["m1"])
        elif "diff0" in inputs:  # squared feature differences a frozen backbone gave once
            if self.train_backbone:
                raise InputError("precomputed feature differences diff0/diff1 only stand in for a frozen backbone")
            d0, d1 = self._weigh(inputs["diff0"], training), self._weigh(inputs["diff1"], training)
        else:
            d0, d1 = twoafc_distances(self.lpips, inputs["ref"], inputs["p0"], inputs["p1"], training=training)
        return {"d0": d0, "d1": d1, "prob": self.ranker([d0, d1])}

    def _weigh(self, diffs, training):
        """`LPIPS.compare`'s second half: per-layer squared differences -> distances (N,)."""
        if self.lpips.heads:
            return _sum_of_means([head(x, training=training) for head, x in zip(self.lpips.heads, diffs)])
        return _sum_of_means([ops.sum(x, -1, keepdims=True) for x in diffs])

    def distances_from_means(self, means):
        """Distances `(N,)` from `(N, channels of the kept layers)` per-channel spatial means of the
        squared feature differences: each layer's means weighted by its linear head (summed for
        the cosine distance), added layer by layer. Equal, up to rounding, to the distances of
        the images themselves without dropout: the heads are linear."""
        total, start = None, 0
        for k, channels in enumerate(self.lpips.spec.channels[: self.lpips.layers_kept]):
            part = means[:, start : start + channels]
            start += channels
            layer = ops.matmul(part, self.lpips.heads[k].kernel)[:, 0] if self.lpips.heads else ops.sum(part, axis=-1)
            total = layer if total is None else total + layer
        return total

    @staticmethod
    def _batch(data):
        return data[0] if isinstance(data, (tuple, list)) else data

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
        batch = self._batch(data)
        judge = ops.cast(batch["judge"], "float32")
        with tf.GradientTape() as tape:
            out = self(batch, training=True)
            loss, per_triplet = self._loss(judge, out["prob"])
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)  # then the NonNeg constraints (clamp >= 0)
        return self._update_metrics(per_triplet, out, judge)

    def test_step(self, data):
        batch = self._batch(data)
        judge = ops.cast(batch["judge"], "float32")
        out = self(batch, training=False)
        return self._update_metrics(ranking_loss(judge, out["prob"]), out, judge)

    def _update_metrics(self, per_triplet, out, judge):
        self.loss_tracker.update_state(per_triplet)
        self.score_tracker.update_state(out["d0"], out["d1"], judge)
        logs = {"loss": self.loss_tracker.result(), "2afc": self.score_tracker.result()}
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode():
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


@keras.saving.register_keras_serializable(package="keras_lpips")
class EpochLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The reference `train.py` schedule, per optimiser step: epoch e (from 0) runs at
    `lr * (1 - max(0, e - epochs) / decay_epochs)`: `epochs + 1` epochs at the full rate, then
    linearly lower, the last of the `epochs + decay_epochs` epochs at `lr / decay_epochs`
    (the reference lowers the rate at the end of every epoch after the first `epochs`)."""

    def __init__(self, initial_learning_rate, steps_per_epoch, epochs, decay_epochs):
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.decay_epochs = int(decay_epochs)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / float(self.steps_per_epoch))
        if self.decay_epochs <= 0:
            return ops.cast(self.initial_learning_rate, "float32") + 0.0 * epoch
        fraction = ops.maximum(epoch - float(self.epochs), 0.0) / float(self.decay_epochs)
        return self.initial_learning_rate * (1.0 - ops.minimum(fraction, 1.0))

    def rate_at_epoch(self, epoch):
        """The rate epoch `epoch` (from 0) runs at, as a Python float."""
        if self.decay_epochs <= 0:
            return self.initial_learning_rate
        return self.initial_learning_rate * (1.0 - min(max(epoch - self.epochs, 0) / self.decay_epochs, 1.0))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "decay_epochs": self.decay_epochs,
        }


@keras.saving.register_keras_serializable(package="keras_lpips")
class TorchAdam(keras.optimizers.Adam):
    """Adam with torch.optim.Adam's update, which the reference trainer uses.

    Keras adds epsilon to sqrt(v) before the bias correction, torch after it:
    `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`. The two differ where
    gradients are tiny (below ~1e-6, e.g. rarely active channels), so matching the
    reference's steps there needs torch's form. Arguments are Keras Adam's
    (amsgrad is not supported); epsilon defaults to torch's 1e-8.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, amsgrad=False, name="torch_adam", **kwargs):
        if amsgrad:
            raise ValueError("TorchAdam does not support amsgrad")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign(v, ops.add(ops.multiply(v, beta_2), ops.multiply(ops.square(gradient), 1 - beta_2)))
        step_size = lr / (1 - ops.power(beta_1, step))
        denom = ops.add(ops.sqrt(v) / ops.sqrt(1 - ops.power(beta_2, step)), ops.cast(self.epsilon, dtype))
        self.assign_sub(variable, ops.multiply(step_size, ops.divide(m, denom)))


def reference_adam(learning_rate=1e-4, beta_1=0.5):
    """The reference trainer's optimiser: torch's Adam, betas (0.5, 0.999), epsilon 1e-8 (`TorchAdam`)."""
    return TorchAdam(learning_rate=learning_rate, beta_1=beta_1, beta_2=0.999, epsilon=1e-8)


def reference_lin_init(metric, seed):
    """Sets the linear weights as the reference trainer starts them (`LPIPS(pretrained=False)`):
    torch's default 1x1 conv init, uniform in +-1/sqrt(channels), from `seed`. The negative
    ones are clamped to 0 by the first step, as in the reference."""
    rng = np.random.default_rng([int(seed), 7])
    for head in metric.heads:
        bound = 1.0 / math.sqrt(head.channels)
        head.kernel.assign(rng.uniform(-bound, bound, (head.channels, 1)).astype(np.float32))


# --- devices: precision and distribution ----------------------------------------------------------


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True where the CPU flags include avx512_bf16 or amx_bf16 (Linux; False elsewhere)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_precision(choice, strategy=None):
    """The Keras dtype policy for `--mixed-precision`: "off" float32, "bf16" mixed_bfloat16,
    "fp16" mixed_float16; "auto": fp16 with a GPU, bf16 on a TPU or a CPU with native bf16
    (avx512_bf16 / amx_bf16), else float32."""
    if choice not in PRECISIONS:
        raise InputError(f"mixed_precision must be one of {', '.join(PRECISIONS)}. Received: {choice!r}")
    if choice != "auto":
        return POLICIES[choice]
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_native_bf16() else "float32"


def _tpu_present():
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0"))


def make_strategy(choice="auto"):
    """The `tf.distribute` strategy for `--strategy`; returns (strategy, name).

    "auto": a TPU if one is configured (TPU_NAME / COLAB_TPU_ADDR / a TPU VM's /dev/accel0),
    else MultiWorkerMirrored if TF_CONFIG is set (it also uses every local GPU), else Mirrored
    over the GPUs if there are several, else TensorFlow's default strategy. "mirrored" without
    GPUs mirrors over the logical CPU devices. MultiWorkerMirrored must be created before
    TensorFlow runs any op, so call this first.
    """
    if choice not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: {choice!r}")
    if choice == "auto":
        if _tpu_present():
            choice = "tpu"
        elif os.environ.get("TF_CONFIG"):
            choice = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            return tf.distribute.get_strategy(), "default"
    if choice == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", "local"))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            reason = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0].rstrip(".")
            raise InputError(f"--strategy tpu: no TPU could be reached ({reason})") from None
        return tf.distribute.TPUStrategy(resolver), "tpu"
    if choice == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), "multiworker"
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if choice == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0"), "one-device"
    if gpus:
        return tf.distribute.MirroredStrategy(gpus), "mirrored"
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()), "mirrored"


def _worker_role(strategy_name):
    """(is_chief, worker index) under MultiWorkerMirrored's TF_CONFIG; (True, 0) otherwise."""
    if strategy_name != "multiworker" or not os.environ.get("TF_CONFIG"):
        return True, 0
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return kind == "chief", index
    return kind == "worker" and index == 0, index


# --- checkpoints, history, plots ---------------------------------------------------------------


def _state_variables(trainer):
    """Everything a resumed run needs: the model's variables (weights, dropout seed states) and
    the optimiser's (step count, moments; loss scale under fp16). Not the metrics' accumulators."""
    return list(trainer.variables) + list(trainer.optimizer.variables)


def _write_atomic(path, write):
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(trainer, directory, epoch, record):
    """Writes `epoch-NNNN.npz` (all state variables) then `latest.json` (`record` plus the file
    name), each atomically, then deletes older states: a kill at any point leaves the previous
    complete checkpoint or the new one."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    variables = _state_variables(trainer)
    name = f"epoch-{epoch:04d}.npz"

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **{f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
            f.flush()
            os.fsync(f.fileno())

    _write_atomic(directory / name, write_npz)
    _write_atomic(directory / "latest.json", lambda tmp: tmp.write_text(json.dumps({**record, "epoch": epoch, "file": name})))
    for old in directory.glob("epoch-*.npz"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(trainer, directory):
    """Restores the state `save_checkpoint` wrote; returns its record, or None when there is none."""
    latest = pathlib.Path(directory) / "latest.json"
    if not latest.is_file():
        return None
    record = json.loads(latest.read_text())
    variables = _state_variables(trainer)
    with np.load(latest.parent / record["file"]) as data:
        if len(data.files) != len(variables):
            raise InputError(f"{latest.parent} holds {len(data.files)} state arrays; this configuration has {len(variables)}")
        for i, variable in enumerate(variables):
            value = data[f"v{i}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise InputError(f"{latest.parent}: state {i} ({variable.path}) has shape {value.shape}, expected {tuple(variable.shape)}")
            variable.assign(value)
    return record


HISTORY_FIELDS = ("epoch", "lr", "loss", "2afc", "val_loss", "val_2afc", "train_seconds", "triplets_per_second")


def write_history(rows, path):
    """history.csv: one row per finished epoch (epoch counted from 1)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_history(rows, out_dir, initial=None):
    """loss.png and accuracy.png: train and val curves per epoch (epoch 0: the untrained model's val)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = pathlib.Path(out_dir)
    for key, label, filename in (("loss", "BCE loss", "loss.png"), ("2afc", "2AFC score", "accuracy.png")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r[key] for r in rows], "o-", label="train")
        val_epochs, val = list(epochs), [r.get(f"val_{key}") for r in rows]
        if initial and initial.get(f"val_{key}") is not None:
            val_epochs, val = [0] + val_epochs, [initial[f"val_{key}"]] + val
        ax.plot(val_epochs, val, "s-", label="val")
        ax.set_xlabel("epoch (0: untrained)" if initial else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / filename)
        plt.close(fig)


class _EpochRecorder(keras.callbacks.Callback):
    """Times the training part of each epoch; at its end (on the chief) writes the checkpoint,
    history.csv, and the record that `--resume` reads back."""

    def __init__(self, out_dir, rows, initial, schedule, n_train, write):
        super().__init__()
        self.out_dir, self.rows, self.initial = pathlib.Path(out_dir), rows, initial
        self.schedule, self.n_train, self.write = schedule, n_train, write
        self._start = self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        row = {"epoch": epoch + 1, "lr": self.schedule.rate_at_epoch(epoch)}
        row.update({k: float(v) for k, v in (logs or {}).items() if k in HISTORY_FIELDS})
        row["train_seconds"] = round(seconds, 3)
        row["triplets_per_second"] = round(self.n_train / seconds, 1)
        self.rows.append(row)
        if self.write:
            save_checkpoint(self.model, self.out_dir / CHECKPOINT_DIR, epoch + 1, {"history": self.rows, "initial": self.initial})
            write_history(self.rows, self.out_dir / "history.csv")


# --- fit ----------------------------------------------------------------------------------------


def _epoch_order(count, seed, epoch):
    """Epoch `epoch`'s order of `count` training triplets: a permutation drawn from (seed, epoch)
    alone, so a resumed run sees the same order as an uninterrupted one."""
    return np.random.default_rng([int(seed), 1, int(epoch)]).permutation(count)


def _maps_dataset(arrays, batch_size, drop_remainder, orders):
    """Batches of `frozen_twoafc_arrays(kind="maps")` plus "judge", epoch after epoch, each epoch
    in its order (a list of index arrays), gathered from the arrays as they are needed."""
    batch_size = int(batch_size)

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
    """Batches of in-memory arrays (`frozen_twoafc_arrays` plus "judge"), in `order` if given."""
    if order is not None:
        arrays = {k: v[order] for k, v in arrays.items()}
    dataset = tf.data.Dataset.from_tensor_slices(arrays).batch(int(batch_size), drop_remainder=bool(drop_remainder))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _run_config(**config):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


def _comparable_config(config):
    """A run configuration as --resume compares it: without the per-invocation options, and
    with the backbone by its canonical name ("alexnet" and "alex" are one net)."""
    from keras_lpips.backbones import get_backbone

    comparable = {k: v for k, v in config.items() if k not in ("resume", "progress")}
    if "backbone" in comparable:
        try:
            comparable["backbone"] = get_backbone(comparable["backbone"]).name
        except InputError:
            pass  # an unknown name stays as written, and so compares as different
    return comparable


def _prepare_out_dir(out_dir, resume, config, is_chief):
    """Creates the run folder; refuses a non-empty one without `resume`, and a resumed one whose
    configuration differs. Returns the previous run.json (dict) or None."""
    out_dir = pathlib.Path(out_dir)
    previous = None
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    if is_chief and out_dir.is_dir() and any(out_dir.iterdir()):
        if not resume:
            raise InputError(f"run directory {out_dir} is not empty: pass --resume to continue that run, or choose a new --out")
        run_json = out_dir / "run.json"
        if run_json.is_file():
            previous = json.loads(run_json.read_text())
            old, new = _comparable_config(previous.get("config", {})), _comparable_config(config)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if changed:
                details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
                raise InputError(f"--resume: the run in {out_dir} was started with other settings ({details})")
    if is_chief:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"Cannot create run directory {out_dir}: {error.strerror or error}") from None
    return previous


def _trainer_parts(backbone, distance, layers, mode, backbone_weights, lin_init, seed, dropout, input_range=INPUT_RANGE):
    weights = None if mode == "scratch" or backbone_weights in (None, "random") else backbone_weights
    metric = LPIPS(
        net=backbone, version="0.1", distance=distance, layers=layers, backbone_weights=weights,
        lin_weights=None, input_range=input_range, seed=seed, dropout=dropout,
    )  # fmt: skip
    if lin_init == "reference":
        reference_lin_init(metric, seed)
    return metric, DistanceToLogit(seed=seed)


def fit_run(
    data_root,
    out_dir,
    backbone="alex",
    distance="lpips",
    layers=None,
    mode="lin",
    backbone_weights=None,
    subsets=None,
    val_subsets=None,
    epochs=5,
    decay_epochs=5,
    batch_size=50,
    lr=1e-4,
    beta_1=0.5,
    load_size=64,
    lin_init="reference",
    dropout=0.5,
    mixed_precision="auto",
    strategy="auto",
    resume=False,
    seed=0,
    deterministic=False,
    progress=True,
    cache=False,
    precompute_frozen=True,
    callbacks=(),
):
    """Trains LPIPS on the 2AFC judgments of a BAPPS-layout folder; returns the run summary.

    Args:
        data_root: the BAPPS folder (holding `2afc/train`, `2afc/val`).
        out_dir: the run folder (new or empty, or an earlier run's with `resume=True`).
        backbone: "alex", "vgg", "squeeze" (or "alexnet", "vgg16", "squeezenet").
        distance: "lpips" (linear weights and head learn) or "cosine" (only the head learns).
        layers: keep the first N tapped layers (None: all).
        mode: "lin", "tune" or "scratch" (see the module docstring).
        backbone_weights: "imagenet", "random" or a torchvision `.pth`/`.npz`; None: "imagenet",
            or "random" in "scratch" mode (which refuses anything else).
        subsets / val_subsets: 2AFC subsets to train / validate on (None: every one present;
            BAPPS trains on traditional, cnn and mix as the reference does).
        epochs, decay_epochs: `epochs` at `lr`, then `decay_epochs` more with the rate falling
            linearly (`EpochLinearDecay`, the reference's schedule); `epochs + decay_epochs` in all.
        batch_size: the global batch (split across replicas under a distribution strategy).
        lr, beta_1: Adam's (the reference's 1e-4 and 0.5; beta_2 0.999, epsilon 1e-8).
        load_size: images are resized to load_size x load_size (BAPPS patches are 64 x 64).
        lin_init: "reference" (torch's default conv init, seeded, as the reference trainer) or
            "ones" (start from the unweighted cosine distance).
        dropout: dropout rate before the linear layers while training (the reference's 0.5; 0: none).
        mixed_precision: "auto", "off", "bf16" or "fp16" (`resolve_precision`).
        strategy: "auto", "one-device", "mirrored", "multiworker" or "tpu" (`make_strategy`).
        resume: continue the run in `out_dir` from its last finished epoch.
        seed: seeds the initialisation, the epoch orders and dropout.
        deterministic: bit-reproducible runs (`tf.config.experimental.enable_op_determinism()`,
            deterministic tf.data); slower.
        progress: Keras progress output.
        cache: passed to `twoafc_dataset` for the validation set (decoded images kept in memory).
        precompute_frozen: in "lin" mode on one device (the default or one-device strategy), run
            the frozen backbone once over each triplet instead of every epoch
            (`frozen_twoafc_arrays`): with distance="cosine" train and validate on each triplet's
            (d0, d1) (only the ranking head learns); with "lpips" validate on per-channel means of
            the squared feature differences, and train on those squared differences themselves
            (the linear heads and their dropout act on them as on the images' own) when they take
            at most a quarter of the available memory (`frozen_maps_bytes`). Same batches, order,
            dropout masks, checkpoints and history, and the same numbers up to float rounding;
            triplets_per_second then counts steps without the backbone. False: every step and
            validation runs the backbone on the images.
        callbacks: extra Keras callbacks.

    The run folder gets, after every epoch, `checkpoint/` (all weights and optimiser state: a run
    killed at any moment resumes losing at most the epoch in progress) and `history.csv`; TensorBoard
    logs in `logs/`; at the end `model.keras` (the `LPIPS` metric, float32, for [0, 1] images:
    `keras-lpips score --model`), `trainer.keras` (the metric plus its ranking head),
    `lin_weights.npz` (`lin0`.. float32 `(C,)`, for `LPIPS(lin_weights=...)`),
    `val_distances.npz` (the final model's `d0`, `d1` for every validation triplet, in the order
    `list_twoafc` gives them: `evaluate_run(distances=...)` takes them), `loss.png`,
    `accuracy.png` and `run.json` (configuration, final per-subset val 2AFC, the untrained
    model's, timings). Under MultiWorkerMirrored only the chief writes.
    """
    from keras_lpips.data.bapps import list_twoafc
    from keras_lpips.data.pipeline import naming_bad_images, twoafc_dataset

    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}. Received: {mode!r}")
    if distance == "cosine" and mode != "lin":
        raise InputError("distance 'cosine' has no linear weights: only the ranking head learns, so mode must be 'lin'")
    if mode == "scratch" and backbone_weights not in (None, "random"):
        raise InputError(f"mode 'scratch' trains the backbone from a random init; drop backbone_weights={backbone_weights!r}")
    if lin_init not in ("reference", "ones"):
        raise InputError(f"lin_init must be 'reference' or 'ones'. Received: {lin_init!r}")
    for name, value in (("epochs", epochs), ("decay_epochs", decay_epochs)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise InputError(f"{name} must be a non-negative integer. Received: {value!r}")
    if epochs + decay_epochs < 1:
        raise InputError("nothing to train: epochs + decay_epochs must be at least 1")
    if not lr > 0:
        raise InputError(f"lr must be positive. Received: {lr!r}")
    backbone_weights = backbone_weights or ("random" if mode == "scratch" else "imagenet")
    spec = get_backbone(backbone)
    kept = _check_choices(spec, "0.1", distance, layers, INPUT_RANGE)
    if spec.min_input_size[kept - 1] > load_size:
        raise InputError(
            f"load_size {load_size} is too small for {spec.name} with {kept} layers (needs >= {spec.min_input_size[kept - 1]})"
        )
    if isinstance(subsets, str):
        subsets = [subsets]
    if isinstance(val_subsets, str):
        val_subsets = [val_subsets]

    strategy_obj, strategy_name = make_strategy(strategy)  # first: MultiWorkerMirrored needs a fresh runtime
    is_chief, worker = _worker_role(strategy_name)
    train_records = list_twoafc(data_root, "train", subsets)
    val_records = list_twoafc(data_root, "val", val_subsets)
    policy = resolve_precision(mixed_precision, strategy_obj)
    config = _run_config(
        data_root=str(pathlib.Path(data_root).resolve()), backbone=backbone, distance=distance, layers=layers,
        mode=mode, backbone_weights=str(backbone_weights), subsets=sorted({r.subset for r in train_records}),
        val_subsets=sorted({r.subset for r in val_records}), epochs=int(epochs), decay_epochs=int(decay_epochs),
        batch_size=int(batch_size), lr=float(lr), beta_1=float(beta_1), load_size=int(load_size), lin_init=lin_init,
        dropout=float(dropout), mixed_precision=mixed_precision, policy=policy, strategy=strategy, seed=int(seed),
        deterministic=bool(deterministic), resume=bool(resume), progress=bool(progress),
    )  # fmt: skip
    out_dir = pathlib.Path(out_dir)
    previous = _prepare_out_dir(out_dir, resume, config, is_chief)
    # Non-chief workers of a multi-worker run write their (discarded) files to a scratch folder.
    write_dir = out_dir if is_chief else pathlib.Path(tempfile.mkdtemp(prefix=f"keras-lpips-worker{worker}-"))

    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    total_epochs = int(epochs) + int(decay_epochs)
    drop_remainder = strategy_name == "tpu"  # TPUs need fixed shapes
    steps_per_epoch = (len(train_records) // int(batch_size)) if drop_remainder else math.ceil(len(train_records) / int(batch_size))
    if steps_per_epoch < 1:
        raise InputError(f"{len(train_records)} training triplets make no full batch of {batch_size}")
    schedule = EpochLinearDecay(lr, steps_per_epoch, epochs, decay_epochs)

    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with strategy_obj.scope():
            metric, ranker = _trainer_parts(backbone, distance, layers, mode, backbone_weights, lin_init, seed, dropout)
            trainer = LPIPSTrainer(metric, ranker, train_backbone=mode != "lin")
            optimizer = reference_adam(schedule, beta_1)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            trainer.compile(optimizer=optimizer)
            optimizer.build(trainer.trainable_variables)
    finally:
        keras.config.set_dtype_policy(saved_policy)

    record = load_checkpoint(trainer, out_dir / CHECKPOINT_DIR) if resume else None
    initial_epoch = record["epoch"] if record else 0
    rows = list(record["history"]) if record else []
    initial = (record or {}).get("initial") or (previous or {}).get("initial")

    def dataset(records, train):
        return twoafc_dataset(
            records, batch_size=int(batch_size), load_size=int(load_size), input_range=INPUT_RANGE, shuffle=False,
            seed=int(seed), cache=False if train else cache, deterministic=bool(deterministic),
            drop_remainder=drop_remainder,
        )  # fmt: skip

    # Lin mode on one device: the frozen backbone's work is done once (see precompute_frozen).
    frozen = {}  # split -> arrays, computed on first use
    use_frozen = bool(precompute_frozen) and mode == "lin" and strategy_name in ("default", "one-device")
    kinds = {"train": "distances", "val": "distances"} if distance == "cosine" else {"train": "maps", "val": "means"}
    if use_frozen and kinds["train"] == "maps":
        needed, available = frozen_maps_bytes(trainer.lpips, len(train_records), load_size), available_memory_bytes()
        if available is None or needed > available // 4:
            kinds["train"] = None  # train on the images: the maps would take over a quarter of the free memory
            if progress:
                print(f"frozen backbone: the training maps need {needed / 2**30:.1f} GiB; training on the images instead")

    def frozen_arrays(split):
        if split not in frozen:
            records = train_records if split == "train" else val_records
            if progress:
                print(f"frozen backbone: computing the {split} triplets' {kinds[split]} once ({len(records)} triplets)")
            with naming_bad_images(records, data_root):
                arrays = frozen_twoafc_arrays(
                    trainer.lpips, records, batch_size=int(batch_size), load_size=int(load_size), kind=kinds[split]
                )  # fmt: skip
            frozen[split] = {**arrays, "judge": np.array([r.judge for r in records], np.float32)}
        return frozen[split]

    def validation_data():
        if use_frozen:
            return _array_dataset(frozen_arrays("val"), batch_size, drop_remainder)
        return dataset(val_records, train=False)

    val_data = validation_data() if initial is None or initial_epoch < total_epochs else None
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    started = time.time()
    if initial is None:
        with naming_bad_images(val_records, data_root):
            scores = trainer.evaluate(val_data, verbose=0, return_dict=True)
        initial = {"val_loss": float(scores["loss"]), "val_2afc": float(scores["2afc"])}
        if progress:
            print(f"untrained: val_2afc {initial['val_2afc']:.4f}, val_loss {initial['val_loss']:.4f}")
    if is_chief:
        run = {"config": config, "initial": initial, "started": datetime.datetime.now().isoformat(timespec="seconds")}
        (out_dir / "run.json").write_text(json.dumps({**(previous or {}), **run}, indent=2) + "\n")

    if initial_epoch < total_epochs:
        train_data = None
        orders = [_epoch_order(len(train_records), seed, epoch) for epoch in range(initial_epoch, total_epochs)]
        if use_frozen and kinds["train"] == "maps":
            train_data = _maps_dataset(frozen_arrays("train"), batch_size, drop_remainder, orders)
        for order in orders if train_data is None else ():
            if use_frozen and kinds["train"] == "distances":
                part = _array_dataset(frozen_arrays("train"), batch_size, drop_remainder, order)
            else:
                part = dataset([train_records[i] for i in order], train=True)
            train_data = part if train_data is None else train_data.concatenate(part)
        recorder = _EpochRecorder(write_dir, rows, initial, schedule, len(train_records), is_chief)
        extra = [keras.callbacks.TensorBoard(log_dir=str(write_dir / "logs"), write_graph=False)] if is_chief and _has_tensorboard() else []
        with naming_bad_images(train_records + val_records, data_root):
            trainer.fit(
                train_data, epochs=total_epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                validation_data=val_data, callbacks=[recorder, *extra, *callbacks], verbose=verbose, shuffle=False,
            )  # fmt: skip
    elif progress:
        print(f"{out_dir}: all {total_epochs} epochs already done")

    if not is_chief:
        shutil.rmtree(write_dir, ignore_errors=True)
        return {"config": config, "history": rows, "initial": initial, "chief": False}
    metric32, _ = export_run(trainer, out_dir)
    if "val" in frozen and policy == "float32":  # the exported metric has the trained weights, unrounded
        arrays = frozen["val"]
        if "m0" in arrays:
            d0, d1 = (np.asarray(trainer.distances_from_means(ops.convert_to_tensor(arrays[k]))) for k in ("m0", "m1"))
        else:
            d0, d1 = arrays["d0"], arrays["d1"]
    else:
        with naming_bad_images(val_records, data_root):
            arrays = frozen_twoafc_arrays(metric32, val_records, batch_size=int(batch_size), load_size=int(load_size))
        d0, d1 = arrays["d0"], arrays["d1"]
    judge = np.array([r.judge for r in val_records], np.float32)
    final = _scores_by_subset(twoafc_scores(d0, d1, judge), val_records)
    _write_atomic(out_dir / "val_distances.npz", lambda tmp: _savez_to(tmp, {"d0": d0, "d1": d1}))
    steady = [r["triplets_per_second"] for r in rows[1:]] or [r["triplets_per_second"] for r in rows]
    summary = {
        "config": config,
        "strategy": strategy_name,
        "replicas": int(strategy_obj.num_replicas_in_sync),
        "initial": initial,
        "final": {"val_2afc": final["all"], "val_2afc_by_subset": {k: v for k, v in final.items() if k != "all"}},
        "last_epoch": rows[-1] if rows else None,
        "epochs_done": len(rows),
        "triplets_per_second": float(np.median(steady)) if steady else None,
        "seconds_this_session": round(time.time() - started, 1),
    }
    write_history(rows, out_dir / "history.csv")
    if rows:
        plot_history(rows, out_dir, initial)
    summary["files"] = sorted({name for name in RUN_FILES if (out_dir / name).exists()} | {"run.json"})
    (out_dir / "run.json").write_text(json.dumps({**summary, "started": (previous or {}).get("started", run["started"])}, indent=2) + "\n")
    return summary


def _has_tensorboard():
    """tf.summary writes event files only with the tensorboard package installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print("note: the tensorboard package is not installed; no TensorBoard logs", file=sys.stderr)
        return False
    return True


def export_run(trainer, out_dir):
    """Writes model.keras (the metric), trainer.keras (metric and head) and lin_weights.npz from a
    trained `LPIPSTrainer`, rebuilt in float32 whatever policy it trained under; returns the
    float32 (metric, trainer)."""
    out_dir = pathlib.Path(out_dir)
    source = trainer.lpips
    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        metric = LPIPS(
            net=source.net, version=source.version, distance=source.distance, layers=source.layers_kept,
            backbone_weights=None, lin_weights=None, input_range=source.input_range, seed=source.seed,
            dropout=source.dropout,
        )  # fmt: skip
        metric.set_weights([np.asarray(w) for w in source.get_weights()])
        ranker = DistanceToLogit(hidden=trainer.ranker.hidden, epsilon=trainer.ranker.epsilon, seed=trainer.ranker.seed)
        ranker.build()
        ranker.set_weights([np.asarray(w) for w in trainer.ranker.get_weights()])
        trainer32 = LPIPSTrainer(metric, ranker, train_backbone=trainer.train_backbone)
    finally:
        keras.config.set_dtype_policy(saved_policy)
    metric.save(out_dir / "model.keras")
    trainer32.save(out_dir / "trainer.keras")
    if metric.heads:
        lin = {f"lin{k}": np.asarray(head.kernel.numpy()[:, 0], np.float32) for k, head in enumerate(metric.heads)}
        _write_atomic(out_dir / "lin_weights.npz", lambda tmp: _savez_to(tmp, lin))
    return metric, trainer32


def _savez_to(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# --- evaluation ---------------------------------------------------------------------------------


def _distance_functions(metric):
    @tf.function(reduce_retracing=True)
    def twoafc(ref, p0, p1):
        return twoafc_distances(metric, ref, p0, p1, training=False)

    @tf.function(reduce_retracing=True)
    def pair(p0, p1):
        n = tf.shape(p0)[0]
        features = metric.features(tf.concat([p0, p1], axis=0), training=False)
        return _sum_of_means(metric.compare([f[:n] for f in features], [f[n:] for f in features], training=False))

    return twoafc, pair


def evaluate_twoafc(metric, records, batch_size=50, load_size=64):
    """2AFC score of an `LPIPS` model on `TwoAFCRecord`s: {subset: score, ..., "all": pooled}."""
    from keras_lpips.data.pipeline import twoafc_dataset

    twoafc, _ = _distance_functions(metric)
    data = twoafc_dataset(records, batch_size=batch_size, load_size=load_size, input_range=metric.input_range, shuffle=False)
    scores = []
    for batch in data:
        d0, d1 = twoafc(batch["ref"], batch["p0"], batch["p1"])
        scores.append(twoafc_scores(np.asarray(d0), np.asarray(d1), batch["judge"].numpy()))
    return _scores_by_subset(np.concatenate(scores), records)


def _scores_by_subset(scores, records):
    """{subset: mean per-triplet score, ..., "all": pooled} in the records' subset order."""
    subsets = np.array([r.subset for r in records])
    result = {str(s): float(scores[subsets == s].mean()) for s in dict.fromkeys(subsets)}
    result["all"] = float(scores.mean())
    return result


FROZEN_KINDS = ("distances", "means", "maps")


def frozen_twoafc_arrays(metric, records, batch_size=50, load_size=64, kind="distances"):
    """What a metric with a frozen backbone gives for each triplet of `records`, in one pass over
    the images (in the metric's input_range), to train and validate on without repeating it:

    - "distances": `{"d0", "d1"}`, each `(N,)`: d(ref, p0) and d(ref, p1);
    - "means": `{"m0", "m1"}`, each `(N, channels of the kept layers)`: per layer, the spatial
      mean of each channel of the squared difference of the unit-normalised features. Any
      linear weights turn them into the distances without dropout
      (`LPIPSTrainer.distances_from_means`): the heads are linear.
    - "maps": `{"diff0", "diff1"}`, each a list of `(N, h, w, channels)` arrays, one per kept
      layer: those squared differences themselves, what the linear heads (and their dropout)
      act on in training. Large: `frozen_maps_bytes`.
    """
    from keras_lpips.data.pipeline import twoafc_dataset

    if kind not in FROZEN_KINDS:
        raise InputError(f"kind must be one of {', '.join(FROZEN_KINDS)}. Received: {kind!r}")

    @tf.function(reduce_retracing=True)
    def squared_differences(ref, p0, p1):
        n = tf.shape(ref)[0]
        features = metric.features(tf.concat([ref, p0, p1], axis=0), training=False)
        diff0 = [ops.square(f[:n] - f[n : 2 * n]) for f in features]
        diff1 = [ops.square(f[:n] - f[2 * n :]) for f in features]
        if kind == "maps":
            return diff0, diff1
        return [ops.concatenate([ops.mean(d, axis=(1, 2)) for d in diffs], axis=-1) for diffs in (diff0, diff1)]

    compute = _distance_functions(metric)[0] if kind == "distances" else squared_differences
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
    names = {"distances": ("d0", "d1"), "means": ("m0", "m1"), "maps": ("diff0", "diff1")}[kind]
    return {name: (list(value) if kind == "maps" else value) for name, value in zip(names, arrays)}


def frozen_maps_bytes(metric, count, load_size=64):
    """Bytes of `frozen_twoafc_arrays(kind="maps")` for `count` triplets of load_size x load_size."""
    outputs = metric.backbone.compute_output_spec(keras.KerasTensor((1, int(load_size), int(load_size), 3)))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return int(count) * 2 * 4 * sum(int(np.prod(o.shape[1:])) for o in outputs)


# Baselines, as the reference's test_dataset_model.py (colorspace Lab): images go through
# lpips.tensor2im (uint8, truncated), then skimage's rgb2lab.
_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def reference_uint8(images, input_range):
    """uint8 images as the reference's `tensor2im` gives them: the 8-bit value u, normalised as its
    data loader does ((u / 255 - 0.5) / 0.5, float32), then `((x + 1) * 127.5).astype(uint8)`."""
    low, high = input_range
    u = np.round((np.asarray(images, np.float32) - low) / ((high - low) / 255.0))
    x = (u.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    return ((x + np.float32(1.0)) * np.float32(127.5)).astype(np.uint8)


def rgb2lab(images):
    """skimage.color.rgb2lab of uint8 RGB images (..., 3): sRGB -> XYZ -> CIELAB (D65, 2 degrees)."""
    rgb = np.asarray(images, np.float64) / 255.0
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _XYZ_FROM_RGB.T / _D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def _box7(x):
    """Means over every 7x7 window fully inside (N, H, W, C) -> (N, H-6, W-6, C)."""
    c = np.cumsum(np.cumsum(np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0))), axis=1), axis=2)
    return (c[:, 7:, 7:] - c[:, :-7, 7:] - c[:, 7:, :-7] + c[:, :-7, :-7]) / 49.0


def ssim(a, b, data_range):
    """Per-image SSIM of (N, H, W, C) float images, as skimage's compare_ssim(multichannel=True)
    with its defaults: 7x7 uniform windows, sample covariance, K1 0.01, K2 0.03, borders cropped,
    averaged over positions and channels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ux, uy = _box7(a), _box7(b)
    cov_norm = 49.0 / 48.0
    vx = cov_norm * (_box7(a * a) - ux * ux)
    vy = cov_norm * (_box7(b * b) - uy * uy)
    vxy = cov_norm * (_box7(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def baseline_distances(a, b, input_range):
    """{"l2", "ssim", "psnr"} distances between batches of images, as the reference's baselines:
    l2 = lpips.l2 in Lab (range 100), ssim = lpips.dssim in Lab (range 100), psnr as -PSNR of
    the 8-bit RGB images (so that smaller is closer, like the others)."""
    ua, ub = reference_uint8(a, input_range), reference_uint8(b, input_range)
    la, lb = rgb2lab(ua), rgb2lab(ub)
    l2 = 0.5 * np.mean((la / 100.0 - lb / 100.0) ** 2, axis=(1, 2, 3))
    dssim = (1.0 - ssim(la, lb, 100.0)) / 2.0
    mse = np.mean((ua.astype(np.float64) - ub.astype(np.float64)) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(255.0**2 / mse)
    return {"l2": l2, "ssim": dssim, "psnr": -psnr}


def load_metric(model):
    """The `LPIPS` metric of a run folder (its model.keras) or a .keras file."""
    path = pathlib.Path(model)
    if path.is_dir():
        path = path / "model.keras"
    if path.suffix != ".keras" or not path.is_file():
        raise InputError(f"--model must be a run folder holding model.keras, or a .keras file. Received: {model}")
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"Cannot load model file {path}: not a .keras file (a zip archive)")
    try:
        loaded = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises ValueError, KeyError, TypeError, ... for damaged files
        if "safe_mode" in str(error):
            raise UnsafeFileError(
                f"refusing to load {path}: it holds code (e.g. a Lambda layer) that only safe_mode=False would run"
            ) from None
        raise WeightsError(f"Cannot load model file {path} (damaged, or not saved by keras-lpips?): {error}") from None
    if isinstance(loaded, LPIPSTrainer):
        loaded = loaded.lpips
    if not isinstance(loaded, LPIPS):
        raise InputError(f"{path} holds a {type(loaded).__name__}, not a keras_lpips.LPIPS model")
    return loaded


def evaluate_run(
    data_root,
    model=None,
    metric=None,
    subsets=None,
    jnd=None,
    jnd_subsets=None,
    baselines=True,
    batch_size=50,
    load_size=None,
    progress=False,
    keep_scores=False,
    distances=None,
):
    """Scores a metric on the BAPPS validation sets beside the reference's baselines.

    The metric is `metric` (an `LPIPS`), or loaded from `model` (a run folder or .keras file).
    `load_size` defaults to the run's (from its run.json), else 64. `distances`: the metric's
    `(d0, d1)` for the 2AFC triplets, in order, computed already (a fit run's `val_distances.npz`):
    the metric then runs on the JND pairs only. Returns::

        {"model": ..., "data": ..., "columns": ["model", "l2", "ssim", "psnr"],
         "2afc": {subset: {column: 2AFC score}, ..., "all": pooled over triplets, "mean": of subsets},
         "jnd": {subset: {column: mAP}, ...},            (when jnd/val exists, or jnd=True)
         "counts": {"2afc": {subset: n}, "jnd": {subset: n}},
         "scores": {subset: {column: [per-triplet 2AFC score, ...]}}}  (with keep_scores=True)

    2AFC as the reference's `score_2afc_dataset`, JND mAP as its `score_jnd_dataset`; baselines
    as its test_dataset_model.py with the default Lab colorspace: "l2" (lpips.l2 in Lab), "ssim"
    (DSSIM, lpips.dssim in Lab) and "psnr" (on the 8-bit RGB images).
    """
    from keras_lpips.data.bapps import list_jnd, list_twoafc, resolve_root
    from keras_lpips.data.pipeline import iterate_naming_bad_images, jnd_dataset, twoafc_dataset

    if metric is None:
        if model is None:
            raise InputError("evaluate_run needs a model (run folder or .keras file) or a metric")
        metric = load_metric(model)
        name = str(model)
        run_json = pathlib.Path(model) / "run.json"
        if load_size is None and run_json.is_file():
            load_size = json.loads(run_json.read_text()).get("config", {}).get("load_size")
    else:
        name = f"{metric.net} v{metric.version} {metric.distance}"
    load_size = int(load_size or 64)
    if isinstance(subsets, str):
        subsets = [subsets]
    records = list_twoafc(data_root, "val", subsets)
    twoafc, pair = _distance_functions(metric)
    columns = ["model"] + (["l2", "ssim", "psnr"] if baselines else [])
    per = {c: [] for c in columns}
    progress = progress and sys.stderr.isatty()
    if distances is not None:
        d0, d1 = (np.asarray(d, np.float32).reshape(-1) for d in distances)
        if not len(d0) == len(d1) == len(records):
            raise InputError(f"distances hold {len(d0)} and {len(d1)} values for {len(records)} 2AFC triplets in {data_root}")
        per["model"].append(twoafc_scores(d0, d1, np.array([r.judge for r in records], np.float32)))
    data = twoafc_dataset(records, batch_size=batch_size, load_size=load_size, input_range=metric.input_range, shuffle=False)
    for i, batch in enumerate(iterate_naming_bad_images(data, records, data_root) if distances is None or baselines else ()):
        judge = batch["judge"].numpy()
        if distances is None:
            d0, d1 = twoafc(batch["ref"], batch["p0"], batch["p1"])
            per["model"].append(twoafc_scores(np.asarray(d0), np.asarray(d1), judge))
        if baselines:
            b0 = baseline_distances(batch["ref"].numpy(), batch["p0"].numpy(), metric.input_range)
            b1 = baseline_distances(batch["ref"].numpy(), batch["p1"].numpy(), metric.input_range)
            for c in columns[1:]:
                per[c].append(twoafc_scores(b0[c], b1[c], judge))
        if progress:
            print(f"\r2afc: {min((i + 1) * batch_size, len(records))}/{len(records)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    subset_of = np.array([r.subset for r in records])
    names = [str(s) for s in dict.fromkeys(subset_of)]
    result = {"model": name, "data": str(data_root), "load_size": int(load_size), "columns": columns, "2afc": {}}
    scores = {c: np.concatenate(per[c]) for c in columns}
    for s in names:
        result["2afc"][s] = {c: float(scores[c][subset_of == s].mean()) for c in columns}
    result["2afc"]["all"] = {c: float(scores[c].mean()) for c in columns}
    result["2afc"]["mean"] = {c: float(np.mean([result["2afc"][s][c] for s in names])) for c in columns}
    result["counts"] = {"2afc": {s: int((subset_of == s).sum()) for s in names}}
    if keep_scores:  # for paired comparisons of metrics on the same triplets
        result["scores"] = {s: {c: scores[c][subset_of == s].tolist() for c in columns} for s in names}

    root = resolve_root(data_root)
    if jnd is None:
        jnd = (root / "jnd" / "val").is_dir()
    if jnd:
        pairs = list_jnd(data_root, jnd_subsets)
        distances = {c: [] for c in columns}
        same = []
        data = jnd_dataset(pairs, batch_size=batch_size, load_size=load_size, input_range=metric.input_range, shuffle=False)
        for batch in iterate_naming_bad_images(data, pairs, data_root):
            distances["model"].append(np.asarray(pair(batch["p0"], batch["p1"])))
            if baselines:
                b = baseline_distances(batch["p0"].numpy(), batch["p1"].numpy(), metric.input_range)
                for c in columns[1:]:
                    distances[c].append(b[c])
            same.append(batch["same"].numpy())
        same = np.concatenate(same)
        distances = {c: np.concatenate(v) for c, v in distances.items()}
        pair_subset = np.array([p.subset for p in pairs])
        result["jnd"] = {}
        for s in map(str, dict.fromkeys(pair_subset)):
            mask = pair_subset == s
            result["jnd"][s] = {c: jnd_map(distances[c][mask], same[mask]) for c in columns}
        result["counts"]["jnd"] = {str(s): int((pair_subset == s).sum()) for s in dict.fromkeys(pair_subset)}
    return result


def results_markdown(results):
    """Markdown tables of `evaluate_run`'s results: 2AFC scores, then JND mAP."""
    columns = results["columns"]
    header = ["subset", "n"] + columns
    lines = [f"Model: {results['model']}  ", f"Data: {results['data']}", "", "2AFC score (val):", ""]

    def table(section, counts, extra_rows):
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for subset, row in results[section].items():
            n = counts.get(subset, sum(counts.values()) if subset == "all" else "")
            if subset in extra_rows and subset not in counts:
                n = sum(counts.values()) if subset == "all" else ""
            out.append("| " + " | ".join([subset, str(n)] + [f"{row[c]:.4f}" for c in columns]) + " |")
        return out

    lines += table("2afc", results["counts"]["2afc"], ("all", "mean"))
    if "jnd" in results:
        lines += ["", "JND mAP (val):", ""] + table("jnd", results["counts"]["jnd"], ())
    return "\n".join(lines) + "\n"


def write_results(results, path):
    """Writes `evaluate_run`'s results as JSON (.json) or markdown (anything else)."""
    path = pathlib.Path(path)
    text = json.dumps(results, indent=2) + "\n" if path.suffix == ".json" else results_markdown(results)
    if not path.parent.is_dir():
        raise InputError(f"Output folder does not exist: {path.parent}")
    try:
        _write_atomic(path, lambda tmp: tmp.write_text(text))
    except OSError as error:
        raise InputError(f"Cannot write {path}: {error.strerror or error}") from None
    return path
