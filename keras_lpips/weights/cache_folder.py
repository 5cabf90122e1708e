"""Where the weight cache lives: `$KERAS_HOME/keras_lpips` (default `~/.keras/keras_lpips`), or
Keras' own fallback `/tmp/.keras/keras_lpips` where that cannot be written, the name of each
net's cached ImageNet backbone in it, and whether only the cache may be used
(`KERAS_LPIPS_OFFLINE`).

Only writing creates folders: finding an entry to read (`cached_file`, `imagenet_cache_path`,
`keras-lpips weights list`) leaves none behind, and a fetch that fails removes the folders it
created (`removed_if_left_empty`)."""

import contextlib
import contextvars
import os
import pathlib
import tempfile

from keras_lpips import files
from keras_lpips.errors import InputError, OutputError, note


# KERAS_LPIPS_OFFLINE's values (case-insensitive) and what they mean; anything else is refused.
OFFLINE_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def offline():
    """Whether `KERAS_LPIPS_OFFLINE` asks for no network (the cache, and torch.hub's local copy,
    only): 1, true or yes; 0, false, no, empty or unset mean online; anything else is an
    `InputError`."""
    value = os.environ.get("KERAS_LPIPS_OFFLINE", "")
    try:
        return OFFLINE_VALUES[value.strip().lower()]
    except KeyError:
        raise InputError(
            f"KERAS_LPIPS_OFFLINE must be 1, true or yes (no network) or 0, false, no or empty (download when "
            f"needed). Received: KERAS_LPIPS_OFFLINE={value!r}"
        ) from None


def keras_home():
    """`$KERAS_HOME`, or `~/.keras` where it is unset or empty (as Keras reads it)."""
    return pathlib.Path(os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")))


def cache_dir(create=True):
    """The weight cache's folder, created on demand: `$KERAS_HOME/keras_lpips` (default
    `~/.keras/keras_lpips`). Where that cannot be written (a read-only place), the folder
    `keras.utils.get_file` falls back to, `/tmp/.keras/keras_lpips`, said once on stderr.
    `KERAS_HOME` (or its `keras_lpips`) naming something that is not a folder is an `InputError`.
    With `create=False`, the folder it would be, created or not (nothing is created)."""
    cache_dir_checked()
    primary = keras_home() / "keras_lpips"
    if _writable_folder(primary, create):
        return primary
    fallback = FALLBACK_HOME / "keras_lpips"
    if not _writable_folder(fallback, create):
        raise OutputError(f"Cannot write the weight cache in {primary} nor in {fallback}: set KERAS_HOME to a writable folder")
    if primary not in _FALLBACKS_SAID:
        _FALLBACKS_SAID.add(primary)
        note(f"{primary} is not writable; keras-lpips caches weights in {fallback} instead (as Keras does)")
    return fallback


# Where `keras.utils.get_file` caches when the Keras home cannot be written; so does keras-lpips.
FALLBACK_HOME = pathlib.Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
_FALLBACKS_SAID = set()


_CREATED = contextvars.ContextVar("keras_lpips_cache_folders_created", default=None)


@contextlib.contextmanager
def removed_if_left_empty():
    """Within it, the folders `cache_dir` creates (the cache folder, and the Keras home where it
    was missing) are noted, and removed when the block ends if they are empty: a fetch that
    fails leaves no folder behind (a download's `.part`, kept to resume it, keeps its folder; a
    fetch that succeeds leaves its entry in it)."""
    created = []
    token = _CREATED.set(created)
    try:
        yield
    finally:
        _CREATED.reset(token)
        files.remove_if_empty(sorted(created, key=lambda folder: len(folder.parts), reverse=True))


def _writable_folder(path, create=True):
    """Whether this process can write in the folder `path`, which is created if need be; with
    `create=False` nothing is left behind: a missing folder counts as writable where a folder can
    be made in the nearest one above it that exists (tried with one of a unique name, removed
    at once: `os.access` says yes to root even where nothing can be made, as in /proc)."""
    if not create and not os.path.lexists(path):
        above = pathlib.Path(os.path.abspath(path))
        while not os.path.lexists(above) and above != above.parent:
            above = above.parent
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".keras-lpips-probe-", dir=above))
        except OSError:
            return False
        return True
    if create:
        try:
            created = files.make_folder(path)
        except OSError:
            return False
        if _CREATED.get() is not None:
            _CREATED.get().extend(created)
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def cached_file(name, for_writing=False):
    """The cache entry `name` (a path relative to the cache folder). For writing: in `cache_dir()`.
    For reading: `$KERAS_HOME/keras_lpips/NAME` where it exists, writable or not (a cache filled
    ahead of time; entries are verified on every read all the same); else, where that folder
    cannot be written, the fallback's entry where it exists; else the entry `cache_dir()` would
    write, or where nothing can be written, the first (not there: fetching it raises `OutputError`).
    Reading what is there never needs a writable folder, and creates none."""
    if for_writing:
        return cache_dir() / name
    cache_dir_checked()
    primary, fallback = keras_home() / "keras_lpips", FALLBACK_HOME / "keras_lpips"
    if (primary / name).is_file():
        return primary / name
    if (fallback / name).is_file() and not _writable_folder(primary, create=False):
        return fallback / name
    try:
        return cache_dir(create=False) / name
    except OutputError:
        return primary / name


def cache_dir_checked():
    """Raises the `InputError` of `cache_dir` where `KERAS_HOME` (or its `keras_lpips`) names
    something that is not a folder; creates nothing."""
    home = keras_home()
    for path in (home, home / "keras_lpips"):
        if os.path.lexists(path) and not path.is_dir():
            where = f"KERAS_HOME={path}" if path == home and os.environ.get("KERAS_HOME") else str(path)
            raise InputError(f"{where} is not a folder; the weight cache goes in a folder $KERAS_HOME/keras_lpips (point KERAS_HOME at a folder)")


def imagenet_cache_path(net, for_writing=False):
    """The cached, converted ImageNet backbone of `net` (a canonical name: "alex", "vgg", "squeeze"):
    `cached_file` of its name."""
    return cached_file(f"{net}-imagenet-features.npz", for_writing)
