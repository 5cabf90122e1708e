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
resumes from its last complete checkpoint. A new run that fails before its first checkpoint
(a backbone weight file that cannot be read, a damaged image, an interrupt) leaves nothing:
what it wrote and the folders it made are removed. `fit` holds the folder's lock
(`RunFolder.locked`, the file PATH.lock beside it) while it runs: a second process training
into it is refused.
"""

import contextlib
import csv
import datetime
import io
import json
import os
import pathlib
import re
import shutil
import time

import keras
import numpy as np

from keras_lpips.backbones import get_backbone
from keras_lpips.data.bapps import resolve_root
from keras_lpips.disk_space import check_disk_space
from keras_lpips import errors
from keras_lpips.errors import DataError, InputError, InUseError, OutputError, WeightsError
from keras_lpips.file_lock import file_lock
from keras_lpips.files import atomic_path, atomic_write, make_folder, remove_if_empty, scratch_directory
from keras_lpips.reports import float32_values
from keras_lpips.training.precision import float32_trainer
from keras_lpips.weights.npz_file import read_saved_npz
from keras_lpips.weights.sources import is_weight_name

HISTORY_FIELDS = ("epoch", "lr", "loss", "2afc", "val_loss", "val_2afc", "train_seconds", "triplets_per_second")
FILES = (
    "run.json", "history.csv", "loss.png", "accuracy.png", "model.keras", "trainer.keras", "lin_weights.npz",
    "val_distances.npz",
)  # fmt: skip
FOLDERS = ("checkpoint", "logs")
# history.csv's float32 values (the rate, losses and scores), written as float32 (0.6929503, 2e-05)
FLOAT32_FIELDS = ("lr", "loss", "2afc", "val_loss", "val_2afc")
PER_INVOCATION = ("resume", "progress", "strategy")  # options that may differ between a run and its resumption
# What a run writes besides its checkpoints and models (history, plots, TensorBoard logs,
# validation distances, run.json), with room to spare.
OTHER_BYTES = 20 * 10**6


class RunFolder:
    """The folder of one run. Only the chief of a multi-worker run writes (`writes=False` elsewhere)."""

    def __init__(self, path, writes=True):
        self.path = pathlib.Path(path)
        self.writes = writes
        self.checkpoints = self.path / "checkpoint"
        self.fresh = False  # `open` found no run here (no folder, or an empty one)
        self._made = []  # the folders `open` created
        self._checkpointed = False  # a checkpoint was written in this call

    @contextlib.contextmanager
    def locked(self):
        """Holds the run folder's lock for the block (`file_lock` on it: the file PATH.lock
        beside it), so that no two processes train into one folder; while another process holds
        it, raises `InUseError` at once. Workers that do not write take no lock.

        When the block raises before the first checkpoint of a new run (`open` found no run
        here), what the run wrote is removed, with the folders it made, its parents included."""
        if not self.writes:
            yield
            return
        stack, parents = contextlib.ExitStack(), []
        try:
            parents = make_folder(self.path.parent)
            stack.enter_context(file_lock(self.path, timeout=0))
        except TimeoutError:
            raise InUseError(
                f"run directory {self.path} is in use by another training process (it holds {self.path}.lock); "
                "wait for that run to end, or choose another out_dir="
            ) from None
        except OSError as error:
            remove_if_empty(parents)
            raise OutputError(f"Cannot create run directory {self.path}: {error.strerror or error}") from None
        try:
            with stack:
                try:
                    yield
                except BaseException:
                    self._discard_unfinished()
                    raise
        finally:
            remove_if_empty(parents)  # once the lock file beside the folder is gone; left empty only on failure

    def _discard_unfinished(self):
        """Removes what a new run wrote (`FILES`, `FOLDERS`) and the folders `open` made, where it
        wrote no checkpoint: a failed new run leaves nothing to resume from, and nothing at all."""
        if not self.fresh or self._checkpointed:
            return
        for name in (*FILES, *FOLDERS):
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        remove_if_empty(self._made)

    def open(self, config, resume):
        """Creates the folder; refuses a non-empty one without `resume`, and a resumed one whose
        configuration differs, or one holding files but no run (no run.json). Returns the previous
        run.json (dict), or {} for a new run in an absent or empty folder (`fresh`)."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"out_dir={self.path} exists and is not a directory")
        if not self.writes:
            return {}
        previous = {}
        self.fresh = not (self.path.is_dir() and any(self.path.iterdir()))
        if not self.fresh:
            if not resume:
                raise InputError(f"run directory {self.path} is not empty: pass resume=True to continue that run, or choose a new out_dir=")
            previous = self.previous_record()
            if not previous:  # files, but no run's record: nothing to resume, and a new run would mix with them
                raise InputError(f"resume=True: {self.path} holds no run to continue (no run.json), but other files; choose an empty or new out_dir=")
            changes = config_changes(previous["config"], config)
            if changes:
                raise InputError(
                    f"resume=True: the run in {self.path} was started with other settings or data ({changes}); "
                    "resume it with those, or choose a new out_dir="
                )
        try:
            self._made = make_folder(self.path)
        except OSError as error:
            raise OutputError(f"Cannot create run directory {self.path}: {error.strerror or error}") from None
        return previous

    def previous_record(self, advice="delete that folder to start the run again, or choose a new out_dir="):
        """The run.json of the run in this folder ({} where there is none); `DataError` when it
        cannot be read or records no run configuration, ending with `advice`, what the caller's
        user can do (by default fit's: start the run again elsewhere)."""
        path = self.path / "run.json"
        if not path.is_file():
            return {}
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
                raise ValueError("it records no run configuration")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise DataError(f"Cannot read {path} ({errors.reason(error)}), the record of the run in {self.path}: {advice}") from None
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
        self._checkpointed = True
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
        try:  # bounded by its own size (a huge declared shape, a member inflating to gigabytes)
            data = read_saved_npz(path, "it")
            values = [data[f"v{i}"] for i in range(len(data))]
        except OSError as error:
            raise self._damaged(path, errors.reason(error)) from None
        except (WeightsError, KeyError) as error:  # KeyError: keys other than v0, v1, ...
            reason = str(error).partition(": ")[2] if isinstance(error, WeightsError) else f"it lacks {error}"  # less "Cannot read it: "
            raise self._damaged(path, reason) from None
        if len(values) != len(variables):
            raise DataError(f"{path} holds {len(values)} state arrays; this configuration has {len(variables)}")
        for i, (variable, value) in enumerate(zip(variables, values)):
            if tuple(value.shape) != tuple(variable.shape):
                raise DataError(f"{path}: state {i} ({variable.path}) has shape {value.shape}, expected {tuple(variable.shape)}")
        return values

    # --- history and plots ---------------------------------------------------------------------

    def write_history(self, rows):
        """history.csv: one row per finished epoch (epoch counted from 1); the rate, losses and
        scores as the float32 values they are (`FLOAT32_FIELDS`: 2e-05, not 1.9999999999999995e-05)."""
        if not self.writes:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: float32_values(v) if k in FLOAT32_FIELDS else v for k, v in row.items()} for row in rows)
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

    def epoch_recorder(self, rows, initial, schedule, n_train, validate=None):
        """The Keras callback that times each epoch and writes its checkpoint and history; with
        `validate` (`precision.Float32Validation`), it validates each epoch itself, once timed."""
        return _EpochRecorder(self, rows, initial, schedule, n_train, validate)

    # --- the trained model ---------------------------------------------------------------------

    @staticmethod
    def saved_trainer(trainer):
        """What the run saves of `trainer`: a copy in float32 and without dropout, whatever the run
        trained under (`float32_trainer`)."""
        return float32_trainer(trainer)

    def save_models(self, saved, frozen_backbone):
        """The `saved_trainer`'s files: trainer.keras (metric and ranker), where the backbone stayed
        frozen (lin mode) lin_weights.npz, and last model.keras (the metric), whose presence
        says that the run's training and files are done (`score --model RUN`; run.json's final
        record follows): a run stopped before has none."""
        if not self.writes:
            return
        metric = saved.lpips
        if metric.heads and frozen_backbone:
            lin = {f"lin{k}": np.asarray(head.kernel.numpy()[:, 0], np.float32) for k, head in enumerate(metric.heads)}
            atomic_write(self.path / "lin_weights.npz", _npz_bytes(lin))
        for model, name in ((saved, "trainer.keras"), (metric, "model.keras")):
            with scratch_directory(self.path / name) as scratch:  # Keras names the format by the suffix
                model.save(scratch / name)
                os.replace(scratch / name, self.path / name)

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
    if "policy" not in ignore and old.get("policy") and new.get("policy"):
        ignore = (*ignore, "mixed_precision")  # the policy it resolved to decides: "auto" that chose bf16 is "bf16"
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in ignore)
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)


