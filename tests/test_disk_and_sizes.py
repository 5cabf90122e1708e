"""Full disks and absurd sizes (issue 12, part 7): every write refused for lack of space is one
line naming the path and the space (exit code 1), leaves nothing half-written and no temporary
behind; what a killed writer left is removed by the next write of the same target; work whose
size is known up front is refused before it starts; `data synth` streams with bounded memory.

How a full disk is made here, without filling the real one:
- `file_size_limit(n)`: the process's RLIMIT_FSIZE, so that the kernel refuses any write past n
  bytes of a file with EFBIG, from Python and from TensorFlow's C++ writers alike (Python ignores
  SIGXFSZ). Needs no privilege; restored afterwards.
- `tiny_tmpfs`: a real file system of a few MB (ENOSPC), where this user may mount one (root in
  a container that allows it); skipped elsewhere.
- `files.open` patched to fail with each errno (ENOSPC, EDQUOT, EFBIG), for `atomic_write`.
- `shutil.disk_usage` / `available_memory_bytes` patched to report little free space or memory,
  for the checks made up front.
"""

import contextlib
import errno
import hashlib
import os
import pathlib
import pty
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from keras_lpips import disk_space, files
from keras_lpips.errors import DiskFullError, InsufficientMemoryError
from keras_lpips.weights import cache_folder
from tests.helpers import COMMAND, RANDOM, FailingWrites, one_error_line, pin_features, run_cli, run_installed

SMALL_EXPORT = ("--net", "alex", *RANDOM)
SMALL_FIT = ("--backbone-weights", "random", "--layers", "2", "--load-size", "32", "--epochs", "1",
             "--decay-epochs", "0", "--batch-size", "2", "--mixed-precision", "off", "--quiet")  # fmt: skip


# --- making a disk full ---------------------------------------------------------------------


@contextlib.contextmanager
def file_size_limit(limit):
    """Writes past `limit` bytes of any file fail with EFBIG while the block runs (RLIMIT_FSIZE,
    soft limit only: raised back afterwards)."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN  # Python's default: EFBIG, not a signal
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 4 MB tmpfs mounted at tmp_path/"disk" (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def little_free_space(monkeypatch, free=10**6):
    """`shutil.disk_usage` reports `free` bytes free everywhere (for the checks made up front)."""
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: type(usage)(usage.total, usage.total - free, free))


def litter(folder):
    """What no run may leave behind in `folder`: hidden temporaries and partial files."""
    folder = pathlib.Path(folder)
    if not folder.exists():
        return []
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".part"))
    )


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_images(folder, n=3, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


# --- files: one error for every way a disk says it is full -----------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG], ids=["ENOSPC", "EDQUOT", "EFBIG"])
def test_a_full_disk_is_one_error_naming_the_path_and_the_space(tmp_path, monkeypatch, code):
    monkeypatch.setattr(files, "open", FailingWrites.opener(code), raising=False)
    target = tmp_path / "out.bin"
    with pytest.raises(DiskFullError) as caught:
        files.atomic_write(target, b"x" * 5000)
    message = str(caught.value)
    assert message.startswith(f"Cannot write {target}: {os.strerror(code)} (needs about 5.0 kB; ")
    assert message.endswith(" free on its disk)") and "\n" not in message
    assert caught.value.path == target and caught.value.needed == 5000 and caught.value.free > 0
    assert list(tmp_path.iterdir()) == []


def test_tensorflow_disk_full_errors_are_recognised():
    import tensorflow as tf

    full = tf.errors.ResourceExhaustedError(None, None, "/x/variables_temp/part-0; No space left on device [Op:SaveV2]")
    assert disk_space.disk_full_reason(full) == "No space left on device"
    assert disk_space.disk_full_reason(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")) is None
    assert disk_space.disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_space.disk_full_reason(ValueError("No space left on device")) is None  # only OSErrors and TensorFlow's


def test_check_disk_space_names_both_numbers(tmp_path, monkeypatch):
    little_free_space(monkeypatch, free=1_500_000)
    disk_space.check_disk_space(tmp_path / "new" / "file", 1_000_000, "It")
    with pytest.raises(DiskFullError, match=r"^It needs about 2.0 MB of disk space but 1.5 MB is free at .*new/file; "):
        disk_space.check_disk_space(tmp_path / "new" / "file", 2_000_000, "It")


# --- files: a killed writer's temporaries are removed by the next write ----------------------


KILLED_WRITER = """
import sys, time
from keras_lpips import files
target, kind = sys.argv[1], sys.argv[2]
opener = files.atomic_path(target) if kind == "file" else files.atomic_directory(target)
with opener as tmp:
    if kind == "file":
        open(tmp, "wb").write(b"half")
    else:
        (tmp / "part").write_bytes(b"half")
    print(tmp, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path, kind):
    target = tmp_path / "out"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target), kind], stdout=subprocess.PIPE, text=True)
    temporary = pathlib.Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait()
    writer.stdout.close()
    assert temporary.exists() and not target.exists()  # killed outright: nothing under the final name
    if kind == "file":
        files.atomic_write(target, b"whole")
        assert target.read_bytes() == b"whole"
    else:
        with files.atomic_directory(target) as staging:
            (staging / "part").write_bytes(b"whole")
    assert not temporary.exists() and litter(tmp_path) == []


