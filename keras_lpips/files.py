"""Files keras-lpips writes (whole or not at all) and lists.

Every file the project writes appears whole or not at all. `atomic_write` and
`atomic_path` write under a hidden temporary name in the target's own folder
(`.NAME.<pid>-<random>.tmp`) and rename it onto the target (`os.replace`) once
complete; `atomic_directory` builds a folder the same way. Any failure, an
interrupt (KeyboardInterrupt) included, removes the temporary and leaves the
target as it was; a process killed outright leaves at most such a hidden
temporary, never a partial file under the final name, and the next write of the
same target removes it (`remove_stale_temporaries`: the pid in its name is no
longer running). Concurrent writers of one target never see each other's
temporaries: the last rename wins, whole.

A write refused for lack of space inside any of these becomes one `DiskFullError`
naming the target (`keras_lpips.disk_space`).

Outputs never destroy files: `check_output` is the one rule every command applies to
what it writes (never one of its inputs, even with `overwrite=True`; an existing file only
with it), and `overwrite=False` writes (`atomic_path`, `publish_new`) refuse
a file that another process created meanwhile instead of replacing it.

`IMAGE_SUFFIXES` are the image files listed from a folder. Locks: `keras_lpips.file_lock`;
the weight cache's folder: `keras_lpips.weights.cache_folder`.
"""

import contextlib
import errno
import os
import pathlib
import re
import secrets
import shutil
import stat

from keras_lpips.disk_space import reporting_disk_full
from keras_lpips.errors import DataError, InputError, OutputError, reason

