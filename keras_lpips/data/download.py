"""Downloading and safely extracting the official BAPPS archives.

The three archives live in the LPIPS authors' S3 bucket. The 2AFC archives are checked against
pinned sha256 digests. **No checksum is published for `jnd.tar.gz`**: it is checked only
against the size the server reports (HEAD Content-Length), and its sha256 is returned (and
printed by `keras-lpips data download`) so that you can pin it yourself.

Downloads resume (`keras_lpips.downloads`): an interrupted transfer leaves
`<dest>/<split>.tar.gz.part`, which the next call continues with an HTTP Range request.
Extraction goes through `safe_extract`, which refuses absolute paths, `..`, links (BAPPS has
none), device files and members that are both a file and a folder, and renames a complete
extraction into place (`keras_lpips.files.atomic_directory`), so an interruption never leaves
a half-extracted split behind.
"""

import errno
import gzip
import lzma
import os
import pathlib
import tarfile
import zlib
from typing import NamedTuple, Optional

from keras_lpips import disk_space, downloads, files
from keras_lpips.errors import ChecksumError, DataError, DiskFullError, DownloadError, InputError, UnsafeFileError
from keras_lpips.weights import cache

URL_TEMPLATE = "https://perceptual-similarity.s3.us-west-2.amazonaws.com/dataset/{split}.tar.gz"
SPLITS = ("twoafc_train", "twoafc_val", "jnd")
SHA256 = {
    "twoafc_train": "b4f5c772c7cd88ac44bcb4ff0741745d434c05f0094f2bfb262ddcd0055bf393",
    "twoafc_val": "41486671b06de923e7ba277c4797d4d9d86d609863ba35ecdb576133f8b9d859",
    "jnd": None,  # none published: verified by the size the server reports
}
# Where each split lands under the dataset root, and where its folder may sit inside the archive
# (the official script extracts the 2AFC archives into dataset/2afc and jnd.tar.gz into dataset).
TARGETS = {"twoafc_train": "2afc/train", "twoafc_val": "2afc/val", "jnd": "jnd/val"}
ARCHIVE_LAYOUTS = {
    "twoafc_train": ("train", "2afc/train", "dataset/2afc/train"),
    "twoafc_val": ("val", "2afc/val", "dataset/2afc/val"),
    "jnd": ("jnd/val", "dataset/jnd/val", "val"),
}


class DownloadedSplit(NamedTuple):
    """What `download_split` did: the split's folder, the archive's sha256 (None when the split
    was already there and nothing was downloaded) and how the archive was verified
    ("sha256", "size", or "already present")."""

    split: str
    folder: pathlib.Path
    sha256: Optional[str]
    verified_by: str


def download_split(split, dest, progress=None, timeout=60, keep_archive=False):
    """Downloads BAPPS split `split` ("twoafc_train" 5.3 GB, "twoafc_val" 1.1 GB, "jnd" 0.2 GB)
    and extracts it under the dataset root `dest`, as `dest/2afc/train`, `dest/2afc/val` or
    `dest/jnd/val`; returns a `DownloadedSplit`.

    A split whose folder already exists is left alone (nothing downloaded). The archive is
    `dest/<split>.tar.gz` while it downloads (`.part` until complete, resumed on the next call
    after an interruption) and is deleted after extraction unless `keep_archive`.
    `progress(done_bytes, total_bytes_or_None)` is called as data arrives.

    twoafc_* archives must match their published sha256 (`ChecksumError` otherwise, and the
    download is discarded). jnd has no published checksum: it is accepted when its size is the
    one the server reports, and its sha256 is returned so that it can be pinned.
    """
    if split not in SPLITS:
        raise InputError(f"Unknown BAPPS split {split!r}: expected one of {', '.join(SPLITS)}")
    dest = pathlib.Path(dest)
    target = dest / TARGETS[split]
    if target.is_dir() and any(target.iterdir()):
        return DownloadedSplit(split, target, None, "already present")
    created = files.make_folder(dest)
    url = URL_TEMPLATE.format(split=split)
    archive = dest / f"{split}.tar.gz"
    expected = SHA256[split]
    try:
        if expected is not None:
            cache.download(url, archive, expected, timeout=timeout, progress=progress)
            digest, verified_by = expected, "sha256"
        else:
            size = downloads.remote_size(url, timeout)
            if size is None:
                raise ChecksumError(f"Cannot verify {url}: no sha256 is published and the server reports no size")
            downloads.download(url, archive, size=size, timeout=timeout, progress=progress)
            digest, verified_by = cache.sha256_of(archive), "size"
    except (DownloadError, DiskFullError):
        files.remove_if_empty(created)  # no empty dataset folder left behind (a .part stays: it resumes)
        raise

    size = archive.stat().st_size  # its PNGs barely compress: about as much again extracted
    disk_space.check_disk_space(dest, size, f"Extracting {archive}")
    try:
        _extract_split(split, archive, target)
    except (ArchiveError, UnsafeFileError) as error:
        if verified_by != "size":  # it matched its published sha256: the published archive, kept
            raise
        archive.unlink(missing_ok=True)  # else the next run would fail on the same file
        files.remove_if_empty(created)
        raise type(error)(f"{error}. It was checked only by its size, so it is deleted: run again to download it anew") from None
    if not keep_archive:
        archive.unlink()
    return DownloadedSplit(split, target, digest, verified_by)


