"""Reads `.npz` weight files (numpy's `savez`, `savez_compressed`) without trusting them.

`np.load` allocates each array at the size its header claims before reading the data, and reads
a member that is no `.npy` whole, however far it inflates. Here each member's declared size and
each array's header are checked before anything is inflated or allocated: object and structured
dtypes are refused (they would need a pickle), shapes are bounded as `untrusted.checked_shape`
bounds them, a member must declare the bytes its shape needs and is read no further, and a
file's arrays take at most `untrusted.MAX_BYTES` in all. What passes reads as `np.load` reads it:
{name: array} (native byte order, writeable), in the file's order.
"""

import io
import math
import os
import struct
import zipfile

import numpy as np

from keras_lpips.errors import WeightsError, reason
from keras_lpips.weights import untrusted

# The longest .npy header read: np.load's own limit (max_header_size); np.save writes ~120 bytes.
MAX_NPY_HEADER = 10_000
# .npy format version -> (format of its header length, numpy's parser of that header).
_HEADERS = {
    (1, 0): ("<H", np.lib.format.read_array_header_1_0),
    (2, 0): ("<I", np.lib.format.read_array_header_2_0),
}  # fmt: skip
_MAGIC = b"\x93NUMPY"


def read_npz(path):
    """{name: array} of the `.npz` file at `path`; `WeightsError` ("Cannot read weight file
    PATH: ...") for anything unreadable, malformed or beyond the limits."""
    with untrusted.open_weight_file(path) as file:
        return read_npz_stream(file, f"weight file {path}")


def read_saved_npz(path, what, text=False):
    """`read_npz_stream` of the `.npz` file at `path` that `np.savez` wrote (members stored, not
    compressed: embed files, checkpoints), bounded by the file's own size rather than a weight
    file's: its arrays take no more, however large (an embed file of a million images), and a
    member that inflates past it is refused. `OSError` where it cannot be opened."""
    with open(path, "rb") as file:
        return read_npz_stream(file, what, text, limit=os.fstat(file.fileno()).st_size)


def read_npz_stream(file, what, text=False, limit=None):
    """{name: array} of the `.npz` file open for binary reading as `file`, bounded as `read_npz`
    bounds a weight file's (also for other untrusted `.npz` files: embed files, checkpoints):
    members and arrays of at most `limit` bytes in all (default `untrusted.MAX_BYTES`); `text`: unicode string arrays are read
    too. `WeightsError` ("Cannot read `what`: ...") for anything unreadable, malformed or beyond
    the limits."""
    try:
        with zipfile.ZipFile(file) as archive:
            return _read_archive(archive, "biufcU" if text else "biufc", limit)
    except WeightsError as error:
        raise WeightsError(f"Cannot read {what}: {error}") from None
    except OSError as error:  # the disk, not the file's content
        raise WeightsError(f"Cannot read {what}: {reason(error)}") from None
    except Exception as error:  # zipfile, zlib, struct and numpy raise many types for damaged files
        raise WeightsError(
            f"Cannot read {what}: not a .npz archive, or truncated or corrupt ({type(error).__name__}: {error})"
        ) from None


def _read_archive(archive, kinds, limit):
    arrays, budget = {}, untrusted.ByteBudget(limit=limit)
    for name in archive.namelist():
        if not name.endswith(".npy"):
            raise WeightsError(f"member {name!r} is not a .npy array")
        key = name[: -len(".npy")]
        if key in arrays:
            raise WeightsError(f"the archive holds {name!r} twice")
        info = untrusted.zip_member(archive, name, limit=limit)
        with archive.open(info) as member:
            arrays[key] = _read_npy(member, info.file_size, key, budget, kinds)
    return arrays


def _read_npy(member, size, key, budget, kinds):
    """The array in the .npy `member` of declared size `size`, its header checked before its
    data is read and its bytes taken from `budget`; `kinds`: the dtype kinds read."""
    magic = member.read(len(_MAGIC) + 2)
    if len(magic) < len(_MAGIC) + 2 or not magic.startswith(_MAGIC):
        raise WeightsError(f"{key!r} is not a .npy array (it does not start with the .npy magic bytes)")
    version = tuple(magic[-2:])
    if version not in _HEADERS:
        raise WeightsError(f"{key!r} is a .npy array of format version {version[0]}.{version[1]}; 1.0 and 2.0 are read")
    length_format, parse_header = _HEADERS[version]
    length_bytes = member.read(struct.calcsize(length_format))
    (length,) = struct.unpack(length_format, length_bytes)
    if length > MAX_NPY_HEADER:
        raise WeightsError(f"{key!r} has a .npy header of {length:,} bytes; headers of at most {MAX_NPY_HEADER:,} are read")
    header = length_bytes + member.read(length)
    shape, fortran, dtype = parse_header(io.BytesIO(header), max_header_size=MAX_NPY_HEADER)
    if dtype.kind not in kinds:  # objects and records would need a pickle; strings, dates: no weights
        text = " or text" if "U" in kinds else ": weights are integers or floats"
        raise WeightsError(f"{key!r} has dtype {dtype}, not numeric{text}")
    shape, nbytes = untrusted.checked_shape(shape, dtype.itemsize, repr(key), budget.limit)
    left = size - len(magic) - len(header)
    if left < nbytes:
        raise WeightsError(f"{key!r} of shape {shape} and dtype {dtype} needs {nbytes:,} bytes of data; its member holds {left:,}")
    budget.take(nbytes, f"{key!r} ({nbytes:,} bytes)")
    flat = untrusted.read_array(member, dtype, math.prod(shape), repr(key))  # zipfile inflates no more than this
    return flat.reshape(shape, order="F" if fortran else "C")
