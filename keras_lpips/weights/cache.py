"""Downloads (resumable, checksummed) and sha256 checksums. Where the cache is: `keras_lpips.files`."""

import hashlib
import http.client
import os
import pathlib
import urllib.error
import urllib.request

from keras_lpips.errors import ChecksumError


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path, expected):
    """Raises `ChecksumError` unless the file's sha256 starts with `expected`
    (a full digest, or torch.hub's 8-digit prefix)."""
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise ChecksumError(f"Checksum mismatch for {path}: expected sha256 {expected}..., got {actual}.")


def download(url, dest, expected_sha256, timeout=30, progress=None):
    """Downloads `url` to `dest`, resuming a `.part` file left by an interruption,
    verifying the sha256 (prefix) before the final rename.

    `progress(done_bytes, total_bytes_or_None)` is called as data arrives.
    Network errors, a transfer cut short included, propagate as `OSError` and
    keep the `.part` file for the next call to resume; a bad checksum removes
    the partial file and raises `ChecksumError`.
    """
    dest = pathlib.Path(dest)
    partial = dest.with_name(dest.name + ".part")
    done = partial.stat().st_size if partial.exists() else 0
    try:
        _fetch(url, partial, done, timeout, progress)
    except urllib.error.HTTPError as error:
        if not (done and error.code == 416):
            raise
        error.close()  # the range starts at the end: `.part` holds every byte already
    try:
        verify_sha256(partial, expected_sha256)
    except ChecksumError:
        partial.unlink()
        raise
    os.replace(partial, dest)
    return dest


def _fetch(url, partial, done, timeout, progress):
    """Appends `url`'s bytes from offset `done` to `partial` (from 0 where the server ignores the range)."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if done and response.status != 206:  # the server ignored the range: start over
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length is not None else None
            with open(partial, "ab" if done else "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
            if total is not None and done < total:  # http.client ends a cut-off body quietly
                raise urllib.error.ContentTooShortError(
                    f"Download of {url} interrupted after {done} of {total} bytes; run again to resume.", None
                )
    except http.client.HTTPException as error:  # IncompleteRead and kin are not OSErrors
        raise ConnectionError(f"Download of {url} interrupted after {done} bytes: {error!r}") from error