def test_only_dead_writers_temporaries_of_the_same_target_are_removed(tmp_path):
    gone, running = dead_pid(), os.getppid()
    stale = tmp_path / f".out.csv.{gone}-0123abcd.tmp"
    alive = tmp_path / f".out.csv.{running}-0123abcd.tmp"  # a writer still at work: kept
    mine = tmp_path / f".out.csv.{os.getpid()}-0123abcd.tmp"  # another thread of this process: kept
    other = tmp_path / f".other.csv.{gone}-0123abcd.tmp"  # another target's: not this write's business
    odd = tmp_path / ".out.csv.notes.tmp"  # not a temporary's name
    for path in (stale, alive, mine, other, odd):
        path.write_bytes(b"x")
    files.atomic_write(tmp_path / "out.csv", "a,b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.csv", alive.name, mine.name, other.name, odd.name])


# --- data synth -----------------------------------------------------------------------------------


def test_synth_refuses_an_absurd_count_up_front(tmp_path):
    from keras_lpips.data.synth import synthesize

    started = time.perf_counter()
    with pytest.raises(DiskFullError) as caught:
        synthesize(tmp_path / "synth", 10**9, 0, n_jnd=0)
    assert time.perf_counter() - started < 5
    assert str(caught.value).startswith("A synthetic set of 1,000,000,000 triplets and pairs needs about ")
    assert " of disk space but " in str(caught.value) and " is free at " in str(caught.value)
    assert not (tmp_path / "synth").exists()


def test_installed_synth_refuses_an_absurd_count_in_one_line(tmp_path):
    started = time.perf_counter()
    result = run_installed("data", "synth", "--out", tmp_path / "synth", "--train", "1000000000", "--val", "0")
    assert time.perf_counter() - started < 30  # the command's start (TensorFlow's import); the refusal takes ms
    line = one_error_line(result)
    assert result.returncode == 1
    assert "1,000,000,000" in line and " TB of disk space but " in line and " is free at " in line
    assert not (tmp_path / "synth").exists()


def test_synth_streams_a_bounded_number_of_items_with_progress(tmp_path, monkeypatch):
    """Items are queued a few per thread, not all at once: when the first is reported done, few have
    started; progress is reported for every item, in order."""
    from keras_lpips.data import synth

    started, first_report, reports = [], [], []
    original = synth._write_item

    def write_item(source, seed, stream, index, folder):
        started.append(index)
        return original(source, seed, stream, index, folder)

    def progress(done, total):
        if not first_report:
            first_report.append(len(started))
        reports.append((done, total))

    monkeypatch.setattr(synth, "_write_item", write_item)
    synth.synthesize(tmp_path / "synth", 200, 0, n_jnd=0, workers=2, progress=progress)
    assert first_report[0] <= (synth.IN_FLIGHT_PER_WORKER + 1) * 2
    assert reports == [(k, 200) for k in range(1, 201)]


