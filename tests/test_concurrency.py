"""Two processes at once (issue 12, part 3), as real concurrent processes: a shared weight cache,
one export folder or file, one training run folder. Nothing may be corrupted, and nothing
replaced silently: one process wins, the other waits and reuses its work, or is refused in one line.

The library's mechanisms run in processes started here (`multiprocessing`, spawn: nothing of
this process's TensorFlow state is shared); the commands run as the installed `keras-lpips`
(`subprocess.Popen`, started together). A `sitecustomize.py` written for the test points the
installed command's torchvision source at the local HTTP server (conftest's `server`) and pins
the fake file's digests, as `monkeypatch` does in this process.
"""

import json
import multiprocessing
import os
import pathlib
import pickle
import subprocess
import time
import types

import numpy as np
import pytest

from keras_lpips import files
from keras_lpips.errors import InputError, InUseError
from keras_lpips.file_lock import file_lock
from tests.helpers import COMMAND, RANDOM, one_error_line, pin_features, run_installed

SMALL_FIT = ("--layers", "2", "--load-size", "32", "--epochs", "1", "--decay-epochs", "0", "--batch-size", "2",
             "--mixed-precision", "off", "--quiet", *RANDOM)  # fmt: skip
STAND_IN = types.SimpleNamespace(net="alex", weights=[])  # a metric of no size, for exports whose _save is replaced
SITECUSTOMIZE = '''\
import json, os
_patch = os.environ.get("KERAS_LPIPS_TEST_SOURCES")
if _patch:
    from keras_lpips.weights import sources
    for _name, _value in json.loads(_patch).items():
        if isinstance(getattr(sources, _name), dict):
            getattr(sources, _name).update(_value)
        else:
            setattr(sources, _name, _value)
'''