# --- safe extraction --------------------------------------------------------------------------


def _inside(path, root):
    return path == root or path.startswith(root + os.sep)


def _check_member(member, root, tar_path):
    """Raises UnsafeFileError unless `member` is a plain file or folder whose path stays under the
    real path `root`.

    Links are refused outright: BAPPS archives contain none, and a link that looks inside when it
    is made can point outside once later links are in (`p -> q/..`, then `q -> .`), or once the
    split's folder is moved out of the extraction folder. Without links, no path can lead out."""
    name = member.name
    where = f"Refusing to extract {tar_path}: member {name!r}"
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeFileError(f"{where} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeFileError(f"{where} goes up out of the destination ('..')")
    if not _inside(os.path.realpath(os.path.join(root, name)), root):  # cannot happen without links: kept as a guard
        raise UnsafeFileError(f"{where} would be written outside the destination")
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        raise UnsafeFileError(f"{where} is a {kind} link (to {member.linkname!r}): BAPPS archives contain no links")
    if not (member.isreg() or member.isdir()):
        kind = "a character device" if member.ischr() else "a block device" if member.isblk() else (
            "a FIFO" if member.isfifo() else f"of unsupported type {member.type!r}")  # fmt: skip
        raise UnsafeFileError(f"{where} is {kind}")


class ArchiveError(DataError):
    """An archive that does not extract: truncated, damaged, or not a tar archive."""


def _extract_split(split, archive, target):
    """Extracts `archive` and moves its `split` folder to `target`: `ArchiveError` where it does
    not extract, `UnsafeFileError` for a hostile member, `DataError` where it lacks that folder
    (`ARCHIVE_LAYOUTS`)."""
    size = archive.stat().st_size
    with files.scratch_directory(archive.parent / split, needed=size) as scratch:  # the whole archive, then its split folder moved out
        extracted = safe_extract(archive, scratch / "archive")
        found = next((extracted / p for p in ARCHIVE_LAYOUTS[split] if (extracted / p).is_dir()), None)
        if found is None:
            top = sorted(p.name for p in extracted.iterdir())
            raise DataError(
                f"{archive} does not have the expected layout: no {' or '.join(ARCHIVE_LAYOUTS[split])} folder "
                f"(top level: {', '.join(top) or 'empty'})"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        files.replace_directory(found, target)  # an empty target folder is replaced (a non-empty one returned early)


# What an OSError from extracting one member says about the archive (it names our hidden
# temporary folder, so it is not shown as is).
_CONFLICTING_MEMBER = {
    errno.EEXIST: "is a folder, but an earlier member of that name is a file",
    errno.EISDIR: "is a file, but an earlier member of that name is a folder",
    errno.ENOTDIR: "is inside a folder that an earlier member made a file",
    errno.ENAMETOOLONG: "has a name too long for this file system",
}


def safe_extract(tar_path, dest):
    """Extracts the tar archive `tar_path` (any compression) to the folder `dest`, all or nothing.

    Members are extracted into a temporary folder next to `dest`, which is renamed to `dest`
    when every member is in; any failure removes it. `UnsafeFileError` is raised for a member
    with an absolute path or a `..` component, a symbolic or hard link, or a device file or FIFO
    (`_check_member`); Python's "data" extraction filter is applied too. `ArchiveError` is raised
    for an archive that does not extract: damaged, or with a name that is both a file and a
    folder. `dest` must not exist, or be an empty folder. Returns `dest`.
    """
    tar_path, dest = pathlib.Path(tar_path), pathlib.Path(dest)
    if not tar_path.is_file():
        raise InputError(f"No such archive: {tar_path}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"Cannot extract {tar_path} to {dest}: it already exists and is not empty")
    with files.atomic_directory(dest) as staging:
        root = os.path.realpath(staging)
        try:
            with tarfile.open(tar_path, "r|*") as archive:  # one sequential pass, even for .tar.gz
                for member in archive:
                    _check_member(member, root, tar_path)
                    try:
                        archive.extract(member, staging, filter="data")
                    except OSError as error:
                        if error.errno not in _CONFLICTING_MEMBER:
                            raise  # the disk's fault (full, read-only), not the archive's
                        raise ArchiveError(f"Cannot extract {tar_path}: member {member.name!r} {_CONFLICTING_MEMBER[error.errno]}") from None
        except tarfile.FilterError as error:
            raise UnsafeFileError(f"Refusing to extract {tar_path}: {error}") from None
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError) as error:
            raise ArchiveError(f"Cannot extract {tar_path} (truncated or not a tar archive?): {error}") from None
    return dest
