"""Running out of disk space, said in one line.

A write refused for lack of space (ENOSPC, EDQUOT, EFBIG; from Python or from TensorFlow's own
file writers) becomes one `DiskFullError` naming the target, the space needed where known and the
space free (`shutil.disk_usage`): `reporting_disk_full` around a write, `disk_full_error` where
the error is caught by hand. `check_disk_space` refuses work whose size is known up front before
it starts."""

import contextlib
import errno
import os
import pathlib
import shutil

from keras_lpips.errors import DiskFullError

# errno values of a write refused for lack of space: the file system (ENOSPC), the user's quota
# (EDQUOT) or the largest file allowed (EFBIG, e.g. `ulimit -f`).
DISK_FULL_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if code)
# How TensorFlow's C++ file writers report them (their errors carry the system's message).
_DISK_FULL_MESSAGES = tuple(os.strerror(code) for code in sorted(DISK_FULL_ERRNOS))


def disk_full_reason(error):
    """The system's message ("No space left on device", ...) when `error` is a write refused for
    lack of space (an OSError, or a TensorFlow error), else None."""
    if isinstance(error, OSError):
        return os.strerror(error.errno) if error.errno in DISK_FULL_ERRNOS else None
    if type(error).__module__.startswith("tensorflow"):
        return next((text for text in _DISK_FULL_MESSAGES if text in str(error)), None)
    return None


def free_bytes(path):
    """Bytes free to this user (`shutil.disk_usage`) on the file system that holds `path`, or
    would hold it (its nearest existing parent); None where that cannot be read, or where the
    file system has no size (/proc and other pseudo file systems, which hold no files anyway)."""
    path = pathlib.Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            if folder.is_dir():
                usage = shutil.disk_usage(folder)
                return usage.free if usage.total else None
    return None


def format_bytes(count):
    """`count` bytes for a message: "512 B", "12.3 kB", "4.5 MB", "1.2 GB", "3.0 TB" (powers of 1000)."""
    count = int(count)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def disk_full_error(path, needed=None, reason=None):
    """The `DiskFullError` for a write of `path` refused for lack of space: "Cannot write PATH:
    REASON (needs about N; F free on its disk)"."""
    free = free_bytes(path)
    space = [f"needs about {format_bytes(needed)}"] if needed else []
    space.append(f"{format_bytes(free)} free on its disk" if free is not None else "free space unknown")
    reason = reason or os.strerror(errno.ENOSPC)
    message = f"Cannot write {path}: {reason} ({'; '.join(space)})"
    return DiskFullError(message, path=path, needed=needed, free=free, reason=reason)


def check_disk_space(path, needed, what):
    """Raises `DiskFullError` before any work starts when `needed` bytes exceed the space free on
    the disk that holds (or would hold) `path`: "WHAT needs about N of disk space but F is free
    at PATH". Does nothing where the free space cannot be read."""
    free = free_bytes(path)
    if free is not None and needed > free:
        raise DiskFullError(
            f"{what} needs about {format_bytes(needed)} of disk space but {format_bytes(free)} is free at {path}; "
            "free some space or write elsewhere",
            path=path, needed=needed, free=free,
        )  # fmt: skip


@contextlib.contextmanager
def reporting_disk_full(path, needed=None, within=()):
    """Turns a write refused for lack of space in the block (`disk_full_reason`) into one
    `DiskFullError` naming `path` (`disk_full_error`). A `DiskFullError` raised for a file under
    one of the folders `within` (this write's own temporaries) is reported against `path` too,
    so that the message names what the user asked for, not a hidden temporary."""
    try:
        yield
    except DiskFullError as error:
        inner = pathlib.Path(os.path.abspath(error.path)) if error.path is not None else None
        if inner is None or not any(_is_within(inner, folder) for folder in within):
            raise
        raise disk_full_error(path, needed or error.needed, error.reason) from None
    except Exception as error:
        reason = disk_full_reason(error)
        if reason is None:
            raise
        raise disk_full_error(path, needed, reason) from None


def _is_within(path, folder):
    folder = pathlib.Path(os.path.abspath(folder))
    return path == folder or folder in path.parents
