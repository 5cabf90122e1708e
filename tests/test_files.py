"""keras_lpips.files: writes whole or not at all, the cross-process lock, the image suffixes
and the weight cache's paths."""

import errno
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from keras_lpips import files
from keras_lpips.errors import DiskFullError, InputError
from keras_lpips.file_lock import file_lock
from keras_lpips.pictures import save_png
from keras_lpips.weights import cache_folder
from tests.helpers import FailingWrites

REPO = pathlib.Path(__file__).resolve().parent.parent


def run_python(script, **kwargs):
    """Starts `script` in a fresh interpreter that imports this checkout's keras_lpips."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, text=True, **kwargs)


def entries(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir())


def is_temporary_of(name, target):
    """`name` is a hidden temporary `files.temporary_sibling` makes for `target`."""
    return name.startswith(f".{target}.") and name.endswith(".tmp")


# --- atomic_write / atomic_path ---------------------------------------------------------------


def test_atomic_write_bytes_and_text(tmp_path):
    target = tmp_path / "out.txt"
    assert files.atomic_write(target, b"\x00\xffbytes") == target
    assert target.read_bytes() == b"\x00\xffbytes"
    files.atomic_write(target, "text ± utf-8")  # replaces the previous content
    assert target.read_bytes() == "text ± utf-8".encode()
    assert entries(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, OSError])
def test_a_writer_failing_midway_leaves_the_target_and_no_temporary(tmp_path, error):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous content")
    with pytest.raises(error):
        with files.atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and is_temporary_of(tmp.name, "out.bin")
            with open(tmp, "wb") as f:
                f.write(b"half of the new")
            raise error("writer failed midway")
    assert target.read_bytes() == b"previous content"
    assert entries(tmp_path) == ["out.bin"]


def test_atomic_write_failing_to_write_removes_its_temporary(tmp_path, monkeypatch):
    """A write that fails after the temporary exists (a full disk) removes it."""
    target = tmp_path / "out.bin"

    monkeypatch.setattr(files, "open", FailingWrites.opener(errno.ENOSPC), raising=False)
    full = r"^Cannot write .*out.bin: No space left on device \(needs about 1.0 kB; .* free on its disk\)$"
    with pytest.raises(DiskFullError, match=full):  # a full disk is a DiskFullError, not an InputError
        files.atomic_write(target, b"x" * 1000, as_input_error=True)
    with pytest.raises(DiskFullError, match=full):
        files.atomic_write(target, b"x" * 1000)
    monkeypatch.undo()
    assert entries(tmp_path) == []


def test_as_input_error_messages(tmp_path):
    with pytest.raises(InputError, match=r"^Output folder does not exist: .*missing$"):
        files.atomic_write(tmp_path / "missing" / "out.csv", "a,b\n", as_input_error=True)
    # /proc exists but takes no new files, even for root (permission bits would not stop root).
    with pytest.raises(InputError, match=r"^Cannot write /proc/out.csv: "):
        files.atomic_write("/proc/out.csv", "a,b\n", as_input_error=True)
    with pytest.raises(FileNotFoundError):  # without it, the OSError itself
        files.atomic_write(tmp_path / "missing" / "out.csv", "a,b\n")


def test_fsync_write(tmp_path):
    files.atomic_write(tmp_path / "w.npz", b"data", fsync=True)
    assert (tmp_path / "w.npz").read_bytes() == b"data" and entries(tmp_path) == ["w.npz"]


def test_killed_writer_leaves_the_old_file_and_a_hidden_temporary_only(tmp_path):
    """A process killed (SIGKILL: no cleanup runs) halfway through a write."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    script = f"""
        import time
        from keras_lpips.files import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"new" * 1000)
                f.flush()
                print("half", flush=True)
                time.sleep(30)
    """
    with run_python(script, stdout=subprocess.PIPE) as process:
        assert process.stdout.readline().strip() == "half"
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old"
    others = [name for name in entries(tmp_path) if name != "out.bin"]
    assert len(others) == 1 and is_temporary_of(others[0], "out.bin"), others


def test_killed_png_writer_never_leaves_a_partial_png(tmp_path):
    """save_png killed as soon as a file appears (its temporary, while being written): the target
    is absent or whole."""
    target = tmp_path / "map.png"
    script = f"""
        import numpy as np
        from keras_lpips.pictures import save_png
        data = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
        save_png(data, {str(target)!r})
    """
    with run_python(script) as process:
        deadline = time.monotonic() + 30
        while not entries(tmp_path) and process.poll() is None:
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
    if target.exists():  # the kill came after the rename: then the file is complete
        expected = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
        with Image.open(target) as image:
            np.testing.assert_array_equal(np.asarray(image), expected)
    assert all(is_temporary_of(n, "map.png") for n in entries(tmp_path) if n != "map.png")


def test_save_png_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "map.png"
    save_png(np.zeros((4, 4, 3), np.uint8), target)
    old = target.read_bytes()

    def failing_save(image, fp, format=None, **params):
        pathlib.Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(DiskFullError, match=r"^Cannot write .*map.png: No space left on device \(.* free on its disk\)$"):
        save_png(np.ones((4, 4, 3), np.uint8), target)
    assert target.read_bytes() == old and entries(tmp_path) == ["map.png"]


def test_unwritable_output_directory_is_a_clear_error():
    with pytest.raises(InputError, match="Cannot write /proc/map.png"):
        save_png(np.zeros((4, 4, 3), np.uint8), "/proc/map.png")


def test_concurrent_writers_never_leave_a_partial_file(tmp_path):
    """Threads rewriting one target while another reads it: every read is one whole payload."""
    target = tmp_path / "shared.bin"
    payloads = [bytes([i]) * (256 << 10) for i in range(4)]
    files.atomic_write(target, payloads[0])
    stop, seen, errors = threading.Event(), set(), []

    def write(payload):
        try:
            for _ in range(15):
                files.atomic_write(target, payload)
        except Exception as error:  # reported below: a thread's exception does not fail the test
            errors.append(error)

    def read():
        while not stop.is_set():
            data = target.read_bytes()
            seen.add(data[:1])
            if data not in payloads:
                errors.append(f"partial read: {len(data)} bytes starting {data[:1]!r}")

    writers = [threading.Thread(target=write, args=(p,)) for p in payloads]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert not errors, errors[:3]
    assert target.read_bytes() in payloads and entries(tmp_path) == ["shared.bin"]


def test_concurrent_processes_never_leave_a_partial_file(tmp_path):
    target = tmp_path / "shared.bin"
    script = """
        import sys
        from keras_lpips.files import atomic_write
        data = bytes([int(sys.argv[1])]) * (1 << 20)
        for _ in range(20):
            atomic_write(sys.argv[2], data)
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(i), str(target)], env=env) for i in (1, 2)
    ]
    while any(p.poll() is None for p in processes):
        if target.exists():
            data = target.read_bytes()
            assert data in (b"\x01" * (1 << 20), b"\x02" * (1 << 20)), f"partial: {len(data)} bytes"
    assert [p.wait() for p in processes] == [0, 0]
    assert entries(tmp_path) == ["shared.bin"]