def test_synth_interrupted_leaves_no_staging_folder(tmp_path):
    from keras_lpips.data.synth import synthesize

    def interrupt(done, total):
        if done == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "synth", 500, 0, n_jnd=0, workers=2, progress=interrupt)
    assert not (tmp_path / "synth").exists()  # the staging folder and the folders it made for it


def test_synth_killed_leaves_a_staging_folder_the_next_run_removes(tmp_path):
    from keras_lpips.data.synth import synthesize

    out = tmp_path / "synth"
    staging = out / "2afc" / "train" / f".traditional.{dead_pid()}-0123abcd.tmp"
    (staging / "ref").mkdir(parents=True)
    (staging / "ref" / "000000.png").write_bytes(b"half")
    synthesize(out, 4, 2, n_jnd=0)
    assert litter(out) == [] and len(list((out / "2afc" / "train" / "traditional" / "ref").iterdir())) == 4


def test_synth_disk_full_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "synth"
    with file_size_limit(1000):  # every PNG is larger
        result = run_cli("data", "synth", "--out", out, "--train", "20", "--val", "0")
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith(f"error: Cannot write {out / '2afc' / 'train' / 'traditional'}: File too large (needs about ")
    assert not out.exists()


@pytest.mark.slow
def test_installed_synth_shows_progress_on_a_terminal(tmp_path):
    """On a terminal, stderr shows a progress bar that moves (percentages), and stdout the result."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen(
        [COMMAND, "data", "synth", "--out", str(tmp_path / "synth"), "--train", "300", "--val", "0"],
        stdout=subprocess.PIPE, stderr=follower, env=env, text=True,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the command closed its end
            break
        if not chunk:
            break
        seen += chunk
    stdout = process.communicate(timeout=120)[0]
    os.close(leader)
    assert process.returncode == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert "synthesizing" in text and "100%" in text and len({p for p in text.split() if p.endswith("%")}) >= 2
    assert "wrote 300 train" in stdout


# --- export ---------------------------------------------------------------------------------------


def test_export_refuses_up_front_when_the_model_cannot_fit(tmp_path, monkeypatch):
    from keras_lpips import LPIPS
    from keras_lpips.export import estimate_export_bytes, export_savedmodel, export_tflite

    metric = LPIPS(net="alex", backbone_weights=None, input_range=(0, 1))
    weights = 4 * sum(int(np.prod(v.shape)) for v in metric.weights)
    assert weights < estimate_export_bytes(metric) < weights + 3 * 10**6
    assert estimate_export_bytes(metric, "tflite", "dynamic") == estimate_export_bytes(metric)  # its SavedModel first
    little_free_space(monkeypatch)
    with pytest.raises(DiskFullError, match=r"^A SavedModel of alex LPIPS needs about 1\d.\d MB of disk space but 1.0 MB is free"):
        export_savedmodel(metric, tmp_path / "models")
    with pytest.raises(DiskFullError, match=r"^A TFLite export of alex LPIPS \(quantization fp16\) needs about .* but 1.0 MB is free"):
        export_tflite(metric, tmp_path / "m.tflite", quantize="fp16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_export_disk_full_is_one_line_and_leaves_nothing(tmp_path, fmt):
    out = tmp_path / "models" / ("lpips" if fmt == "savedmodel" else "lpips.tflite")
    with file_size_limit(10**6):  # the weights' file is 10 MB
        result = run_cli("export", "--format", fmt, "--out", out, *SMALL_EXPORT)
    line = one_error_line(result)
    assert result.returncode == 1
    named = out / "1" if fmt == "savedmodel" else out
    assert line.startswith(f"error: Cannot write {named}: File too large (needs about 1")
    assert line.endswith(" free on its disk)")
    assert litter(tmp_path) == [] and not out.exists()


def test_export_on_a_full_tmpfs_is_one_line_and_leaves_nothing(tiny_tmpfs, monkeypatch):
    """A real ENOSPC inside TensorFlow's SavedModel writer (the check made up front switched off)."""
    monkeypatch.setattr("keras_lpips.export.check_disk_space", lambda *args: None)
    result = run_cli("export", "--format", "savedmodel", "--out", tiny_tmpfs / "lpips", *SMALL_EXPORT)
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith(f"error: Cannot write {tiny_tmpfs / 'lpips' / '1'}: No space left on device (needs about 1")
    assert litter(tiny_tmpfs) == [] and not (tiny_tmpfs / "lpips" / "1").exists()


