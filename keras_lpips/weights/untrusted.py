"""What every weight-file reader holds a file to: weight files come from anywhere
(`--lin-weights`, `--backbone-weights`, `keras-lpips weights convert`), so each is treated as hostile.

* `open_weight_file` is the one place a weight file is opened, for every format: a missing
  file, a folder, a device, an unreadable, an empty or an oversized file is one `WeightsError`
  line, the same whatever the suffix.
* `checked_shape`, `ByteBudget` and `zip_member` bound every array and every zip member before
  anything is allocated or inflated, in Python ints (no overflow): a file of a few hundred bytes
  cannot make a reader allocate gigabytes (a huge shape, a stride-0 view, a member that inflates
  to gigabytes, one array referenced a thousand times).
* `describe` shows a value from a file in an error message in bounded time and length.
"""

import math
import os
import stat

import numpy as np

from keras_lpips.errors import WeightsError, reason

# The most bytes one weight file may be, and the most its arrays may take once read (each of the
# storages read from it and the arrays made of them). The largest file a supported net has,
# torchvision's VGG16 ImageNet weights (classifier included), is 528 MB: this leaves it twice
# the room and keeps what a hostile file can make a reader allocate to a few GB at most.
MAX_BYTES = 1 << 30
# The most dimensions an array may have: weights have at most 4 (OIHW); numpy 1 allowed 32.
MAX_DIMS = 32
# What `read_array` reads at a time.
_CHUNK = 1 << 24


def open_weight_file(path):
    """The file at `path`, opened for binary reading (use it in a `with`); `WeightsError` naming
    it when it is missing, a directory or not a regular file, cannot be opened, is empty (0 bytes:
    "Weight file 'PATH' is empty", for every format), or is larger than `MAX_BYTES`."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise WeightsError(f"Weight file {path} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise WeightsError(f"Weight file {path} is not a regular file (a device, pipe or socket)")
        if info.st_size == 0:
            raise WeightsError(f"Weight file {path!r} is empty")
        if info.st_size > MAX_BYTES:
            raise WeightsError(f"Weight file {path} has {info.st_size:,} bytes; weight files are read up to {MAX_BYTES:,}")
        return open(path, "rb")  # the caller closes it (a `with`)
    except FileNotFoundError:
        raise WeightsError(f"Weight file not found: {path}") from None
    except OSError as error:  # permission denied, a path through a file, an I/O error
        raise WeightsError(f"Cannot read weight file {path}: {reason(error)}") from None


def checked_shape(shape, itemsize, what, limit=None):
    """`shape` as a tuple and the bytes an array of it with `itemsize`-byte elements takes;
    `WeightsError` naming `what` unless it is a list or tuple of at most `MAX_DIMS` non-negative
    ints and the array, and each of its dimensions, fits in `limit` bytes (default `MAX_BYTES`;
    zero-size arrays too: numpy refuses dimensions past 2**63)."""
    limit = MAX_BYTES if limit is None else limit
    if not isinstance(shape, (list, tuple)) or not all(type(n) is int and n >= 0 for n in shape):
        raise WeightsError(f"{what} has shape {describe(shape)}, not a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise WeightsError(f"{what} has {len(shape)} dimensions; arrays of at most {MAX_DIMS} are read")
    nbytes = math.prod(shape) * max(itemsize, 1)  # numpy stores a 0-byte item ('S0') in one byte
    if nbytes > limit:
        raise WeightsError(f"{what} has shape {tuple(shape)!r:.100} of {itemsize}-byte elements, {nbytes:,} bytes; "
                           f"arrays of at most {limit:,} bytes are read")
    if max(shape, default=0) * max(itemsize, 1) > limit:  # a zero-size array with a huge dimension
        raise WeightsError(f"{what} has shape {tuple(shape)!r:.100}: a dimension of {max(shape):,} elements is beyond "
                           f"any array read (at most {limit:,} bytes)")
    return tuple(shape), nbytes


def describe(value, depth=2):
    """A short repr of `value`, taken from a hostile file, for an error message. A plain repr could
    run for hours: memo references let a pickle of a few KB make a tuple of 10**12 items.
    Strings, bytes and small ints are shown cut to 60 characters, tuples and lists to their first
    4 items, 2 levels deep; anything else by its type."""
    if isinstance(value, (str, bytes)):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    if type(value) in (bool, float, type(None)) or (type(value) is int and abs(value) < 1 << 64):
        return repr(value)
    if type(value) in (tuple, list) and depth:
        items = [describe(item, depth - 1) for item in value[:4]] + ["..."] * (len(value) > 4)
        if type(value) is list:
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(value) == 1 else f"({', '.join(items)})"
    return f"a {type(value).__name__.strip('_')}"


class ByteBudget:
    """The bytes a reader may still allocate for one file's arrays, `limit` (default `MAX_BYTES`) to start with:
    `take(nbytes, what)` before each allocation refuses the one that would go past it."""

    def __init__(self, kind="arrays", limit=None):
        self.kind = kind
        self.limit = self.left = MAX_BYTES if limit is None else limit

    def take(self, nbytes, what):
        if nbytes > self.left:
            raise WeightsError(f"{what} takes the file's {self.kind} past {self.limit:,} bytes, the most this file may hold")
        self.left -= nbytes


def zip_member(archive, name, needed=0, limit=None):
    """The `ZipInfo` of `archive`'s member `name`, checked before anything is read: its declared
    (inflated) size must hold `needed` bytes and be at most `limit` (default `MAX_BYTES`). zipfile never inflates a
    member past its declared size, so `archive.open(info).read(n)` then allocates at most n bytes."""
    limit = MAX_BYTES if limit is None else limit
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise WeightsError(f"the archive has no member {name!r}") from None
    if info.file_size > limit:
        raise WeightsError(f"member {name!r} inflates to {info.file_size:,} bytes; members of at most {limit:,} are read")
    if info.file_size < needed:
        raise WeightsError(f"member {name!r} has {info.file_size:,} bytes, {needed:,} expected")
    return info


def read_array(stream, dtype, count, what):
    """`count` elements of `dtype` (any byte order) read from `stream` into a new, native-order
    1-D array, a chunk at a time: memory holds the array once, never a second copy of its
    bytes. The caller checks `count` first (`checked_shape`, `ByteBudget`); `WeightsError`
    naming `what` when the stream ends before."""
    array = np.empty(count, dtype)
    view, done = memoryview(array.view(np.uint8)), 0  # any dtype: numpy exports no buffer of some
    while done < len(view):
        read = stream.readinto(view[done : done + _CHUNK])
        if not read:
            raise WeightsError(f"{what} is cut short: {done:,} of its {len(view):,} bytes")
        done += read
    return array if array.dtype.isnative else array.byteswap(inplace=True).view(array.dtype.newbyteorder("="))