# --- atomic_directory -------------------------------------------------------------------------


def test_atomic_directory_appears_whole(tmp_path):
    target = tmp_path / "a" / "b"
    with files.atomic_directory(target) as staging:
        assert staging.is_dir() and staging.parent == target.parent and is_temporary_of(staging.name, "b")
        (staging / "x.txt").write_text("x")
        assert not target.exists()
    assert entries(target) == ["x.txt"] and entries(target.parent) == ["b"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with files.atomic_directory(empty) as staging:  # an empty folder is replaced
        (staging / "y").write_text("y")
    assert entries(empty) == ["y"]


def test_atomic_directory_failure_removes_the_staging_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_directory(tmp_path / "out") as staging:
            (staging / "sub").mkdir()
            (staging / "sub" / "x").write_text("x")
            raise KeyboardInterrupt
    assert entries(tmp_path) == []


def test_atomic_directory_keeps_or_replaces_a_full_target(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(OSError):
        with files.atomic_directory(target) as staging:
            (staging / "new").write_text("new")
    assert entries(tmp_path) == ["out"] and entries(target) == ["old"]
    with pytest.raises(InputError, match="^Cannot write .*out: "):
        with files.atomic_directory(target, as_input_error=True) as staging:
            (staging / "new").write_text("new")
    with files.atomic_directory(target, replace=True) as staging:
        (staging / "new").write_text("new")
    assert entries(tmp_path) == ["out"] and entries(target) == ["new"]


def test_scratch_directory_is_always_removed(tmp_path):
    with files.scratch_directory(tmp_path / "x") as scratch:
        (scratch / "f").write_text("f")
        assert is_temporary_of(scratch.name, "x")
    with pytest.raises(ValueError):
        with files.scratch_directory(tmp_path / "x") as scratch:
            (scratch / "f").write_text("f")
            raise ValueError
    assert entries(tmp_path) == []


# --- file_lock --------------------------------------------------------------------------------


def test_file_lock_excludes_another_process(tmp_path):
    target = tmp_path / "weights.npz"
    marker = tmp_path / "released"
    script = f"""
        import sys
        from keras_lpips.file_lock import file_lock
        with file_lock({str(target)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
            open({str(marker)!r}, "w").close()  # written while the lock is still held
    """
    with run_python(script, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        assert process.stdout.readline().strip() == "locked"
        assert (tmp_path / "weights.npz.lock").exists()
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"weights.npz.lock is still held by another process after 0.2 s"):
            with file_lock(target, timeout=0.2):
                pass
        assert time.monotonic() - started >= 0.2

        def release():
            time.sleep(0.3)
            process.stdin.write("go\n")
            process.stdin.flush()

        threading.Thread(target=release).start()
        with file_lock(target, timeout=20):
            assert marker.exists(), "the lock was granted while the other process held it"
    assert process.returncode == 0
    assert entries(tmp_path) == ["released"]  # the lock file is removed on release


def test_file_lock_is_reusable_and_excludes_threads(tmp_path):
    target = tmp_path / "t"
    order = []

    def hold(name):
        with file_lock(target):
            order.append(f"{name} in")
            time.sleep(0.05)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(order[i][0] == order[i + 1][0] for i in range(0, 6, 2)), order  # never interleaved
    with file_lock(target, timeout=0):
        pass
    assert entries(tmp_path) == []


# --- image suffixes and cache paths -----------------------------------------------------------


def test_the_cli_folder_listing_uses_files_image_suffixes(tmp_path, monkeypatch):
    from keras_lpips.cli import folders

    for suffix in files.IMAGE_SUFFIXES:
        (tmp_path / f"image{suffix.upper() if suffix == '.png' else suffix}").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    (tmp_path / ".map.png.1-ab.tmp").write_bytes(b"")
    listed = folders._images_in(tmp_path)
    assert sorted(listed) == sorted(f"image{s.upper() if s == '.png' else s}" for s in files.IMAGE_SUFFIXES)
    monkeypatch.setattr(files, "IMAGE_SUFFIXES", (".webp",))
    assert sorted(folders._images_in(tmp_path)) == ["image.webp"]


def test_every_folder_listing_skips_hidden_files_and_what_is_not_a_file(tmp_path):
    """pairs/matrix, embed (recursive) and synth list a folder alike: macOS' "._a.png", hidden
    folders and a folder named like an image are not images."""
    from keras_lpips.cli import folders
    from keras_lpips.data.synth_patches import Folder
    from keras_lpips.embedding_files import image_names

    for name in ("a.png", "b.gif", "._a.png", ".hidden/c.png", "sub.png/d.png", "deep/e.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((70, 70, 3), np.uint8)).save(tmp_path / name, format="PNG")
    assert sorted(folders._images_in(tmp_path)) == ["a.png", "b.gif"]
    assert image_names(tmp_path) == ["a.png", "b.gif", "deep/e.jpg", "sub.png/d.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in Folder(tmp_path).paths] == image_names(tmp_path)


def test_every_folder_listing_refuses_alike(tmp_path):
    """pairs/matrix, embed/nearest/diversity and synth refuse a path that is no folder, and (where
    they need one) a folder without images, in the same words: `files.image_files`."""
    from keras_lpips.cli import folders
    from keras_lpips.data.synth_patches import Folder
    from keras_lpips.embedding_files import image_groups, listed_images

    (tmp_path / "empty").mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    for path in (tmp_path / "a.png", tmp_path / "nowhere"):
        for listing in (folders._images_in, listed_images, image_groups, Folder, files.image_files):
            with pytest.raises(InputError, match=f"^{re.escape(f'Not a folder: {path}')}$"):
                listing(path)
    none = f"No images ({', '.join(files.IMAGE_SUFFIXES)}) under {tmp_path / 'empty'}"
    for listing in (listed_images, image_groups, Folder, lambda folder: files.image_files(folder, required=True)):
        with pytest.raises(InputError, match=f"^{re.escape(none)}$"):
            listing(tmp_path / "empty")
    assert folders._images_in(tmp_path / "empty") == {} and files.image_files(tmp_path / "empty") == []


def test_synth_reads_files_image_suffixes(tmp_path, monkeypatch):
    from keras_lpips.data.synth_patches import Folder

    for name in ("a.png", "b.tif", "c.txt"):
        Image.fromarray(np.zeros((70, 70, 3), np.uint8)).save(tmp_path / name, format="PNG")
    assert [p.name for p in Folder(tmp_path).paths] == ["a.png", "b.tif"]
    monkeypatch.setattr(files, "IMAGE_SUFFIXES", (".tif",))
    assert [p.name for p in Folder(tmp_path).paths] == ["b.tif"]


def test_image_suffix_sets():
    """Folders list the raster formats Pillow reads itself, so that a file `score` reads is not
    skipped in a folder for its name: each suffix one that Pillow opens, the common ones there."""
    Image.init()
    opened = {suffix for suffix, format in Image.registered_extensions().items() if format in Image.OPEN}
    assert set(files.IMAGE_SUFFIXES) <= opened
    assert {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".tga"} <= set(files.IMAGE_SUFFIXES)
    assert set(files.TF_IMAGE_SUFFIXES) < set(files.IMAGE_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in files.IMAGE_SUFFIXES)


def test_every_listed_suffix_is_listed_and_read(tmp_path):
    """A folder of one image per suffix Pillow can write here: each listed, and read as written."""
    from keras_lpips.images import read_image

    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)
    written = []
    for suffix in files.IMAGE_SUFFIXES:
        image = Image.fromarray(pixels[..., 0] if suffix in (".pgm", ".pbm") else pixels)
        try:
            image.save(tmp_path / f"image{suffix}", **({"lossless": True} if suffix in (".webp", ".avif") else {}))
        except (KeyError, OSError, ValueError):  # no encoder for it in this Pillow (it may still read it)
            (tmp_path / f"image{suffix}").unlink(missing_ok=True)
            continue
        written.append(f"image{suffix}")
    assert {".png", ".jpg", ".ppm", ".tga", ".tif"} <= {pathlib.Path(n).suffix for n in written}
    assert sorted(p.name for p in files.image_files(tmp_path)) == sorted(written)
    for name in written:
        assert read_image(tmp_path / name).shape == (16, 16, 3), name


def test_cache_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert cache_folder.cache_dir() == tmp_path / "home" / "keras_lpips" and cache_folder.cache_dir().is_dir()
    assert cache_folder.imagenet_cache_path("vgg") == tmp_path / "home" / "keras_lpips" / "vgg-imagenet-features.npz"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_folder.cache_dir() == tmp_path / "user" / ".keras" / "keras_lpips"


def test_a_folder_where_the_lock_file_goes_is_one_error(tmp_path, tiny_bapps):
    """`PATH.lock` a folder (made by hand, or by another program): one line saying what to remove."""
    from keras_lpips.errors import OutputError
    from tests.helpers import RANDOM, one_error_line, run_cli

    (tmp_path / "x.lock").mkdir()
    with pytest.raises(OutputError, match=r"x.lock is a folder, where keras-lpips keeps the lock file of .*x: remove it$"):
        with file_lock(tmp_path / "x"):
            pass
    (tmp_path / "run.lock").mkdir()
    result = run_cli("fit", "--data", tiny_bapps, "--out", tmp_path / "run", *RANDOM)
    assert result.returncode == 1 and one_error_line(result).endswith("run.lock is a folder, where keras-lpips keeps the "
                                                                      f"lock file of {tmp_path / 'run'}: remove it")  # fmt: skip
