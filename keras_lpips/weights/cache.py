"""Downloads (resumable, checksummed) and sha256 checksums of files and of arrays' content.
Where the cache is: `keras_lpips.files`."""

import hashlib
import http.client
import json
import os
import pathlib
import urllib.error
import urllib.request

import numpy as np

from keras_lpips import disk_space
from keras_lpips.errors import ChecksumError
from keras_lpips.file_lock import file_lock

MIN_PREFIX = 8  # the shortest sha256 prefix accepted as a checksum (torch.hub's file names carry 8)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(arrays):
    """The sha256 of a dict of arrays' content, independent of the file that holds them (an npz's
    zip timestamps and member order do not count): for each key in sorted order, the line
    `["key", "<dtype>", [shape]]` (JSON, dtype little-endian as numpy writes it, e.g. "<f4")
    followed by the array's C-order little-endian bytes."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.asarray(arrays[key])
        array = np.ascontiguousarray(array, array.dtype.newbyteorder("<"))
        digest.update(json.dumps([key, array.dtype.str, list(array.shape)]).encode() + b"\n")
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_expected_digest(expected):
    """`expected` as lower-case hex: a full sha256 (64 hex digits) or a prefix of at least 8 (as
    torch.hub names files); anything else (empty, shorter, not hex) raises `ChecksumError`, so
    that a missing or blank digest can never pass for a match."""
    text = expected.strip().lower() if isinstance(expected, str) else ""
    if not MIN_PREFIX <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
        raise ChecksumError(
            f"Not a sha256 digest to verify against (a prefix of {MIN_PREFIX} to 64 hex digits). Received: {expected!r}"
        )
    return text


def verify_digest(actual, expected, what):
    """Raises `ChecksumError` unless the sha256 `actual` starts with `expected` (`check_expected_digest`)."""
    text = check_expected_digest(expected)
    if not actual.startswith(text):
        shown = text if len(text) == 64 else f"{text}..."
        raise ChecksumError(f"Checksum mismatch for {what}: expected sha256 {shown}, got {actual}.")


def verify_sha256(path, expected):
    """Raises `ChecksumError` unless the file's sha256 starts with `expected`: a full digest, or a
    prefix of at least 8 hex digits (torch.hub's); an empty or shorter one raises too."""
    check_expected_digest(expected)
    verify_digest(sha256_of(path), expected, path)


def download(url, dest, expected_sha256, timeout=30, progress=None):
    """Downloads `url` to `dest`, resuming a `.part` file left by an interruption,
    verifying the sha256 (prefix) before the final rename.

    `progress(done_bytes, total_bytes_or_None)` is called as data arrives.
    Network errors, a transfer cut short included, propagate as `OSError` and
    keep the `.part` file for the next call to resume; a bad checksum removes
    the partial file and raises `ChecksumError`; a full disk removes it and raises
    `DiskFullError` (a size announced by the server is checked before the transfer). The expected digest is checked first: an empty
    or too short one raises `ChecksumError` before anything is fetched.

    Two processes downloading to one `dest` take turns (`file_lock` on it, so that they
    never append to one `.part`); the second finds the file there, checks it and returns it
    (a `dest` without the checksum is fetched again).
    """
    check_expected_digest(expected_sha256)
    dest = pathlib.Path(dest)
    partial = dest.with_name(dest.name + ".part")
    with file_lock(dest):
        if dest.is_file():  # completed by another process while this one waited
            try:
                verify_sha256(dest, expected_sha256)
                return dest
            except ChecksumError:
                dest.unlink()
        done = partial.stat().st_size if partial.exists() else 0
        try:
            _fetch(url, partial, done, timeout, progress)
        except urllib.error.HTTPError as error:
            if not (done and error.code == 416):
                raise
            error.close()  # the range starts at the end: `.part` holds every byte already
        except OSError as error:
            reason = disk_space.disk_full_reason(error)
            if reason is None:
                raise
            partial.unlink(missing_ok=True)  # a full disk: no partial file keeps holding the space
            raise disk_space.disk_full_error(dest, reason=reason) from None
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
            if length is not None:  # refused before a byte is written when it cannot fit
                disk_space.check_disk_space(partial, int(length), f"Downloading {url}")
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
