"""Rewrites weight files as the `.npz` or `.safetensors` keras-lpips reads directly (`keras-lpips weights convert`)."""

import io
import pathlib

import numpy as np

from keras_lpips import files
from keras_lpips.errors import InputError, WeightsError
from keras_lpips.weights.convert import assign_torchvision_weights
from keras_lpips.weights.safetensors_file import safetensors_bytes

# What `convert_weight_file` writes, by the destination's suffix.
SUFFIXES = (".npz", ".safetensors")


def check_conversion(source, destination, overwrite=False, names=("source", "destination")):
    """What `convert_weight_file` checks before reading anything (`InputError`): `source` is a
    file, `destination` is named .npz or .safetensors and may be written (`files.check_output`).
    `names`: how messages name the two (the command line's SOURCE, DESTINATION). Returns
    `destination` as a Path."""
    destination = pathlib.Path(destination)
    if not pathlib.Path(source).is_file():
        raise InputError(f"{names[0]} {source} is not a file")
    if destination.suffix not in SUFFIXES:
        raise InputError(f"{names[1]} must be a .npz or .safetensors file (the formats written). Received: {destination}")
    return files.check_output(destination, [source], overwrite, kind="file")


def convert_weight_file(source, destination, net, overwrite=False):
    """Rewrites a weight file as a `.npz` or `.safetensors` (by `destination`'s suffix), the
    files keras-lpips reads without unpickling.

    `source` is a `.pth` (read without torch), `.npz` or `.safetensors` holding either lpips-format
    linear weights (`lin0.model.1.weight`, ...) or a torchvision backbone state dict
    (`features.0.weight`, ...; `classifier.*` dropped). It is checked against `net`
    (every layer present, every shape right) before anything is written. Linear
    weights become `lin0`, `lin1`, ... (for `lin_weights=`); backbones keep torchvision's
    key names (for `backbone_weights=`). Returns `(kind, parameters)`, kind "linear" or
    "backbone". An existing `destination` is replaced only with `overwrite`, and `source`
    never (`files.check_output`).
    """
    from keras_lpips.backbones import get_backbone  # Keras: after the checks, which need none
    from keras_lpips.weights.loading import lin_vectors, read_weight_file

    destination = check_conversion(source, destination, overwrite)
    spec = get_backbone(net)
    state = read_weight_file(source)
    if any(key.startswith("lin") for key in state):
        kind = "linear"
        vectors = lin_vectors(source, spec, len(spec.taps), advise_layers=False)  # every layer's, converted
        arrays = {f"lin{k}": v for k, v in enumerate(vectors)}
    elif any(key.startswith("features.") for key in state):
        kind = "backbone"
        assign_torchvision_weights(spec.build(len(spec.taps)), state, spec.torchvision_names, source=str(source))
        keys = [f"{prefix}.{param}" for prefix in spec.torchvision_names.values() for param in ("weight", "bias")]
        arrays = {key: np.asarray(state[key], np.float32) for key in keys}
    else:
        shown = ", ".join(sorted(state)[:4])
        raise WeightsError(
            f"{source} holds neither lpips linear weights (lin0.model.1.weight, ...) nor a torchvision "
            f"backbone (features.0.weight, ...). Its keys begin: {shown}"
        )
    if destination.suffix == ".safetensors":
        data = safetensors_bytes(arrays, metadata={"net": spec.name, "kind": kind})
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
    files.atomic_write(destination, data, as_input_error=True, overwrite=overwrite)
    return kind, int(sum(a.size for a in arrays.values()))
