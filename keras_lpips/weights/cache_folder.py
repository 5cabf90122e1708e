"""Where the weight cache lives: `$KERAS_HOME/keras_lpips` (default `~/.keras/keras_lpips`), or
Keras' own fallback `/tmp/.keras/keras_lpips` where that cannot be written, the name of each
net's cached ImageNet backbone in it, and whether only the cache may be used
(`KERAS_LPIPS_OFFLINE`)."""

import os
import pathlib
import tempfile

from keras_lpips.errors import InputError, OutputError, note


# KERAS_LPIPS_OFFLINE's values (case-insensitive) and what they mean; anything else is refused.
OFFLINE_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


def offline():
    """Whether `KERAS_LPIPS_OFFLINE` asks for the cache only: 1, true or yes; 0, false, no, empty
    or unset mean online; anything else is an `InputError`."""
    value = os.environ.get("KERAS_LPIPS_OFFLINE", "")
    try:
        return OFFLINE_VALUES[value.strip().lower()]
    except KeyError:
        raise InputError(
            f"KERAS_LPIPS_OFFLINE must be 1, true or yes (cache only) or 0, false, no or empty (download when "
            f"needed). Received: KERAS_LPIPS_OFFLINE={value!r}"
        ) from None


def keras_home():
    """`$KERAS_HOME`, or `~/.keras` where it is unset or empty (as Keras reads it)."""
    return pathlib.Path(os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")))


def cache_dir():
    """The weight cache's folder, created on demand: `$KERAS_HOME/keras_lpips` (default
    `~/.keras/keras_lpips`). Where that cannot be written (a read-only place), the folder
    `keras.utils.get_file` falls back to, `/tmp/.keras/keras_lpips`, said once on stderr.
    `KERAS_HOME` (or its `keras_lpips`) naming something that is not a folder is an `InputError`."""
    home = keras_home()
    primary = home / "keras_lpips"
    for path in (home, primary):
        if os.path.lexists(path) and not path.is_dir():
            where = f"KERAS_HOME={path}" if path == home and os.environ.get("KERAS_HOME") else str(path)
            raise InputError(f"{where} is not a folder; the weight cache goes in a folder $KERAS_HOME/keras_lpips (point KERAS_HOME at a folder)")
    if _writable_folder(primary):
        return primary
    fallback = FALLBACK_HOME / "keras_lpips"
    if not _writable_folder(fallback):
        raise OutputError(f"Cannot write the weight cache in {primary} nor in {fallback}: set KERAS_HOME to a writable folder")
    if primary not in _FALLBACKS_SAID:
        _FALLBACKS_SAID.add(primary)
        note(f"{primary} is not writable; keras-lpips caches weights in {fallback} instead (as Keras does)")
    return fallback


# Where `keras.utils.get_file` caches when the Keras home cannot be written; so does keras-lpips.
FALLBACK_HOME = pathlib.Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
_FALLBACKS_SAID = set()


def _writable_folder(path):
    """Creates the folder `path` if need be; whether this process can write in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def imagenet_cache_path(net, for_writing=False):
    """The cached, converted ImageNet backbone of `net` (a canonical name: "alex", "vgg", "squeeze"),
    in `cache_dir()`. For reading, where that fell back: the read-only cache's entry when it
    holds one (a cache filled ahead of time; its content is verified on every read all the same)."""
    name = f"{net}-imagenet-features.npz"
    path = cache_dir() / name
    read_only = keras_home() / "keras_lpips" / name
    return read_only if not for_writing and not path.exists() and read_only.is_file() else path