@pytest.mark.slow
def test_installed_export_on_a_full_tmpfs_is_refused_up_front(tiny_tmpfs):
    result = run_installed("export", "--format", "tflite", "--out", tiny_tmpfs / "lpips.tflite", *SMALL_EXPORT)
    line = one_error_line(result)
    assert result.returncode == 1
    assert "A TFLite export of alex LPIPS (quantization none) needs about " in line and " MB is free at " in line
    assert list(tiny_tmpfs.iterdir()) == []


# --- fit ------------------------------------------------------------------------------------------


def test_fit_refuses_up_front_when_its_checkpoints_cannot_fit(tiny_bapps, tmp_path, monkeypatch):
    from keras_lpips.training import fit_run

    little_free_space(monkeypatch)
    with pytest.raises(DiskFullError, match=r"^The training run in .*run needs about \d+.\d MB of disk space but 1.0 MB is free"):
        fit_run(tiny_bapps, tmp_path / "run", layers=2, load_size=32, backbone_weights="random", epochs=1,
                decay_epochs=0, batch_size=2, mixed_precision="off", progress=False)  # fmt: skip
    assert litter(tmp_path) == []


def test_fit_disk_full_at_a_checkpoint_is_one_line_and_leaves_nothing(tiny_bapps, tmp_path):
    run = tmp_path / "run"
    with file_size_limit(200_000):  # a checkpoint of AlexNet's first two layers: 1.3 MB
        result = run_cli("fit", "--data", tiny_bapps, "--out", run, *SMALL_FIT)
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith(f"error: Cannot write {run / 'checkpoint' / 'epoch-0001.npz'}: File too large (needs about 1.")
    assert litter(run) == [] and not (run / "checkpoint" / "epoch-0001.npz").exists()


# --- matrix ---------------------------------------------------------------------------------------


def test_matrix_out_disk_full_is_one_line_and_leaves_nothing(tmp_path):
    folder = make_images(tmp_path / "images")
    out = tmp_path / "matrix.csv"
    with file_size_limit(40):  # the CSV is longer
        result = run_cli("matrix", folder, "--out", out, *RANDOM)
    line = one_error_line(result)
    assert result.returncode == 1
    assert line.startswith(f"error: Cannot write {out}: File too large (")
    assert litter(tmp_path) == [] and not out.exists()


def test_matrix_refuses_up_front_what_cannot_fit(tmp_path, monkeypatch):
    folder = make_images(tmp_path / "images")
    out = tmp_path / "matrix.csv"
    little_free_space(monkeypatch, free=50)
    result = run_cli("matrix", folder, "--out", out, *RANDOM)
    assert result.returncode == 1
    line = one_error_line(result)  # a header of 3 names of 7 characters, then 3 rows of a name and 3 distances
    assert line == f"error: A 3 x 3 distance matrix as CSV needs about 130 B of disk space but 50 B is free at {out}; " \
        "free some space or write elsewhere"
    assert not out.exists()

    monkeypatch.setattr("keras_lpips.memory.available_memory_bytes", lambda: 20)
    result = run_cli("matrix", folder, "--out", out, *RANDOM)
    assert result.returncode == 1
    line = one_error_line(result)
    assert line == "error: A 3 x 3 distance matrix (9 distances) needs about 36 B of memory but 20 B is available"