# Image files the project lists in a folder (read with Pillow: `keras_lpips.images.read_image`):
# the raster formats Pillow reads itself (not EPS/PDF, which need other programs), by their usual names.
IMAGE_SUFFIXES = (
    ".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
    ".avif", ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".qoi",
)  # fmt: skip
# The ones TensorFlow's `tf.io.decode_image` reads too: what a BAPPS-layout folder may hold,
# since training decodes it in a tf.data pipeline (WebP and TIFF would fail there).
TF_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def image_files(folder, recursive=False, required=False):
    """The image files (`IMAGE_SUFFIXES`, any case) in `folder` (`recursive`: under it), sorted:
    regular files only (or links to them), hidden names (".name", macOS' "._name") and what is
    under hidden folders skipped. The one listing every command that reads a folder uses, and
    its refusals (`InputError`): `folder` not a folder, and with `required` no image in it."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise InputError(f"Not a folder: {folder}")
    found = []
    for path in folder.rglob("*") if recursive else folder.iterdir():
        relative = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in relative.parts) and path.is_file():
            found.append(path)
    if required and not found:
        raise InputError(f"No images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return sorted(found)


def temporary_sibling(path):
    """A hidden name, unused at the time of the call, in `path`'s folder: `.NAME.<pid>-<random>.tmp`.
    Nothing is created."""
    path = pathlib.Path(path)
    while True:
        candidate = path.with_name(f".{path.name[:200]}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        if not os.path.lexists(candidate):
            return candidate


def remove_stale_temporaries(path):
    """Removes what writers of `path` killed outright left: its temporaries
    (`temporary_sibling`, `.NAME.<pid>-<random>.tmp`, files or folders) whose pid no longer runs
    on this machine. Called before every write of `path`, so that the next write cleans up after
    a killed one. A writer in another pid namespace or on another machine sharing the folder is
    taken for gone. Never raises; returns the paths removed."""
    path = pathlib.Path(path)
    prefix = f".{path.name[:200]}."
    removed = []
    try:
        names = [entry.name for entry in os.scandir(path.parent) if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY_SUFFIX.fullmatch(name[len(prefix) :])
        if match and not _running(int(match.group(1))):
            _remove(path.parent / name)
            removed.append(path.parent / name)
    return removed


_TEMPORARY_SUFFIX = re.compile(r"(\d+)-[0-9a-f]{8}\.tmp")


def _running(pid):
    """Whether process `pid` exists on this machine (a zombie counts; unknown counts as running)."""
    if pid == os.getpid() or os.name != "posix":  # elsewhere os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def exists_message(path):
    """What every refusal to replace an existing output says."""
    return f"{path} already exists; pass overwrite=True to replace it"


def output_error(path, error):
    """The `OutputError` every writer raises where the system refused to write its output `path`
    (a file or a folder) with the OSError `error`: "Cannot write PATH: reason"."""
    return OutputError(f"Cannot write {path}: {reason(error)}")


@contextlib.contextmanager
def _reported(path, as_input_error):
    """With `as_input_error`, an OSError becomes `output_error(PATH, error)` (an `InputError`), and
    an output that appeared meanwhile (`overwrite=False`) `InputError(exists_message(PATH))`."""
    if not as_input_error:
        yield
        return
    try:
        yield
    except FileExistsError:
        raise InputError(exists_message(path)) from None
    except OSError as error:
        raise output_error(path, error) from None


def check_output(path, inputs=(), overwrite=False, kind=None, new_folders=False):
    """The one rule for a command's output `path`, checked before any work:

    - it is never one of `inputs` (paths the command reads: files or folders), nor a folder
      holding one, nor an image file (`IMAGE_SUFFIXES`) inside an input folder, which a listing
      of it would read back, even with `overwrite` (resolved paths and `os.path.samefile`
      compared, so that links and `./a.png` count); a fit's or a study's folder inside the
      dataset is refused by `training.fit.check_outside_inputs`;
    - it may exist only with `overwrite`, and then only as what it is to be replaced with: a
      regular file for `kind="file"`, a folder for `kind="folder"`, either for None; never a
      named pipe, a device or a socket;
    - a file's folder must exist (`kind="file"`), unless the writer creates it (`new_folders`; a
      folder output's parents are always created); whatever exists of the folders above it must
      be folders, not a file (a folder that cannot be created), and the nearest that exists
      writable (`OutputError` otherwise: found before the work, not after it).

    Raises `InputError` in one line; returns `path` as a Path. Writers then publish with
    `atomic_write`/`atomic_path(..., overwrite=overwrite)`, which refuse an output that appeared
    meanwhile."""
    path = pathlib.Path(path)
    target = path.resolve()
    sources = [pathlib.Path(source) for source in inputs if source is not None and os.path.lexists(source)]
    for source in sources:
        resolved = source.resolve()
        same = target == resolved or (path.exists() and _same_file(path, source))
        if same or target in resolved.parents:
            what = "is" if same else "holds"
            raise InputError(
                f"Refusing to write {path}: it {what} {source}, an input of this command (even overwrite=True never replaces an input)"
            )
    if path.suffix.lower() in IMAGE_SUFFIXES:  # a file a folder listing would read back as an input
        for source in sources:
            if source.is_dir() and source.resolve() in target.parents:
                raise InputError(f"Refusing to write {path}: it is inside {source}, a folder this command reads; write it elsewhere")
    blocking = _non_folder_above(path)
    if blocking is not None:
        raise InputError(f"Cannot write {path}: {blocking} is not a folder")
    if kind == "file" and not new_folders and not path.parent.is_dir():
        raise InputError(f"Output folder does not exist: {path.parent}")
    if os.path.lexists(path):
        found = _kind_of(path)
        if found == "broken link":  # replaced by the rename like a file
            found = kind or "file"
        if found not in ("file", "folder") or (kind is not None and found != kind):
            raise InputError(f"Refusing to write {path}: it is {_A_KIND[found]}, not a {kind or 'file or folder'}")
        if not overwrite:
            raise InputError(exists_message(path))
    written = _written_folder(path, kind)
    if written is not None and not os.access(written, os.W_OK | os.X_OK):  # a read-only file system, or not ours
        raise OutputError(f"Cannot write {path}: {written} is not writable")
    return path


def _written_folder(path, kind):
    """The folder an output `path` is written in: itself where it is a folder that exists (an
    output folder filled in place; `kind` "folder" or None), else the nearest of its parents
    that exists (where a file is renamed into place, or the missing folders are created)."""
    if kind != "file" and path.is_dir():
        return path
    return next((parent for parent in path.parents if os.path.lexists(parent)), None)


def _non_folder_above(path):
    """The nearest of `path`'s parents that exists, where it is not a folder (a file, or a link to
    none), or None: what keeps `path` and the folders it needs from being created."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if os.path.isdir(parent) else parent
    return None


_A_KIND = {"file": "a file", "folder": "a folder", "pipe": "a named pipe", "device": "a device", "socket": "a socket"}


