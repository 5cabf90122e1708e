"""A training run's folder: the one owner of every file `fit` writes.

    run.json            configuration, the untrained and final val 2AFC, timings, the file list
    checkpoint/         epoch-NNNN.npz (every state variable) and latest.json, after every epoch
    history.csv         one row per finished epoch
    loss.png, accuracy.png   train and val curves (epoch 0: the untrained model)
    logs/               TensorBoard
    model.keras         the trained `LPIPS` metric, float32, no dropout (`load_metric`, `score --model`)
    trainer.keras       the metric plus its ranking head
    lin_weights.npz     lin mode only: lin0, lin1, ...: float32 (C,) vectors (`LPIPS(lin_weights=...)`,
                        with the backbone weights the run used); tune and scratch runs learn their
                        heads for their own trained backbone, which only model.keras holds
    val_distances.npz   d0, d1 of every validation triplet under the final model

Every file appears whole or not at all (`keras_lpips.files`): a run killed at any moment
resumes from its last complete checkpoint. `fit` holds the folder's lock (`RunFolder.locked`,
the file PATH.lock beside it) while it runs: a second process training into it is refused.
"""

import contextlib
import csv
import datetime
import io
import json
import os
import pathlib
import re
import time
import zipfile

import keras
import numpy as np

from keras_lpips.backbones import get_backbone
from keras_lpips.disk_space import check_disk_space
from keras_lpips import errors
from keras_lpips.errors import DataError, InputError, InUseError, OutputError
from keras_lpips.file_lock import file_lock
from keras_lpips.files import atomic_path, atomic_write, scratch_directory
from keras_lpips.training.trainer import LPIPSTrainer

HISTORY_FIELDS = ("epoch", "lr", "loss", "2afc", "val_loss", "val_2afc", "train_seconds", "triplets_per_second")
FILES = (
    "run.json", "history.csv", "loss.png", "accuracy.png", "model.keras", "trainer.keras", "lin_weights.npz",
    "val_distances.npz",
)  # fmt: skip
PER_INVOCATION = ("resume", "progress")  # options that may differ between a run and its resumption
# What a run writes besides its checkpoints and models (history, plots, TensorBoard logs,
# validation distances, run.json), with room to spare.
OTHER_BYTES = 20 * 10**6


