"""Weight files in the formats people have: `.safetensors` read and written (backbone and linear
weights, `weights convert`), malformed ones refused; torch.hub's copy of torchvision's file used
instead of a download when it verifies, refused with a note when it does not; downloads showing
their size and speed."""

import hashlib
import pickle
import struct
import types

import numpy as np
import pytest
from keras_lpips.cli import options

from keras_lpips import LPIPS
from keras_lpips.errors import WeightsError
from keras_lpips.weights import pretrained, sources
from keras_lpips.weights.cache_folder import cache_dir
from keras_lpips.weights.loading import read_weight_file, shipped_lin_path
from keras_lpips.weights.safetensors_file import safetensors_bytes
from tests.helpers import one_error_line, pin_features, run_cli

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
    "empty": (b"", "fewer than the 8 of the header length"),
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
}


@pytest.mark.parametrize("data,message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_safetensors_are_refused(tmp_path, data, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match=f"{path} is not a valid .safetensors file: .*{message}"):
        read_weight_file(path)


def test_convert_refuses_a_malformed_source_and_other_destinations(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(MALFORMED["a hole"][0])
    result = run_cli("weights", "convert", bad, tmp_path / "out.npz", "--net", "alex")
    assert result.returncode == 1 and "is not a valid .safetensors file" in one_error_line(result)
    result = run_cli("weights", "convert", shipped_lin_path("v0.1", "alex"), tmp_path / "out.pt", "--net", "alex")
    assert result.returncode == 1 and "must be a .npz or .safetensors" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]
    with pytest.raises(WeightsError, match="'names' has dtype <U1"):
        safetensors_bytes({"names": np.array(["a"])})


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
    assert_state(pretrained.imagenet_state_dict("alex"), state)
    assert server.ranges == [None]  # downloaded once, whole
    note = capsys.readouterr().err
    assert f"note: not using torch.hub's copy {hub}: Checksum mismatch" in note and "downloading instead" in note
    assert hub.read_bytes() == bytes(corrupt)  # torch.hub's file is left as it was
    assert (cache_dir() / hub.name).read_bytes() == data


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
