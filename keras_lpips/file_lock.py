"""`file_lock`: keeps two processes (or threads) from filling the same file at once (the weight
cache, a download's `.part`, a training run's folder)."""

import contextlib
import os
import pathlib
import time

from keras_lpips.errors import OutputError

_LOCK_POLL_SECONDS = 0.05


@contextlib.contextmanager
def file_lock(path, timeout=None):
    """Holds an exclusive lock on `path` (through the file `PATH.lock`, `fcntl.flock`) for the
    block: another process, or thread, asking for the same lock waits until it is released.

    `timeout`: None waits as long as it takes; a number of seconds (0: one try) raises
    `TimeoutError` naming the lock when it is still held after that long; a folder in the lock
    file's place, `OutputError`. The lock file is removed on release. Not re-entrant: taking a lock the same thread holds waits forever.
    """
    import fcntl

    lock = pathlib.Path(f"{path}.lock")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except IsADirectoryError:
            raise OutputError(f"{lock} is a folder, where keras-lpips keeps the lock file of {path}: remove it") from None
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