# What run.json records only since keras-lpips recorded it: runs before resume without it.
UNRECORDED_BEFORE = ("train_set", "val_set")


def comparable_config(config):
    """A run configuration as a resumed run (`resume=True`) compares it: without the per-invocation
    options, and each setting by what it means, not by how it was spelt: the backbone by its
    canonical name ("alexnet" and "alex" are one net), `layers` None by the count it keeps (all),
    a backbone weight file by its absolute path (`recorded_weights`), the dataset by its root
    (`resolve_root`: the root, its dataset/ or its 2afc/ folder are one dataset)."""
    comparable = {k: v for k, v in config.items() if k not in PER_INVOCATION}
    if "strategy" in config:  # where a run trains, but a TPU's full batches only change its steps per epoch
        comparable["full_batches_only"] = config["strategy"] == "tpu"
    if "backbone" in comparable:
        try:
            spec = get_backbone(comparable["backbone"])
        except InputError:
            spec = None  # an unknown name stays as written, and so compares as different
        if spec is not None:
            comparable["backbone"] = spec.name
            if "layers" in comparable and comparable["layers"] is None:
                comparable["layers"] = len(spec.taps)
    if isinstance(comparable.get("backbone_weights"), str):
        comparable["backbone_weights"] = recorded_weights(comparable["backbone_weights"])
    if isinstance(comparable.get("data_root"), str):
        with contextlib.suppress(InputError, OSError):  # a dataset no longer there stays as recorded
            comparable["data_root"] = str(resolve_root(comparable["data_root"]).resolve())
    return comparable