def test_distance_matrix_refuses_up_front_what_cannot_fit_in_memory(monkeypatch):
    from keras_lpips import LPIPS
    from keras_lpips.pairwise import cross_distance_matrix, distance_matrix, matrix_memory_bytes

    assert matrix_memory_bytes(100_000, 100_000) == 4 * 10**10
    metric = LPIPS(net="alex", backbone_weights=None, input_range=(0, 1))
    images = np.zeros((3, 32, 32, 3), np.float32)
    monkeypatch.setattr("keras_lpips.memory.available_memory_bytes", lambda: 20)
    with pytest.raises(InsufficientMemoryError, match=r"^A 3 x 3 distance matrix \(9 distances\) needs about 36 B of memory"):
        distance_matrix(metric, images)
    with pytest.raises(MemoryError, match=r"^A 3 x 2 distance matrix"):
        cross_distance_matrix(metric, images, images[:2])


# --- the weight cache -----------------------------------------------------------------------------


def _alexnet_state():
    rng = np.random.default_rng(1)
    state = {}
    for key in ("features.0", "features.3", "features.6", "features.8", "features.10"):
        state[f"{key}.weight"] = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
        state[f"{key}.bias"] = rng.standard_normal(4).astype(np.float32)
    return state


def test_weights_cache_fill_on_a_full_disk_is_one_line_and_leaves_nothing(monkeypatch):
    from keras_lpips.weights import pretrained

    state = _alexnet_state()
    pin_features(monkeypatch, "alex", state)
    monkeypatch.delenv("KERAS_LPIPS_OFFLINE")

    def source(spec, progress):
        """a source"""
        return state

    monkeypatch.setattr(pretrained, "_from_torchvision", source)
    with file_size_limit(200):  # the converted features' .npz is larger
        result = run_cli("weights", "fetch", "--net", "alex")
    line = one_error_line(result)
    cached = cache_folder.cache_dir() / "alex-imagenet-features.npz"
    assert result.returncode == 1 and line.startswith(f"error: Cannot write {cached}: File too large (needs about ")
    assert list(cached.parent.iterdir()) == []


def test_weights_download_on_a_full_disk_removes_its_partial_file(server, tmp_path):
    from keras_lpips.weights.cache import download

    payload = bytes(range(256)) * 40
    server.files = {"w.pth": payload}
    dest = tmp_path / "w.pth"
    with file_size_limit(4000):
        with pytest.raises(DiskFullError, match=rf"^Cannot write {dest}: File too large \("):
            download(server.url("w.pth"), dest, hashlib.sha256(payload).hexdigest())
    assert list(tmp_path.iterdir()) == []


def test_weights_download_larger_than_the_free_space_is_refused_before_it_starts(server, tmp_path, monkeypatch):
    from keras_lpips.weights.cache import download

    server.files = {"w.pth": b"x" * 5000}
    little_free_space(monkeypatch, free=100)
    with pytest.raises(DiskFullError, match=r"^Downloading .*w.pth needs about 5.0 kB of disk space but 100 B is free"):
        download(server.url("w.pth"), tmp_path / "w.pth", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_a_disk_full_error_no_writer_reported_is_still_one_line(tmp_path, monkeypatch):
    """The command's last resort (cli/app.py): an OSError ENOSPC that escaped every writer."""
    path = tmp_path / "somewhere.bin"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("keras_lpips.data.synth.synthesize", full)
    result = run_cli("data", "synth", "--out", tmp_path / "synth", "--train", "1", "--val", "0")
    assert result.returncode == 1
    assert one_error_line(result).startswith(f"error: Cannot write {path}: No space left on device (")
