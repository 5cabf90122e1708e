"""Resumable HTTP downloads that land whole and verified, or not at all.

`download` is the one place a file is fetched over the network (weights through
`keras_lpips.weights.cache.download`, BAPPS archives through `keras_lpips.data.download`):
the bytes go to `<dest>.part`, which an interruption keeps and the next call resumes with an
HTTP Range request; the file is renamed to `dest` only once it has the size and passes the
check it was asked for. What goes wrong is one line: `DownloadError` for the network (with how
many bytes are kept for the resume), `ChecksumError` for a file that is not the one expected,
`DiskFullError` for a disk that cannot hold it (`keras_lpips.disk_space`).
"""

import contextlib
import http.client
import os
import pathlib
import urllib.error
import urllib.request

from keras_lpips import disk_space
from keras_lpips.errors import ChecksumError, DownloadError
from keras_lpips.file_lock import file_lock

_BLOCK = 1 << 20  # bytes read and written at a time


def remote_size(url, timeout=60):
    """The size the server reports for `url` (HEAD Content-Length), or None when it reports none.
    A server that cannot be reached, or answers with an error, raises `DownloadError`."""
    request = urllib.request.Request(url, method="HEAD")
    with _reported(url), urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(url, dest, verify=None, size=None, timeout=60, progress=None):
    """Downloads `url` to `dest` (a path), resuming the `<dest>.part` an interruption left, and
    renames it into place once complete and checked; returns `dest` as a path.

    What the file must pass, one or both: `verify(path)` raises `ChecksumError` unless `path` is
    the file expected (`keras_lpips.weights.cache.download` checks a sha256 this way); `size` is
    the number of bytes the server reports for it (`remote_size`): a `.part` already that long is
    not fetched again, a longer one is started over. A `dest` already there is checked alike and
    kept when it passes (fetched again otherwise). `progress(done_bytes, total_bytes_or_None)` is
    called as data arrives.

    A file that fails the check is removed with its `.part`, and `ChecksumError` raised. A server
    that cannot be reached, answers with an error or cuts the transfer short raises `DownloadError`
    ("Cannot download URL: REASON[; N bytes kept in PATH.part, run again to resume]"), keeping
    the `.part` for the next call. A full disk removes the `.part` and raises `DiskFullError`; a
    size the server announces is checked against the free space before a byte is written.

    Two processes downloading to one `dest` take turns (`file_lock` on it), so that they never
    append to one `.part`; the second finds the file there, checks it and returns it.
    """
    if verify is None and size is None:
        raise TypeError(f"download({url!r}) needs a check for the file: verify=, size= or both")
    dest = pathlib.Path(dest)
    partial = _partial(dest)
    with file_lock(dest):
        if dest.is_file():  # from an earlier call, or completed by another process while this one waited
            try:
                _check(dest, dest, verify, size)
                return dest
            except ChecksumError:
                dest.unlink()
        done = partial.stat().st_size if partial.exists() else 0
        if size is not None and done > size:  # not a prefix of this file
            partial.unlink()
            done = 0
        if size is None or done < size:
            _fetch(url, dest, done, timeout, progress)
        elif progress:
            progress(done, size)
        try:
            _check(partial, dest, verify, size)
        except ChecksumError:
            partial.unlink()
            raise
        os.replace(partial, dest)
    return dest


def _partial(dest):
    """Where the bytes of `dest` gather until it is complete."""
    return dest.with_name(dest.name + ".part")


def _check(path, dest, verify, size):
    """Raises `ChecksumError` unless the file `path` (`dest`, or its `.part`) has `size` bytes and
    passes `verify` (each where given)."""
    if size is not None:
        actual = path.stat().st_size
        if actual != size:
            raise ChecksumError(f"Size mismatch for {dest}: the server reports {size} bytes, received {actual}")
    if verify is not None:
        verify(path)


def _fetch(url, dest, done, timeout, progress):
    """Appends `url`'s bytes from offset `done` to `dest`'s `.part` (from 0 where the server
    ignores the range); a range starting at the end (HTTP 416) leaves it as it is."""
    partial = _partial(dest)
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with _reported(url, dest):
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            if not (done and error.code == 416):
                raise
            error.close()  # the `.part` holds every byte already
            return
        with response:
            if done and response.status != 206:  # the server ignored the range: start over
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length is not None else None
            if length is not None:  # refused before a byte is written when it cannot fit
                disk_space.check_disk_space(partial, int(length), f"Downloading {url}")
            with open(partial, "ab" if done else "wb") as out:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            if total is not None and done < total:  # http.client ends a cut-off body quietly
                raise urllib.error.ContentTooShortError(f"interrupted after {done} of {total} bytes", None)


@contextlib.contextmanager
def _reported(url, dest=None):
    """Turns a network failure in the block into one `DownloadError` line for `url` (naming the
    bytes of `dest` kept for a resume), and a full disk into `DiskFullError` for `dest`, its
    `.part` removed so that it holds no space."""
    try:
        yield
    except http.client.HTTPException as error:  # IncompleteRead and kin are not OSErrors
        raise DownloadError(_problem(url, dest, f"interrupted ({error!r})")) from None
    except OSError as error:  # URLError, HTTPError, timeouts, refused or reset connections
        full = disk_space.disk_full_reason(error)
        if full is not None and dest is not None:
            _partial(dest).unlink(missing_ok=True)
            raise disk_space.disk_full_error(dest, reason=full) from None
        raise DownloadError(_problem(url, dest, _reason(error))) from None


def _reason(error):
    """Why a download failed, in a few words: "HTTP 404 Not Found", "Connection refused", ..."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return getattr(error.reason, "strerror", None) or str(error.reason)
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _problem(url, dest, reason):
    """One line for a failed download of `url`: why, and whether the next call resumes `dest`."""
    partial = _partial(dest) if dest is not None else None
    if partial is not None and partial.exists() and partial.stat().st_size:
        return f"Cannot download {url}: {reason}; {partial.stat().st_size} bytes kept in {partial}, run again to resume"
    return f"Cannot download {url}: {reason}"
