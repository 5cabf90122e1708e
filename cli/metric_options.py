"""Builds the metric a command asked for, from the shared options."""

from keras_lpips.errors import InputError


def build_metric(net, version, distance, layers, lin_weights, backbone_weights, model, input_range=(0.0, 1.0)):
    """An `LPIPS` from `--model` (a .keras file) or from the net options, for [0, 1] images."""
    import keras

    from keras_lpips import LPIPS

    if model is not None:
        if model.suffix != ".keras" or not model.is_file():
            raise InputError(f"--model must be an existing .keras file. Received: {model}")
        metric = keras.saving.load_model(model, safe_mode=True)
        if not isinstance(metric, LPIPS):
            raise InputError(f"{model} holds a {type(metric).__name__}, not a keras_lpips.LPIPS model")
        if metric.input_range != tuple(input_range):
            raise InputError(f"{model} expects input_range={metric.input_range}; the CLI feeds {input_range}")
        return metric
    backbone = None if backbone_weights == "random" else backbone_weights
    lin = None if lin_weights in (None, "none") else lin_weights
    return LPIPS(
        net=net, version=version, distance=distance, layers=layers,
        backbone_weights=backbone, lin_weights=lin, input_range=input_range,
    )  # fmt: skip