def recorded_weights(backbone_weights):
    """How run.json records `backbone_weights`: a name as it is (`sources.is_weight_name`), a file
    by its absolute path (a relative path names another file from another folder)."""
    if is_weight_name("backbone_weights", backbone_weights):
        return str(backbone_weights)
    return str(pathlib.Path(backbone_weights).resolve())


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


class _EpochRecorder(keras.callbacks.Callback):
    """Times the training part of each epoch; at its end validates it where `validate` is given
    (adding val_loss and val_2afc to the epoch's logs), then writes the checkpoint, history.csv,
    and the record that a resumed run (`resume=True`) reads back."""

    def __init__(self, folder, rows, initial, schedule, n_train, validate=None):
        super().__init__()
        self.folder, self.rows, self.initial = folder, rows, initial
        self.schedule, self.n_train, self.validate = schedule, n_train, validate
        self._start = self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        logs = {} if logs is None else logs
        if self.validate is not None:  # in place: the callbacks after this one (`fit` puts it first) see them
            logs.update(self.validate(self.model))
        row = {"epoch": epoch + 1, "lr": self.schedule.rate_at_epoch(epoch)}
        row.update({k: float(v) for k, v in logs.items() if k in HISTORY_FIELDS})
        row["train_seconds"] = round(seconds, 3)
        row["triplets_per_second"] = round(self.n_train / seconds, 1)
        self.rows.append(row)
        self.folder.save_checkpoint(self.model, epoch + 1, {"history": self.rows, "initial": self.initial})
        self.folder.write_history(self.rows)
