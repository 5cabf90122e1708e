"""What a `fit` run leaves and says: nothing after a failed start, validation of the float32 model it
saves under mixed precision, resumption of equivalent settings, notes, history.csv, progress."""

import json
import re
import sys

import numpy as np
import pytest

from tests.test_training import TINY

FAST = dict(TINY, epochs=1, decay_epochs=0, progress=False)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from keras_lpips.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("small") / "bapps", n_train=20, n_val=20, n_jnd=0, seed=1)


def _interrupt_in_first_epoch():
    import keras

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    return Interrupt()


# --- a new run that fails before its first checkpoint leaves nothing --------------------------------


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing(small_data, tmp_path):
    """A backbone weight file that cannot be read (found when the model is built, after the run
    folder is made) or an interrupt in the first epoch (after run.json and the TensorBoard logs are
    written): the folder, and the parents the run made, are gone; an empty folder that was there
    stays, empty."""
    from keras_lpips.errors import InputError, KerasLPIPSNote, WeightsError
    from keras_lpips.training import fit_run

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk")
    inputs = sorted(tmp_path.iterdir())
    with pytest.raises((InputError, WeightsError)):
        fit_run(small_data, tmp_path / "a" / "b" / "run", **{**FAST, "backbone_weights": str(junk)})
    assert sorted(tmp_path.iterdir()) == inputs
    with pytest.warns(KerasLPIPSNote, match="^nothing to resume"), pytest.raises(KeyboardInterrupt):
        fit_run(small_data, tmp_path / "run", callbacks=[_interrupt_in_first_epoch()], resume=True, **FAST)
    assert sorted(tmp_path.iterdir()) == inputs
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyboardInterrupt):
        fit_run(small_data, tmp_path / "empty", callbacks=[_interrupt_in_first_epoch()], **FAST)
    assert list((tmp_path / "empty").iterdir()) == []


def test_cli_fit_with_an_unreadable_backbone_file_is_one_line_and_leaves_nothing(small_data, tmp_path):
    from tests.helpers import one_error_line, run_cli

    missing = tmp_path / "nope.npz"
    result = run_cli("fit", "--data", small_data, "--out", tmp_path / "rx", "--backbone-weights", missing, "--layers", "3",
                     "--load-size", "32", "--mixed-precision", "off", "--quiet")  # fmt: skip
    assert result.returncode == 1 and str(missing) in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_run_interrupted_after_a_checkpoint_keeps_it(small_data, tmp_path):
    """A new run stopped after its first checkpoint, then its resumption stopped before its next
    one: the run and its checkpoint stay, to resume from."""
    from keras_lpips.training import fit_run
    from tests.test_training import _interrupt_in_epoch, _Interrupted

    run, options = tmp_path / "run", {**FAST, "epochs": 2}
    with pytest.raises(_Interrupted):
        fit_run(small_data, run, callbacks=[_interrupt_in_epoch(2)], **options)
    with pytest.raises(KeyboardInterrupt):
        fit_run(small_data, run, resume=True, callbacks=[_interrupt_in_first_epoch()], **options)
    assert json.loads((run / "checkpoint" / "latest.json").read_text())["epoch"] == 1
    assert (run / "run.json").is_file() and (run / "history.csv").is_file()