def start_installed(*args, env=None):
    """`keras-lpips ARGS` started as a subprocess (not waited for), in this environment plus `env`."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update({k: str(v) for k, v in (env or {}).items()})
    return subprocess.Popen(
        [COMMAND, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def finish(processes, timeout=240):
    """[(returncode, stdout, stderr)] of started processes, in order."""
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def litter(folder):
    """Hidden temporaries, partial downloads and lock files left under `folder`."""
    return sorted(
        str(p.relative_to(folder)) for p in pathlib.Path(folder).rglob("*")
        if p.name.endswith((".tmp", ".part", ".lock")) or (p.name.startswith(".") and p.name != ".keras")
    )  # fmt: skip


def in_processes(target, args_list):
    """Runs `target(*args)` for each args in separate spawned processes started together (they
    meet at a barrier first); returns their results ("ok: ..." or "error: Type: message")."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier, results = manager.Barrier(len(args_list)), manager.dict()
        processes = [
            context.Process(target=_run_after_barrier, args=(target, args, barrier, results, i))
            for i, args in enumerate(args_list)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0, process.exitcode
        return [results[i] for i in range(len(args_list))]


def _run_after_barrier(target, args, barrier, results, index):
    barrier.wait(timeout=60)
    try:
        results[index] = f"ok: {target(*args)}"
    except Exception as error:  # noqa: BLE001 - reported to the parent
        results[index] = f"error: {type(error).__name__}: {error}"


# --- files: an output created by two processes at once -----------------------------------------


def _write_new(path, text):
    files.atomic_write(path, text * 100_000, overwrite=False)
    return text


def test_two_processes_creating_one_file_one_wins_the_other_is_refused(tmp_path):
    """`atomic_write(..., overwrite=False)` from four processes at once: exactly one creates the
    file, whole; the others get FileExistsError; no temporary is left."""
    target = tmp_path / "out.txt"
    results = in_processes(_write_new, [(target, letter) for letter in "abcd"])
    winners = [r for r in results if r.startswith("ok: ")]
    assert len(winners) == 1, results
    assert all("FileExistsError" in r for r in results if r not in winners), results
    assert target.read_text() == winners[0][4:] * 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def _hold_lock_then_release(path, seconds):
    with file_lock(path, timeout=0):
        time.sleep(seconds)
    return "released"


def test_file_lock_excludes_another_process(tmp_path):
    """Two processes asking for one lock with timeout=0: one holds it, the other is refused."""
    results = in_processes(_hold_lock_then_release, [(tmp_path / "entry", 2.0), (tmp_path / "entry", 2.0)])
    assert sorted(r.split(":")[0] for r in results) == ["error", "ok"], results
    assert any("TimeoutError" in r and "still held" in r for r in results), results


# --- one embed file -------------------------------------------------------------------------------


def _image_folder(folder, count=24, side=32):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{number:02d}.png")
    return folder


def _embed(folder, out, chunk=2):
    from keras_lpips import LPIPS
    from keras_lpips.resumable_embedding import embed_folder

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
    return embed_folder(metric, folder, out, chunk=chunk, batch_size=chunk)


def test_two_embeds_into_one_file(tmp_path):
    """Two `embed_folder` into one file started together (the second writing smaller chunks, so
    slower): each either completes it or is refused at once (InUseError), never fails midway (the
    first to end deleted the chunks the other was writing); the file is a whole embedding and
    nothing else is left beside it."""
    from keras_lpips.embedding_files import read_embeddings

    folder, out = _image_folder(tmp_path / "images"), tmp_path / "e.npz"
    results = in_processes(_embed, [(folder, out, 4), (folder, out, 1)])
    assert all(r.startswith("ok: ") or "InUseError" in r and "being written by another embed process" in r
               for r in results), results  # fmt: skip
    assert any(r.startswith("ok: ") for r in results), results
    assert len(read_embeddings(out).names) == 24 and sorted(p.name for p in tmp_path.iterdir()) == ["e.npz", "images"]


def test_embed_refuses_a_file_another_process_writes(tmp_path):
    """The API: `embed_folder` into a file whose lock another process holds raises InUseError at
    once; nothing is written."""
    folder, out = _image_folder(tmp_path / "images", count=2), tmp_path / "e.npz"
    holder = multiprocessing.get_context("spawn").Process(target=_hold_lock_then_release, args=(out, 30.0))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not pathlib.Path(f"{out}.lock").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(InUseError, match=rf"^{out} is being written by another embed process \(it holds {out}.lock\)"):
            _embed(folder, out)
    finally:
        holder.terminate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npz.lock", "images"]  # the holder's, killed


# --- the weight cache ------------------------------------------------------------------------------


def fake_alexnet_file():
    """(file name, bytes, state) of a plain-pickle torchvision-style AlexNet state dict named by
    its sha256 prefix, as torchvision names its files."""
    import hashlib

    rng = np.random.default_rng(7)
    state = {}
    for prefix in ("features.0", "features.3", "features.6", "features.8", "features.10"):
        state[f"{prefix}.weight"] = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
        state[f"{prefix}.bias"] = rng.standard_normal(4).astype(np.float32)
    data = pickle.dumps(state, protocol=4)
    return f"alexnet-owt-{hashlib.sha256(data).hexdigest()[:8]}.pth", data, state


@pytest.fixture
def fake_torchvision(server, tmp_path, monkeypatch):
    """The local server serving a fake AlexNet file slowly (3 s per request, so that the two overlap), and the environment
    that makes an installed `keras-lpips` fetch it (a sitecustomize patching its sources) into
    an empty cache. Returns that environment."""
    name, data, state = fake_alexnet_file()
    server.files, server.delay = {name: data}, 3.0
    digest = pin_features(monkeypatch, "alex", state)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    patch = {
        "TORCHVISION_URL": server.url("{file}"),
        "TORCHVISION_FILES": {"alex": name},
        "IMAGENET_FEATURES_SHA256": {"alex": digest},
    }
    return {
        "KERAS_HOME": tmp_path / "home", "KERAS_LPIPS_OFFLINE": "0", "PIP_NO_INDEX": "1",
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "KERAS_LPIPS_TEST_SOURCES": json.dumps(patch),
    }  # fmt: skip


@pytest.mark.slow
def test_two_weight_fetches_into_an_empty_cache(fake_torchvision, server):
    """Two `keras-lpips weights fetch` at once into an empty cache: both succeed, the file is
    downloaded once (the second waits for the first's lock, then reads its entry), and the cache
    is whole: a later offline call reads it, and nothing else (.part, .lock, .tmp) is left."""
    env = fake_torchvision
    results = finish([start_installed("weights", "fetch", "--net", "alex", env=env) for _ in range(2)])
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "alex: 10 tensors, 260 parameters, cached in" in result.stdout
    assert server.ranges == [None]  # one download, never two appending to one .part
    cache = pathlib.Path(env["KERAS_HOME"]) / "keras_lpips"
    assert litter(cache) == []
    offline = finish([start_installed("weights", "fetch", "--net", "alex", env={**env, "KERAS_LPIPS_OFFLINE": "1"})])[0]
    assert offline.returncode == 0, offline.stderr


def _fetch(home, url, name, digest):
    os.environ.update(KERAS_HOME=str(home), KERAS_LPIPS_OFFLINE="0", PIP_NO_INDEX="1")
    from keras_lpips.weights import pretrained, sources

    sources.TORCHVISION_URL, sources.TORCHVISION_FILES["alex"] = url, name
    sources.IMAGENET_FEATURES_SHA256["alex"] = digest
    state = pretrained.imagenet_state_dict("alex")
    return sum(v.size for v in state.values())


@pytest.mark.slow
def test_two_processes_fill_the_cache_once(server, tmp_path, monkeypatch):
    """`imagenet_state_dict` in two processes at once (the API): one download, every process
    gets the weights, the cache is whole."""
    name, data, state = fake_alexnet_file()
    server.files, server.delay = {name: data}, 0.5
    digest = pin_features(monkeypatch, "alex", state)
    results = in_processes(_fetch, [(tmp_path / "home", server.url("{file}"), name, digest)] * 2)
    assert results == ["ok: 260"] * 2
    assert server.ranges == [None]
    assert litter(tmp_path / "home") == []


# --- exports ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fmt, out", [("savedmodel", "models"), ("tflite", "lpips.tflite")])
def test_two_exports_into_one_place(tmp_path, fmt, out):
    """Two `keras-lpips export` at once to one version folder, or one TFLite file: one writes it,
    the other is refused in one line (the folder or file appeared while it worked, or was there);
    never both reporting success with one replaced."""
    args = ("export", "--format", fmt, "--out", tmp_path / out, "--net", "alex", "--layers", "1", *RANDOM, "--lin-weights", "none")
    results = finish([start_installed(*args) for _ in range(2)])
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [(r.returncode, r.stderr) for r in results]
    refused = next(r for r in results if r.returncode == 2)
    assert "already exists; pass --overwrite to replace it" in one_error_line(refused)
    written = tmp_path / out / "1" / "saved_model.pb" if fmt == "savedmodel" else tmp_path / out
    assert written.is_file() and written.stat().st_size > 0
    assert litter(tmp_path) == []


def test_a_version_folder_that_appears_during_an_export_is_not_replaced(tmp_path, monkeypatch):
    """The API, the other process simulated: while `export_savedmodel` saves, the version folder
    appears (another export's); it is refused, and the other's folder is kept as it was."""
    import keras_lpips.export as export_module

    base = tmp_path / "models"

    def save_while_another_process_exports(metric, path, max_pixels=None):
        pathlib.Path(path).mkdir()
        (pathlib.Path(path) / "saved_model.pb").write_bytes(b"mine")
        (base / "1").mkdir(parents=True)
        (base / "1" / "saved_model.pb").write_bytes(b"theirs")

    monkeypatch.setattr(export_module, "_save", save_while_another_process_exports)
    with pytest.raises(InputError, match="already exists; pass overwrite=True to replace it"):
        export_module.export_savedmodel(STAND_IN, base, 1)
    assert (base / "1" / "saved_model.pb").read_bytes() == b"theirs"
    assert sorted(p.name for p in base.iterdir()) == ["1"]


def test_a_tflite_file_that_appears_during_an_export_is_not_replaced(tmp_path, monkeypatch):
    """Likewise for a TFLite file: written with `overwrite=False` (a hard link, created or refused
    in one step), never renamed over the file another process wrote meanwhile."""
    import tensorflow as tf

    import keras_lpips.export as export_module

    target = tmp_path / "lpips.tflite"

    class Converter:
        optimizations, target_spec = [], None

        @classmethod
        def from_saved_model(cls, *args, **kwargs):
            return cls()

        def convert(self):
            target.write_bytes(b"theirs")  # another process finished first
            return b"mine"

    monkeypatch.setattr(export_module, "_save", lambda metric, path, max_pixels=None: pathlib.Path(path).mkdir())
    monkeypatch.setattr(tf.lite, "TFLiteConverter", Converter)
    with pytest.raises(InputError, match="already exists; pass overwrite=True to replace it"):
        export_module.export_tflite(STAND_IN, target)
    assert target.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["lpips.tflite"]
    target.unlink()
    export_module.export_tflite(STAND_IN, target, overwrite=True)  # with overwrite, the last one wins, whole
    assert target.read_bytes() == b"mine"


# --- training runs ----------------------------------------------------------------------------


def _fit_until(data, run, go, results):
    """`fit_run` into `run`, holding on at the end of its epoch until the file `go` exists."""
    import keras

    from keras_lpips.training import fit_run

    class WaitForGo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            deadline = time.monotonic() + 180
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.05)

    summary = fit_run(data, run, callbacks=[WaitForGo()], backbone_weights="random", layers=2, load_size=32, epochs=1,
                      decay_epochs=0, batch_size=2, mixed_precision="off", progress=False)  # fmt: skip
    results["epochs_done"] = summary["epochs_done"]