class RunFolder:
    """The folder of one run. Only the chief of a multi-worker run writes (`writes=False` elsewhere)."""

    def __init__(self, path, writes=True):
        self.path = pathlib.Path(path)
        self.writes = writes
        self.checkpoints = self.path / "checkpoint"

    @contextlib.contextmanager
    def locked(self):
        """Holds the run folder's lock for the block (`file_lock` on it: the file PATH.lock
        beside it), so that no two processes train into one folder; while another process holds
        it, raises `InUseError` at once. Workers that do not write take no lock."""
        if not self.writes:
            yield
            return
        stack = contextlib.ExitStack()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(self.path, timeout=0))
        except TimeoutError:
            raise InUseError(
                f"run directory {self.path} is in use by another training process (it holds {self.path}.lock); "
                "wait for that run to end, or choose another out_dir="
            ) from None
        except OSError as error:
            raise OutputError(f"Cannot create run directory {self.path}: {error.strerror or error}") from None
        with stack:
            yield

    def open(self, config, resume):
        """Creates the folder; refuses a non-empty one without `resume`, and a resumed one whose
        configuration differs. Returns the previous run.json (dict), or {} for a new run."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"out_dir={self.path} exists and is not a directory")
        if not self.writes:
            return {}
        previous = {}
        if self.path.is_dir() and any(self.path.iterdir()):
            if not resume:
                raise InputError(f"run directory {self.path} is not empty: pass resume=True to continue that run, or choose a new out_dir=")
            previous = self.previous_record()
            changes = config_changes(previous["config"], config) if previous else ""
            if changes:
                raise InputError(
                    f"resume=True: the run in {self.path} was started with other settings or data ({changes}); "
                    "resume it with those, or choose a new out_dir="
                )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"Cannot create run directory {self.path}: {error.strerror or error}") from None
        return previous

    def previous_record(self):
        """The run.json of the run in this folder ({} where there is none); `DataError` when it
        cannot be read."""
        path = self.path / "run.json"
        if not path.is_file():
            return {}
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
                raise ValueError("it records no run configuration")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise DataError(
                f"Cannot read {path} ({errors.reason(error)}), the record of the run in {self.path}: "
                "delete that folder to start the run again, or choose a new out_dir="
            ) from None
        return record

    def check_disk_space(self, trainer):
        """Refuses (`DiskFullError`) a run whose files would not fit in the free disk space:
        `estimate_bytes`. Returns the estimate."""
        needed = self.estimate_bytes(trainer)
        if self.writes:
            check_disk_space(self.path, needed, f"The training run in {self.path}")
        return needed

    @staticmethod
    def estimate_bytes(trainer):
        """Bytes a run's folder holds at its peak: two checkpoints of every state variable (a new
        one is complete before the old one is deleted), model.keras and trainer.keras (the
        weights in float32, each) and `OTHER_BYTES`."""
        state = sum(_nbytes(v) for v in _state_variables(trainer))
        weights = 4 * sum(int(np.prod(v.shape)) for v in trainer.weights)
        return 2 * state + 2 * weights + OTHER_BYTES

    def write_record(self, record):
        """run.json."""
        if self.writes:
            atomic_write(self.path / "run.json", json.dumps(record, indent=2) + "\n")

    # --- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, trainer, epoch, record):
        """`epoch-NNNN.npz` (all state variables), then `latest.json` (`record` plus the file name),
        then older states deleted: a kill at any point leaves the previous complete checkpoint or
        the new one."""
        if not self.writes:
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch:04d}.npz"
        arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(_state_variables(trainer))}
        atomic_write(self.checkpoints / name, _npz_bytes(arrays), fsync=True)
        atomic_write(self.checkpoints / "latest.json", json.dumps({**record, "epoch": epoch, "file": name}), fsync=True)
        for old in self.checkpoints.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load_checkpoint(self, trainer):
        """Restores the state `save_checkpoint` wrote; returns its record, or None when there is
        none. A damaged checkpoint is a `DataError` naming the file, and nothing is restored."""
        latest = self.checkpoints / "latest.json"
        if not latest.is_file():
            return None
        record = self._checkpoint_record(latest)
        variables = _state_variables(trainer)
        for variable, value in zip(variables, self._checkpoint_values(self.checkpoints / record["file"], variables)):
            variable.assign(value)
        return record

    def _damaged(self, path, reason):
        """The `DataError` for a damaged checkpoint file `path`."""
        return DataError(
            f"Cannot resume from the checkpoint {path}: {reason}; delete {self.checkpoints} to train the run "
            "again from its start (with resume=True), or choose a new out_dir="
        )

    def _checkpoint_record(self, latest):
        """latest.json's record, checked: {"epoch": int, "file": "epoch-NNNN.npz", "history": [...], ...}."""
        try:
            record = json.loads(latest.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise self._damaged(latest, errors.reason(error)) from None
        valid = (
            isinstance(record, dict) and isinstance(record.get("epoch"), int) and isinstance(record.get("history"), list)
            and isinstance(record.get("file"), str) and re.fullmatch(r"epoch-\d+\.npz", record["file"])
        )  # fmt: skip
        if not valid:
            raise self._damaged(latest, "it is not a checkpoint record (epoch, file, history)")
        return record

    def _checkpoint_values(self, path, variables):
        """The state arrays of the checkpoint `path`, checked against `variables`' count and shapes."""
        try:
            with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:  # closed however it ends
                values = [data[f"v{i}"] for i in range(len(data.files))]
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise self._damaged(path, errors.reason(error)) from None
        if len(values) != len(variables):
            raise DataError(f"{path} holds {len(values)} state arrays; this configuration has {len(variables)}")
        for i, (variable, value) in enumerate(zip(variables, values)):
            if tuple(value.shape) != tuple(variable.shape):
                raise DataError(f"{path}: state {i} ({variable.path}) has shape {value.shape}, expected {tuple(variable.shape)}")
        return values

    # --- history and plots ---------------------------------------------------------------------

    def write_history(self, rows):
        """history.csv: one row per finished epoch (epoch counted from 1)."""
        if not self.writes:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / "history.csv", text.getvalue())

    def plot_history(self, rows, initial=None):
        """loss.png and accuracy.png: train and val curves per epoch (epoch 0: the untrained model's val)."""
        if not self.writes or not rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.ticker import MaxNLocator

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
            with atomic_path(self.path / filename) as partial:
                fig.savefig(partial, format="png")
            plt.close(fig)

    def epoch_recorder(self, rows, initial, schedule, n_train):
        """The Keras callback that times each epoch and writes its checkpoint and history."""
        return _EpochRecorder(self, rows, initial, schedule, n_train)

    # --- the trained model ---------------------------------------------------------------------

    def save_model(self, trainer):
        """model.keras (the metric), trainer.keras (metric and ranker) and, where the backbone stayed
        frozen (lin mode), lin_weights.npz, in float32 and without dropout whatever the run
        trained under; returns the float32 metric."""
        metric = _float32_copy(trainer.lpips, dropout=0.0)
        trainer32 = LPIPSTrainer(metric, _float32_copy(trainer.ranker), train_backbone=trainer.train_backbone)
        if self.writes:
            for model, name in ((metric, "model.keras"), (trainer32, "trainer.keras")):
                with scratch_directory(self.path / name) as scratch:  # Keras names the format by the suffix
                    model.save(scratch / name)
                    os.replace(scratch / name, self.path / name)
            if metric.heads and not trainer.train_backbone:
                lin = {f"lin{k}": np.asarray(head.kernel.numpy()[:, 0], np.float32) for k, head in enumerate(metric.heads)}
                atomic_write(self.path / "lin_weights.npz", _npz_bytes(lin))
        return metric

    def save_validation_distances(self, d0, d1):
        if self.writes:
            atomic_write(self.path / "val_distances.npz", _npz_bytes({"d0": d0, "d1": d1}))

    def files(self):
        return sorted({name for name in FILES if (self.path / name).exists()} | {"run.json"})


