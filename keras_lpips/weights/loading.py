"""Resolves the `backbone_weights=` and `lin_weights=` arguments to arrays, and assigns them."""

import contextlib
import contextvars
import importlib.resources
import pathlib
import re

import numpy as np

from keras_lpips.errors import InputError, WeightsError, WeightsUnavailableError, reason
from keras_lpips.presets import canonical_net
from keras_lpips.weights import sources
from keras_lpips.weights.cache import sha256_of
from keras_lpips.weights.convert import (
    assign_torchvision_weights,
    lin_vector,
    lin_vectors_from_lpips_state,
    missing_lin_weights,
)
from keras_lpips.weights.npz_file import read_npz
from keras_lpips.weights.pretrained import imagenet_state_dict
from keras_lpips.weights.safe_pickle import read_state_dict
from keras_lpips.weights.safetensors_file import read_safetensors


def read_weight_file(path):
    """A `.pth` (torch zip or legacy, read without torch), `.npz` or `.safetensors` state dict, by
    `path`'s suffix; `WeightsError` (one line naming the file) for a missing, unreadable, malformed
    or hostile file. Each reader opens it with `untrusted.open_weight_file` and bounds what it
    allocates before allocating it."""
    path = pathlib.Path(path)
    if path.suffix == ".npz":
        return read_npz(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_state_dict(path)


def backbone_state(backbone_weights, spec, progress=None):
    """torchvision-layout backbone weights for "imagenet" or a path."""
    if backbone_weights == sources.IMAGENET:
        return imagenet_state_dict(spec.name, progress=progress)
    return read_weight_file(backbone_weights)


def shipped_lin_path(version, net):
    """Path of the official linear weights shipped in saved_models/lpips_lin/."""
    return importlib.resources.files("keras_lpips.saved_models") / "lpips_lin" / version / f"{net}.npz"


def lin_vectors(lin_weights, spec, count, advise_layers=True):
    """`count` per-channel weight vectors for "v0.1", "v0.0" or a path; a file with fewer is a
    `WeightsError` (`missing_lin_weights`: with `advise_layers`, saying which `layers=` takes it)."""
    if lin_weights in sources.LIN_VERSIONS:
        path = shipped_lin_path(lin_weights, spec.name)
        if not path.is_file() or sha256_of(path) != sources.LIN_SHA256[f"{lin_weights}/{spec.name}.npz"]:
            raise WeightsError(f"Shipped linear weights {path} are missing or damaged (sha256 mismatch); reinstall.")
        state = read_weight_file(path)
    else:
        state = read_weight_file(lin_weights)
    if any(f"lin{k}" in state for k in range(count)):
        missing = [k for k in range(count) if f"lin{k}" not in state]
        if missing:
            held = {int(str(key)[3:]) for key in state if re.fullmatch(r"lin\d+", str(key))}
            raise missing_lin_weights(lin_weights, f"lin{missing[0]}", missing[0], held, advise_layers)
        vectors = [lin_vector(state[f"lin{k}"], str(lin_weights), f"lin{k}") for k in range(count)]
    else:
        vectors = lin_vectors_from_lpips_state(state, count, source=str(lin_weights), advise_layers=advise_layers)
    for k, (vector, channels) in enumerate(zip(vectors, spec.channels)):
        if vector.shape != (channels,):
            raise WeightsError(f"{lin_weights}: layer {k} has {vector.shape[0]} weights, net {spec.name!r} needs {channels}")
    return vectors


_SOURCES_DEFERRED = contextvars.ContextVar("keras_lpips_sources_deferred", default=False)


@contextlib.contextmanager
def sources_deferred():
    """Within it, `restore_weights` reads no weight source: for loading a saved model, whose
    file supplies every variable (so that a `.keras` file loads offline, without the cache)."""
    token = _SOURCES_DEFERRED.set(True)
    try:
        yield
    finally:
        _SOURCES_DEFERRED.reset(token)


def check_backbone_weights_net(backbone_weights, net, argument="net"):
    """`InputError` where `backbone_weights` is "keras-imagenet" and `net` (any of its names) is no
    vgg: Keras Applications has ImageNet weights for VGG16 only. `argument`: what the caller's user
    gave the net as (`LPIPS`: net=, `fit`: backbone=), named in the message."""
    if backbone_weights == sources.KERAS_IMAGENET and canonical_net(net) != "vgg":
        raise InputError(f"backbone_weights='keras-imagenet' exists for vgg only. Received: {argument}={net!r}")


def restore_weights(metric, backbone_weights, lin_weights):
    """Assigns an `LPIPS` metric's weights from its two sources (see `LPIPS`'s arguments)."""
    spec = metric.spec
    check_backbone_weights_net(backbone_weights, spec.name)
    if backbone_weights == sources.KERAS_IMAGENET and metric.heads and lin_weights in sources.LIN_VERSIONS:
        raise InputError(
            "The official linear weights were calibrated on torchvision's ImageNet features; with "
            "backbone_weights='keras-imagenet' pass lin_weights=None or a file trained for it. "
            f"Received: lin_weights={lin_weights!r}"
        )
    if backbone_weights is None:
        _seeded_init(metric.backbone, metric.seed)
    if _SOURCES_DEFERRED.get():
        return
    if backbone_weights == sources.KERAS_IMAGENET:
        _assign_keras_applications_vgg16(metric.backbone)
    elif backbone_weights is not None:
        state = backbone_state(backbone_weights, spec)
        assign_torchvision_weights(metric.backbone, state, spec.torchvision_names, source=str(backbone_weights))
    if metric.heads and lin_weights is not None:
        for head, vector in zip(metric.heads, lin_vectors(lin_weights, spec, metric.layers_kept)):
            head.kernel.assign(vector[:, None])


def _assign_keras_applications_vgg16(backbone):
    """Copies Keras Applications' ImageNet VGG16 (fetched by Keras into its cache) into `backbone`;
    `WeightsUnavailableError` where Keras cannot fetch it."""
    import keras

    try:
        vgg = keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=(None, None, 3))
    except Exception as error:  # keras.utils.get_file raises a bare Exception for a failed download
        if not str(error).startswith("URL fetch failure"):
            raise
        raise WeightsUnavailableError(
            f"Cannot fetch Keras Applications' ImageNet VGG16 weights for backbone_weights='keras-imagenet' "
            f"({reason(error)}); connect once to cache them in $KERAS_HOME/models"
        ) from None
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(vgg.get_layer(layer.name).get_weights())


def _seeded_init(model, seed):
    """Re-draws every conv kernel He-normal and zeroes biases, from `seed`."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            fan_in = int(np.prod(kernel.shape[:3]))
            kernel = rng.standard_normal(kernel.shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            layer.set_weights([kernel, np.zeros_like(bias)])
