"""Files keras-lpips writes, locks and lists, and where its weight cache lives.

Every file the project writes appears whole or not at all. `atomic_write` and
`atomic_path` write under a hidden temporary name in the target's own folder
(`.NAME.<pid>-<random>.tmp`) and rename it onto the target (`os.replace`) once
complete; `atomic_directory` builds a folder the same way. Any failure, an
interrupt (KeyboardInterrupt) included, removes the temporary and leaves the
target as it was; a process killed outright leaves at most such a hidden
temporary, never a partial file under the final name. Concurrent writers of
one target never see each other's temporaries: the last rename wins, whole.

`file_lock` keeps two processes (or threads) from filling the same file at
once (the weight cache). `IMAGE_SUFFIXES` are the image files listed from a
folder; `cache_dir` and `imagenet_cache_path` name the weight cache's files.
"""

import contextlib
import os
import pathlib
import secrets
import shutil
import time

from keras_lpips.errors import InputError

# Image files the project lists in a folder (read with Pillow: `keras_lpips.images.read_image`).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# The ones TensorFlow's `tf.io.decode_image` reads too: what a BAPPS-layout folder may hold,
# since training decodes it in a tf.data pipeline (WebP and TIFF would fail there).
TF_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

_LOCK_POLL_SECONDS = 0.05


# --- the weight cache -------------------------------------------------------------------------


def cache_dir():
    """`$KERAS_HOME/keras_lpips` (default `~/.keras/keras_lpips`), created on demand."""
    root = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    path = pathlib.Path(root) / "keras_lpips"
    path.mkdir(parents=True, exist_ok=True)
    return path


def imagenet_cache_path(net):
    """The cached, converted ImageNet backbone of `net` (a canonical name: "alex", "vgg", "squeeze")."""
    return cache_dir() / f"{net}-imagenet-features.npz"


# --- writing whole or not at all --------------------------------------------------------------


def temporary_sibling(path):
    """A hidden name, unused at the time of the call, in `path`'s folder: `.NAME.<pid>-<random>.tmp`.
    Nothing is created."""
    path = pathlib.Path(path)
    while True:
        candidate = path.with_name(f".{path.name[:200]}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        if not os.path.lexists(candidate):
            return candidate


@contextlib.contextmanager
def _reported(path, as_input_error):
    """With `as_input_error`, an OSError becomes `InputError("Cannot write PATH: reason")`."""
    if not as_input_error:
        yield
        return
    try:
        yield
    except OSError as error:
        raise InputError(f"Cannot write {path}: {error.strerror or error}") from None


def _remove(path):
    """Removes a file or folder tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, *, fsync=False, as_input_error=False):
    """Yields a temporary path (`temporary_sibling`, not yet created) to write `path`'s content
    to; renamed onto `path` when the block ends normally, removed when it raises (or is
    interrupted). Writers that choose a format from the file name must be told the format
    (e.g. `save(tmp, format="PNG")`) or given an open file.

    `fsync`: flush the file, then the rename, to disk (for files that must survive a power loss).
    `as_input_error`: a missing output folder raises `InputError("Output folder does not
    exist: FOLDER")` and any OSError `InputError("Cannot write PATH: reason")`.
    """
    path = pathlib.Path(path)
    if as_input_error and not path.parent.is_dir():
        raise InputError(f"Output folder does not exist: {path.parent}")
    with _reported(path, as_input_error):
        tmp = temporary_sibling(path)
        try:
            yield tmp
            if fsync:
                _fsync(tmp)
            os.replace(tmp, path)
            if fsync:
                _fsync(path.parent)
        except BaseException:
            _remove(tmp)
            raise


def atomic_write(path, data, *, fsync=False, as_input_error=False):
    """Writes `data` (bytes, or str written as UTF-8) to `path`, whole or not at all (see
    `atomic_path` for `fsync` and `as_input_error`). Returns `path` as a Path."""
    path = pathlib.Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path, fsync=fsync, as_input_error=as_input_error) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
    return path


def replace_directory(source, target, replace=False):
    """Renames the folder `source` to `target` (same file system). `target` may be absent or an
    empty folder; any other `target` raises OSError, unless `replace`, which swaps it out (the
    old one deleted once the new one is in place)."""
    source, target = pathlib.Path(source), pathlib.Path(target)
    if replace and os.path.lexists(target) and not (target.is_dir() and not any(target.iterdir())):
        old = temporary_sibling(target)
        os.replace(target, old)
        try:
            os.replace(source, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove(old)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def atomic_directory(path, *, replace=False, as_input_error=False):
    """Yields a new empty hidden folder next to `path` (its parents created) to fill; renamed to
    `path` when the block ends normally (`replace_directory`: `path` absent or an empty folder,
    or anything when `replace`), deleted with its contents when the block raises."""
    path = pathlib.Path(path)
    with _reported(path, as_input_error):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = temporary_sibling(path)
        staging.mkdir()
        try:
            yield staging
            replace_directory(staging, path, replace)
        except BaseException:
            _remove(staging)
            raise


@contextlib.contextmanager
def scratch_directory(near):
    """Yields a new empty hidden folder next to `near` (same file system: its contents can be
    renamed into place), deleted with its contents when the block ends, however it ends."""
    near = pathlib.Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    scratch = temporary_sibling(near)
    scratch.mkdir()
    try:
        yield scratch
    finally:
        _remove(scratch)


# --- locking ----------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path, timeout=None):
    """Holds an exclusive lock on `path` (through the file `PATH.lock`, `fcntl.flock`) for the
    block: another process, or thread, asking for the same lock waits until it is released.

    `timeout`: None waits as long as it takes; a number of seconds (0: one try) raises
    `TimeoutError` naming the lock when it is still held after that long. The lock file is
    removed on release. Not re-entrant: taking a lock the same thread holds waits forever.
    """
    import fcntl

    lock = pathlib.Path(f"{path}.lock")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _acquire(fcntl, fd, lock, deadline, timeout)
            # The holder before us may have removed the file after we opened it: a lock on an
            # unlinked file excludes nobody, so take the one at the path now.
            opened, current = os.fstat(fd), _stat_or_none(lock)
            if current is not None and (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)  # releases the lock


def _acquire(fcntl, fd, lock, deadline, timeout):
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{lock} is still held by another process after {timeout:g} s") from None
            time.sleep(min(_LOCK_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _stat_or_none(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