def _kind_of(path):
    """What `path` is, following links: "file", "folder", "pipe", "device", "socket" or "broken link"."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "broken link"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "pipe"
    return "socket" if stat.S_ISSOCK(mode) else "device"


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


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
def atomic_path(path, *, fsync=False, as_input_error=False, overwrite=True, needed=None):
    """Yields a temporary path (`temporary_sibling`, not yet created) to write `path`'s content
    to; renamed onto `path` when the block ends normally, removed when it raises (or is
    interrupted). Writers that choose a format from the file name must be told the format
    (e.g. `save(tmp, format="PNG")`) or given an open file.

    `fsync`: flush the file, then the rename, to disk (for files that must survive a power loss).
    `as_input_error`: a missing output folder raises `InputError("Output folder does not
    exist: FOLDER")` and any OSError `OutputError("Cannot write PATH: reason")`.
    `overwrite=False`: `path` is created, never replaced (`publish_new`): one that exists when
    the content is complete (another process wrote it meanwhile) raises `FileExistsError`
    (`InputError(exists_message(path))` with `as_input_error`), the temporary removed.
    A full disk raises `DiskFullError` naming `path` (and `needed` bytes, where given); stale
    temporaries of `path` are removed first (`remove_stale_temporaries`).
    """
    path = pathlib.Path(path)
    if as_input_error and not path.parent.is_dir():
        raise InputError(f"Output folder does not exist: {path.parent}")
    temporaries = []
    with _reported(path, as_input_error), reporting_disk_full(path, needed, within=temporaries):
        remove_stale_temporaries(path)
        tmp = temporary_sibling(path)
        temporaries.append(tmp)
        try:
            yield tmp
            if fsync:
                _fsync(tmp)
            if overwrite:
                os.replace(tmp, path)
            else:
                publish_new(tmp, path)
            if fsync:
                _fsync(path.parent)
        except BaseException:
            _remove(tmp)
            raise


def publish_new(tmp, path):
    """Renames the complete file `tmp` to `path` unless `path` exists (`FileExistsError`, `tmp`
    left in place), atomically: a hard link is created or fails as one step (`os.link`), then the
    temporary name removed. Where the file system has no hard links, a check then a rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path, data, *, fsync=False, as_input_error=False, overwrite=True):
    """Writes `data` (bytes, or str written as UTF-8) to `path`, whole or not at all (see
    `atomic_path` for `fsync`, `as_input_error` and `overwrite`). Returns `path` as a Path."""
    path = pathlib.Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path, fsync=fsync, as_input_error=as_input_error, overwrite=overwrite, needed=len(data)) as tmp:
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
def atomic_directory(path, *, replace=False, as_input_error=False, needed=None):
    """Yields a new empty hidden folder next to `path` (its parents created) to fill; renamed to
    `path` when the block ends normally (`replace_directory`: `path` absent or an empty folder,
    or anything when `replace`), deleted with its contents when the block raises (and the
    parents it created, left empty). A full disk raises `DiskFullError` naming `path` (and
    `needed` bytes, where given); stale temporaries of `path` are removed first
    (`remove_stale_temporaries`): a `scratch_directory` that is renamed into place."""
    with _reported(path, as_input_error), scratch_directory(path, needed) as staging:
        yield staging
        replace_directory(staging, path, replace)


@contextlib.contextmanager
def scratch_directory(near, needed=None):
    """Yields a new empty hidden folder next to `near` (same file system: its contents can be
    renamed into place), deleted with its contents when the block ends, however it ends (and,
    when it raises, the parents it created, left empty). A full disk in the block raises
    `DiskFullError` naming `near` (and `needed` bytes, where given); stale temporaries of `near`
    are removed first (`remove_stale_temporaries`)."""
    near = pathlib.Path(near)
    temporaries = []
    with reporting_disk_full(near, needed, within=temporaries):
        created = make_folder(near.parent)
        remove_stale_temporaries(near)
        scratch = temporary_sibling(near)
        temporaries.append(scratch)
        try:
            scratch.mkdir()
            yield scratch
        except BaseException:
            _remove(scratch)
            remove_if_empty(created)
            raise
        _remove(scratch)


def read_bounded(path, limit, what):
    """The bytes of the file `path`, of which at most `limit + 1` are ever read: `DataError`
    ("Cannot read PATH: ...") where it cannot be read or holds more than `limit` bytes, "far
    more than `what`" (a file read before it is trusted: metadata, a graph to check)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as error:
        raise DataError(f"Cannot read {path}: {reason(error)}") from None
    if len(data) > limit:
        raise DataError(f"Cannot read {path}: it has more than {limit:,} bytes, far more than {what}")
    return data


def make_folder(folder):
    """Creates `folder` with its missing parents; returns the folders it created, innermost first."""
    folder = pathlib.Path(folder)
    missing, current = [], pathlib.Path(os.path.abspath(folder))
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_if_empty(folders):
    """Removes each folder (innermost first) that is empty: another writer's content stays."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)
