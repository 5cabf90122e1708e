"""sha256 checksums of files and of arrays' content, and downloads checked against one (how a
file is downloaded: `keras_lpips.downloads`). Where the cache is: `keras_lpips.weights.cache_folder`."""

import hashlib
import json

import numpy as np

from keras_lpips import downloads
from keras_lpips.errors import ChecksumError

MIN_PREFIX = 8  # the shortest sha256 prefix accepted as a checksum (torch.hub's file names carry 8)


def sha256_of(path):
    """The hex sha256 of the file at `path`."""
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
    """Downloads `url` to `dest` (`keras_lpips.downloads.download`: resumed from a `.part`,
    locked, one-line errors) and keeps it only when its sha256 starts with `expected_sha256`: a
    full digest or a prefix of at least 8 hex digits (`check_expected_digest`, checked first, so
    that an empty or too short one raises `ChecksumError` before anything is fetched).

    A file that does not match is removed and raises `ChecksumError`; a `dest` already there is
    returned when it matches (fetched again otherwise). `progress(done_bytes, total_or_None)`
    is called as data arrives.
    """
    check_expected_digest(expected_sha256)
    return downloads.download(
        url, dest, verify=lambda path: verify_digest(sha256_of(path), expected_sha256, dest), timeout=timeout, progress=progress
    )