def test_a_run_stopped_while_it_writes_its_last_files_has_no_model_yet(small_data, tmp_path, monkeypatch):
    """model.keras is written last, so that a folder holding it is a finished run (score --model
    RUN takes it): stopped while its plots were drawn, the run has none, and --resume finishes it."""
    from keras_lpips.training import fit_run
    from keras_lpips.training.run_folder import RunFolder

    def interrupted(self, rows, initial=None):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(RunFolder, "plot_history", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fit_run(small_data, run, **FAST)
    assert not (run / "model.keras").exists() and (run / "checkpoint" / "latest.json").is_file()
    summary = fit_run(small_data, run, resume=True, **FAST)
    assert {"model.keras", "trainer.keras", "loss.png", "val_distances.npz"} <= set(summary["files"])


# --- mixed precision: validation scores the float32 model the run saves ------------------------------


@pytest.mark.parametrize("mode", ["lin", "tune"])
def test_mixed_precision_runs_validate_the_float32_model_they_save(small_data, tmp_path, mode):
    """Under bf16 (lin: the frozen backbone's precomputed validation; tune: on the images), the
    untrained score, each epoch's and the final one are those of the float32 model the run saves:
    the last epoch's val_loss and val_2afc are what the saved trainer gives on the final validation
    distances, and the untrained score is a float32 run's."""
    import keras

    from keras_lpips.data.bapps import list_twoafc
    from keras_lpips.ranking import ranking_loss, twoafc_scores
    from keras_lpips.training import fit_run

    options = {**FAST, "mode": mode, "backbone_weights": "random" if mode == "tune" else TINY["backbone_weights"]}
    mixed = fit_run(small_data, tmp_path / "bf16", **{**options, "mixed_precision": "bf16"})
    assert mixed["config"]["policy"] == "mixed_bfloat16"
    judge = np.array([r.judge for r in list_twoafc(small_data, "val")], np.float32)
    with np.load(tmp_path / "bf16" / "val_distances.npz") as saved:
        d0, d1 = saved["d0"], saved["d1"]
    trainer = keras.saving.load_model(tmp_path / "bf16" / "trainer.keras")
    loss = float(np.mean(np.asarray(ranking_loss(judge, trainer.ranker([d0, d1])))))
    header, *rows = (tmp_path / "bf16" / "history.csv").read_text().splitlines()
    last = dict(zip(header.split(","), rows[-1].split(",")))
    assert float(last["val_loss"]) == pytest.approx(loss, abs=3e-7)
    assert float(last["val_2afc"]) == pytest.approx(float(twoafc_scores(d0, d1, judge).mean()), abs=1e-6)
    assert float(last["val_2afc"]) == pytest.approx(mixed["final"]["val_2afc"], abs=1e-6)
    full = fit_run(small_data, tmp_path / "off", **{**options, "mixed_precision": "off"})
    assert mixed["initial"] == pytest.approx(full["initial"], abs=1e-6)


# --- resuming: settings compared by what they mean ---------------------------------------------------


def test_resume_compares_what_settings_mean_not_their_spelling(small_data, tmp_path, monkeypatch):
    """The resolved precision policy ("auto" that chose bf16 is "bf16"), layers None and the count
    it keeps, a weight file's relative and absolute path, the dataset's root and its 2afc/ folder."""
    from keras_lpips.training.run_folder import config_changes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.npz").write_bytes(b"")
    old = {"backbone": "alex", "layers": None, "mixed_precision": "auto", "policy": "mixed_bfloat16",
           "backbone_weights": "w.npz", "data_root": str(small_data)}  # fmt: skip
    same = {"backbone": "alexnet", "layers": 5, "mixed_precision": "bf16", "policy": "mixed_bfloat16",
            "backbone_weights": str(tmp_path / "w.npz"), "data_root": str(small_data / "2afc")}  # fmt: skip
    assert config_changes(old, same) == ""
    assert config_changes(old, {**same, "policy": "float32"}) == "policy: 'mixed_bfloat16' -> 'float32'"
    assert config_changes(old, {**same, "layers": 4}) == "layers: 5 -> 4"
    assert config_changes({**old, "strategy": "auto"}, {**same, "strategy": "mirrored"}) == ""  # where, not what
    assert config_changes({**old, "strategy": "auto"}, {**same, "strategy": "tpu"}) == "full_batches_only: False -> True"
    assert config_changes(old, {**same, "backbone_weights": "imagenet"}).startswith("backbone_weights: ")
    # the study compares runs without the policy (auto picks it per machine): the spelling then counts
    assert config_changes(old, same, ignore=("policy",)) == "mixed_precision: 'auto' -> 'bf16'"


def test_resume_with_the_precision_auto_resolved_to(small_data, tmp_path, monkeypatch):
    """A run started with mixed_precision "off" resumes with "auto" where auto resolves to float32
    (no GPU, no native bf16), and a finished one says so."""
    from keras_lpips.training import devices, fit_run

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    devices_of = devices.tf.config.list_physical_devices
    monkeypatch.setattr(devices.tf.config, "list_physical_devices", lambda kind=None: [] if kind == "GPU" else devices_of(kind))
    first = fit_run(small_data, tmp_path / "run", **{**FAST, "mixed_precision": "off"})
    again = fit_run(small_data, tmp_path / "run", resume=True, **{**FAST, "mixed_precision": "auto"})
    assert again["final"] == first["final"] and again["config"]["policy"] == "float32"


def test_a_run_resumes_under_another_strategy(small_data, tmp_path):
    """Started on one device (lin: from the frozen backbone's precomputed maps), resumed under
    MirroredStrategy (on the images): it ends where the uninterrupted one-device run ends (dropout
    off: its masks depend on how a batch is split over replicas)."""
    from keras_lpips.errors import KerasLPIPSNote
    from keras_lpips.training import fit_run
    from tests.test_training import _assert_same_state, _interrupt_in_epoch, _Interrupted

    run = dict(TINY, epochs=2, decay_epochs=1, lr=1e-3, seed=3, progress=False, dropout=0.0)
    fit_run(small_data, tmp_path / "straight", strategy="one-device", **run)
    with pytest.raises(_Interrupted):
        fit_run(small_data, tmp_path / "moved", callbacks=[_interrupt_in_epoch(2)], strategy="one-device", **run)
    with pytest.warns(KerasLPIPSNote, match=r"^strategy mirrored: 1 replica"):
        resumed = fit_run(small_data, tmp_path / "moved", resume=True, strategy="mirrored", **run)
    assert resumed["strategy"] == "mirrored" and resumed["config"]["strategy"] == "mirrored"
    _assert_same_state(tmp_path / "moved", tmp_path / "straight", atol=1e-5)


# --- notes: KerasLPIPSNote warnings, which the CLI prints as "note: ..." lines ----------------------


def _notes(record):
    from keras_lpips.errors import KerasLPIPSNote

    return [str(w.message) for w in record if issubclass(w.category, KerasLPIPSNote)]


def test_resume_with_nothing_to_resume_says_it_starts_a_new_run(small_data, tmp_path, capsys):
    import warnings

    from keras_lpips.training import fit_run

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit_run(small_data, tmp_path / "run", resume=True, **FAST)
    assert _notes(record) == [f"nothing to resume in {tmp_path / 'run'} (no run there): starting a new run"]
    assert capsys.readouterr().err == ""  # the library prints nothing itself
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit_run(small_data, tmp_path / "run", resume=True, **FAST)  # a finished run: nothing new to say
    assert _notes(record) == []


def test_mirrored_on_one_device_says_it_runs_one_replica_without_the_precompute(small_data, tmp_path, capsys):
    import warnings

    from keras_lpips.training import fit_run

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        summary = fit_run(small_data, tmp_path / "run", strategy="mirrored", **{**FAST, "mixed_precision": "bf16"})
    assert summary["replicas"] == 1
    assert _notes(record) == [
        "strategy mirrored: 1 replica (this machine offers it one device); lin mode's frozen-backbone "
        "precompute is off under it (the backbone runs at every step; strategy auto on one device, or one-device, keeps it)"
    ]
    assert capsys.readouterr().err == ""
    header, *rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    last = dict(zip(header.split(","), rows[-1].split(",")))
    assert float(last["val_2afc"]) == pytest.approx(summary["final"]["val_2afc"], abs=1e-6)  # validated in float32


# --- history.csv and progress ---------------------------------------------------------------------


def test_history_csv_writes_float32_values_as_such(tmp_path):
    from keras_lpips.training.run_folder import RunFolder

    row = {"epoch": 10, "lr": 1e-4 * (1 - 4 / 5), "loss": 0.6929503083229065, "2afc": 0.699999988079071,
           "val_loss": 0.6914182305335999, "val_2afc": 0.7000000476837158, "train_seconds": 1.732,
           "triplets_per_second": 115.5}  # fmt: skip
    assert row["lr"] == 1.9999999999999995e-05
    RunFolder(tmp_path).write_history([row, {**row, "lr": 1e-4}])
    assert (tmp_path / "history.csv").read_text().splitlines()[1:] == [
        "10,2e-05,0.6929503,0.7,0.69141823,0.70000005,1.732,115.5",
        "10,0.0001,0.6929503,0.7,0.69141823,0.70000005,1.732,115.5",
    ]


def test_the_frozen_backbone_precompute_shows_a_bar_on_a_terminal(small_data, tmp_path, capsys, monkeypatch):
    """As the training's own bar: on a terminal only, in progress mode only."""
    from keras_lpips.training import fit_run

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    fit_run(small_data, tmp_path / "run", **{**FAST, "progress": True})
    out = capsys.readouterr().out
    assert "frozen backbone: computing the val triplets' means once (20 triplets)" in out
    assert "20/20" in out and "triplet" in out.split("computing the val")[1].split("untrained")[0]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    fit_run(small_data, tmp_path / "again", **{**FAST, "progress": True})
    out = capsys.readouterr().out
    assert "/20" not in out.split("untrained")[0]


# --- sizes that would exhaust memory are refused up front ------------------------------------------


@pytest.mark.parametrize("command", ["fit", "eval"])
def test_fit_and_eval_refuse_a_batch_or_load_size_past_the_largest_in_one_line(small_data, tmp_path, command):
    """A batch of 10**12 triplets spun TensorFlow's batching thread forever, deaf to SIGINT and
    SIGTERM; a load size of 10**9 was an out-of-memory traceback: both are one line, before any
    triplet is read."""
    from keras_lpips.argument_checks import MAX_BATCH_SIZE, MAX_LOAD_SIZE
    from tests.helpers import RANDOM, one_error_line, run_cli

    common = ("fit", "--data", small_data, "--out", tmp_path / "run", "--epochs", "1", "--decay-epochs", "0")
    if command == "eval":
        common = ("eval", "--data", small_data, *RANDOM)
    for name, value, largest in (("batch_size", 10**12, MAX_BATCH_SIZE), ("load_size", 10**9, MAX_LOAD_SIZE)):
        sizes = {"load_size": 32, name: value}
        result = run_cli(*common, *(f"--{key.replace('_', '-')}={size}" for key, size in sizes.items()))
        line = one_error_line(result)  # the CLI says --load-size, load_size=... or batch_size
        assert result.returncode == 2 and re.fullmatch(rf"error: (--)?{name[:-5]}[-_]size must be an integer from 1 to {largest}\. "
                                                       rf"Received: (--)?{name[:-5]}[-_]size[= ]{value}", line), line
    assert not (tmp_path / "run").exists()
