"""Resolves the `backbone_weights=` and `lin_weights=` arguments to arrays."""

import importlib.resources
import pathlib

import numpy as np

from keras_lpips.errors import WeightsError
from keras_lpips.weights import sources
from keras_lpips.weights.cache import sha256_of
from keras_lpips.weights.convert import float32_weights, lin_vectors_from_lpips_state
from keras_lpips.weights.pretrained import imagenet_state_dict
from keras_lpips.weights.safe_pickle import read_state_dict


def read_weight_file(path):
    """A `.pth` (torch zip or legacy, read without torch) or `.npz` state dict."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsError(f"Weight file not found: {path}")
    if path.suffix == ".npz":
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception as error:  # zipfile, zlib and numpy raise many types for damaged files
            raise WeightsError(f"Cannot read weight file {path}: {error or type(error).__name__}") from None
    return read_state_dict(path)


def backbone_state(backbone_weights, spec, progress=None):
    """torchvision-layout backbone weights for "imagenet" or a path."""
    if backbone_weights == "imagenet":
        return imagenet_state_dict(spec.name, progress=progress)
    return read_weight_file(backbone_weights)


def shipped_lin_path(version, net):
    """Path of the official linear weights shipped in saved_models/lpips_lin/."""
    return importlib.resources.files("keras_lpips.saved_models") / "lpips_lin" / version / f"{net}.npz"


def lin_vectors(lin_weights, spec, count):
    """`count` per-channel weight vectors for "v0.1", "v0.0" or a path."""
    if lin_weights in sources.LIN_VERSIONS:
        path = shipped_lin_path(lin_weights, spec.name)
        sums = dict(
            line.split()[::-1] for line in (path.parent.parent / "SHA256SUMS").read_text().splitlines() if line.strip()
        )
        expected = sums.get(f"{lin_weights}/{spec.name}.npz")
        if expected is None or sha256_of(path) != expected:
            raise WeightsError(f"Shipped linear weights {path} are missing or damaged (sha256 mismatch); reinstall.")
        state = read_weight_file(path)
    else:
        state = read_weight_file(lin_weights)
    if f"lin{count - 1}" in state:
        vectors = [float32_weights(state[f"lin{k}"], str(lin_weights), f"lin{k}").reshape(-1) for k in range(count)]
    else:
        vectors = lin_vectors_from_lpips_state(state, count, source=str(lin_weights))
    for k, (vector, channels) in enumerate(zip(vectors, spec.channels)):
        if vector.shape != (channels,):
            raise WeightsError(f"{lin_weights}: layer {k} has {vector.shape[0]} weights, net {spec.name!r} needs {channels}")
    return vectors