@pytest.mark.slow
def test_two_fits_into_one_run_folder(tiny_bapps, tmp_path):
    """A second `keras-lpips fit` (the installed command) into a run folder that a running `fit`
    (another process, held at the end of its epoch) trains into fails at once, in one line
    (exit 1); the first run then completes untouched, and its lock is gone."""
    run, go = tmp_path / "run", tmp_path / "go"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        first = context.Process(target=_fit_until, args=(tiny_bapps, run, go, results))
        first.start()
        try:
            deadline = time.monotonic() + 120
            while not (run / "checkpoint" / "latest.json").exists():  # training, and holding the lock
                assert first.is_alive() and time.monotonic() < deadline
                time.sleep(0.05)
            assert pathlib.Path(f"{run}.lock").exists()
            second = run_installed("fit", "--data", tiny_bapps, "--out", run, *SMALL_FIT, "--resume")
            assert second.returncode == 1 and "is in use by another training process" in one_error_line(second)
        finally:
            go.touch()
            first.join(timeout=120)
        assert first.exitcode == 0 and results["epochs_done"] == 1
    assert (run / "model.keras").is_file() and json.loads((run / "run.json").read_text())["epochs_done"] == 1
    assert not pathlib.Path(f"{run}.lock").exists()


def test_fit_refuses_a_run_folder_another_process_holds(tiny_bapps, tmp_path):
    """The API: `fit_run` into a folder whose lock another process holds raises InUseError at
    once, before any work; nothing is written."""
    from keras_lpips.training import fit_run

    run = tmp_path / "run"
    context = multiprocessing.get_context("spawn")
    holder = context.Process(target=_hold_lock_then_release, args=(run, 30.0))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not pathlib.Path(f"{run}.lock").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(InUseError, match="is in use by another training process"):
            fit_run(tiny_bapps, run, backbone_weights="random", layers=2, load_size=32, epochs=1, decay_epochs=0,
                    batch_size=2, mixed_precision="off", progress=False)  # fmt: skip
    finally:
        holder.terminate()
        holder.join()
    assert not run.exists()