def config_changes(old, new, ignore=()):
    """"key: old -> new; ..." for what differs between two run configurations (`comparable_config`),
    but the keys in `ignore`, and the data sets' fingerprints where `old` has none (a run.json
    of a keras-lpips that did not record them: its data cannot be compared); "" where nothing does."""
    old, new = comparable_config(old), comparable_config(new)
    ignore = (*ignore, *(key for key in UNRECORDED_BEFORE if key not in old))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in ignore)
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)


# What run.json records only since keras-lpips recorded it: runs before resume without it.
UNRECORDED_BEFORE = ("train_set", "val_set")


def comparable_config(config):
    """A run configuration as a resumed run (`resume=True`) compares it: without the per-invocation options, and
    with the backbone by its canonical name ("alexnet" and "alex" are one net)."""
    comparable = {k: v for k, v in config.items() if k not in PER_INVOCATION}
    if "backbone" in comparable:
        try:
            comparable["backbone"] = get_backbone(comparable["backbone"]).name
        except InputError:
            pass  # an unknown name stays as written, and so compares as different
    return comparable


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def _state_variables(trainer):
    """Everything a resumed run needs: the model's variables (weights, dropout seed states) and
    the optimiser's (step count, moments; loss scale under fp16). Not the metrics' accumulators."""
    return list(trainer.variables) + list(trainer.optimizer.variables)


def _nbytes(variable):
    """Bytes of a variable's value as a checkpoint stores it (4 per value where its dtype is not numpy's)."""
    try:
        size = np.dtype(variable.dtype).itemsize
    except TypeError:
        size = 4
    return int(np.prod(variable.shape)) * size


def _npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _float32_copy(layer, **overrides):
    """`layer` rebuilt from its config in float32 (no weight sources read), with its weights."""
    from keras_lpips.weights.loading import sources_deferred

    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        with sources_deferred():
            config = {**layer.get_config(), **overrides, "dtype": "float32"}
            copy = type(layer).from_config(config)
        if not copy.built:
            copy.build()
    finally:
        keras.config.set_dtype_policy(saved_policy)
    copy.set_weights([np.asarray(w) for w in layer.get_weights()])
    return copy


class _EpochRecorder(keras.callbacks.Callback):
    """Times the training part of each epoch; at its end writes the checkpoint, history.csv,
    and the record that a resumed run (`resume=True`) reads back."""

    def __init__(self, folder, rows, initial, schedule, n_train):
        super().__init__()
        self.folder, self.rows, self.initial = folder, rows, initial
        self.schedule, self.n_train = schedule, n_train
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
        self.folder.save_checkpoint(self.model, epoch + 1, {"history": self.rows, "initial": self.initial})
        self.folder.write_history(self.rows)
