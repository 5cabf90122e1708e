"""Reads and writes `.safetensors` weight files with numpy alone (no `safetensors` package).

The format (https://huggingface.co/docs/safetensors): an unsigned little-endian 64-bit header
length N, N bytes of JSON `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin,
end]}, "__metadata__": {str: str}}`, then the tensors' raw little-endian C-order bytes, offsets
relative to the end of the header. Nothing in it executes: reading is parsing. Every offset,
shape and dtype is checked against the header and the file's size (shapes in Python ints, of at
most `untrusted.MAX_DIMS` dimensions: no overflow, nothing numpy cannot make), the buffer must be
covered exactly (no holes, no overlaps), and anything else, a parse failure included, is refused
as one `WeightsError` naming the file.
"""

import json
import pathlib
import struct

import numpy as np

from keras_lpips.argument_checks import is_integer
from keras_lpips.errors import WeightsError, reason
from keras_lpips.weights import untrusted

# The format's dtype names -> numpy (little-endian); BF16 is widened to float32 when read.
DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}  # fmt: skip
BF16 = "BF16"
NUMPY_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
# The reference implementation refuses headers above 100 MB; the weight files keras-lpips reads
# have a few KB (VGG16's 32 tensors: 3 KB), and parsed JSON takes about ten times its size in memory.
MAX_HEADER = 1 << 20
METADATA = "__metadata__"


def read_safetensors(path):
    """{name: array} of the `.safetensors` file at `path` (BF16 as float32); `WeightsError`
    naming the file and the problem for anything malformed."""
    path = pathlib.Path(path)
    with untrusted.open_weight_file(path) as file:
        try:
            data = file.read()
        except OSError as error:
            raise WeightsError(f"Cannot read weight file {path}: {reason(error)}") from None
    try:
        return parse(data)
    except WeightsError as error:
        raise WeightsError(f"{path} is not a valid .safetensors file: {error}") from None
    except Exception as error:  # whatever a hostile header may still provoke: one line all the same
        raise WeightsError(f"{path} is not a valid .safetensors file: {type(error).__name__}: {error}") from None


def parse(data):
    """{name: array} of a `.safetensors` file's bytes (see `read_safetensors`)."""
    if len(data) < 8:
        raise WeightsError(f"{len(data)} bytes, fewer than the 8 of the header length")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise WeightsError(f"the header claims {size} bytes; the file has {len(data) - 8} after the length")
    if size > MAX_HEADER:
        raise WeightsError(f"the header has {size:,} bytes; headers of at most {MAX_HEADER:,} are read")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as error:
        raise WeightsError(f"the header is not JSON: {error}") from None
    except RecursionError:
        raise WeightsError("the header is not JSON a reader can parse: its arrays or objects nest too deeply") from None
    if not isinstance(header, dict):
        raise WeightsError(f"the header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop(METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError(f"{METADATA} must map strings to strings")
    buffer = memoryview(data)[8 + size :]
    entries = sorted((_entry(name, info) for name, info in header.items()), key=lambda e: e[3])
    end_of_previous = 0
    arrays = {}
    for name, dtype, shape, begin, end in entries:
        if begin != end_of_previous:
            problem = "overlaps the tensor before it" if begin < end_of_previous else f"leaves bytes {end_of_previous}..{begin} unused"
            raise WeightsError(f"tensor {name!r} at offset {begin} {problem}")
        if end > len(buffer):
            raise WeightsError(f"tensor {name!r} ends at byte {end}; the data has {len(buffer)}")
        arrays[name] = _array(buffer[begin:end], dtype, shape)
        end_of_previous = end
    if end_of_previous != len(buffer):
        raise WeightsError(f"{len(buffer) - end_of_previous} bytes after the last tensor")
    return arrays


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise WeightsError(f"the header names {sorted(k for k in set(keys) if keys.count(k) > 1)} twice")
    return dict(pairs)


def _entry(name, info):
    """(name, dtype, shape, begin, end) of one header entry, its fields checked."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise WeightsError(f"tensor {name!r}: expected exactly dtype, shape and data_offsets. Received: {info!r}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES and dtype != BF16:
        raise WeightsError(f"tensor {name!r} has dtype {dtype!r}; readable: {', '.join([*DTYPES, BF16])}")
    if not isinstance(shape, list):
        raise WeightsError(f"tensor {name!r} has shape {shape!r:.100}, not a list of non-negative integers")
    itemsize = 2 if dtype == BF16 else np.dtype(DTYPES[dtype]).itemsize
    shape, nbytes = untrusted.checked_shape(shape, itemsize, f"tensor {name!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_natural(o) for o in offsets) or offsets[0] > offsets[1]:
        raise WeightsError(f"tensor {name!r} has data_offsets {offsets!r:.100}, not [begin, end] with begin <= end")
    if offsets[1] - offsets[0] != nbytes:
        raise WeightsError(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {list(shape)} of {dtype}")
    return name, dtype, shape, offsets[0], offsets[1]


def _natural(value):
    return is_integer(value) and value >= 0


def _array(raw, dtype, shape):
    if dtype == BF16:  # the upper half of a float32
        halves = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    return np.frombuffer(raw, DTYPES[dtype]).astype(np.dtype(DTYPES[dtype]).newbyteorder("="), copy=True).reshape(shape)


def safetensors_bytes(arrays, metadata=None):
    """The `.safetensors` file holding `arrays` ({name: array}, in name order) and `metadata`
    ({str: str}); the data starts at a multiple of 8 bytes, as the reference writer aligns it."""
    header, chunks, offset = {}, [], 0
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        little = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
        if little not in NUMPY_NAMES:
            raise WeightsError(f"{name!r} has dtype {array.dtype}, which .safetensors cannot hold")
        chunk = np.ascontiguousarray(array, little).tobytes()
        header[name] = {"dtype": NUMPY_NAMES[little], "shape": list(array.shape), "data_offsets": [offset, offset + len(chunk)]}
        chunks.append(chunk)
        offset += len(chunk)
    if metadata:
        header[METADATA] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)