# --- the LiteRT scorer's conversion ---------------------------------------------------------------


@pytest.fixture
def unconverted_home(fake_imagenet_home, tmp_path):
    """A copy of `fake_imagenet_home` (no LiteRT conversion yet), and the environment in which an
    installed `keras-lpips score` reads its weights (their digests pinned by a sitecustomize)."""
    import shutil

    from tests.helpers import fake_imagenet_pins

    home = tmp_path / "home"
    shutil.copytree(fake_imagenet_home, home)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    pins = fake_imagenet_pins(home / "keras_lpips")
    return home, {
        "KERAS_HOME": home, "KERAS_LPIPS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "KERAS_LPIPS_TEST_SOURCES": json.dumps({"IMAGENET_FEATURES_SHA256": pins}),
    }  # fmt: skip


TRIPLET = [pathlib.Path(__file__).parent.parent / "examples" / f"{name}.png" for name in ("ref", "p0", "p1")]


@pytest.mark.slow
def test_two_scores_prepare_the_litert_scorer_once(unconverted_home):
    """Two first `score` runs at once: one converts, the other waits for it and uses its file;
    same output, and the cache holds the conversion and its record, nothing else."""
    home, env = unconverted_home
    results = finish([start_installed("score", *TRIPLET, env=env) for _ in range(2)])
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert results[0].stdout == results[1].stdout
    assert sum("preparing the LiteRT scorer" in r.stderr for r in results) == 1, [r.stderr for r in results]
    assert litter(home) == [] and sorted(p.suffix for p in (home / "keras_lpips" / "litert").iterdir()) == [".json", ".tflite"]


@pytest.mark.slow
def test_a_conversion_killed_outright_leaves_nothing_once_run_again(unconverted_home):
    """SIGKILL while the LiteRT scorer is being prepared (its SavedModel written or converting),
    then `score` again: it converts, and nothing the killed run wrote is left in the cache."""
    home, env = unconverted_home
    process = start_installed("score", *TRIPLET, env=env)
    assert "preparing the LiteRT scorer" in process.stderr.readline()
    time.sleep(4)  # into the SavedModel or the conversion
    process.kill()
    process.communicate()
    again = finish([start_installed("score", *TRIPLET, env=env)])[0]
    assert again.returncode == 0, again.stderr
    left = sorted(p.name for p in (home / "keras_lpips" / "litert").iterdir())
    assert litter(home) == [] and [pathlib.Path(name).suffix for name in left] == [".json", ".tflite"], (left, again.stderr)
