"""The LPIPS metric that a loss or a Keras metric holds (`LPIPSLoss`, `MeanLPIPS`): frozen, in
inference, rebuilt from its arguments when a saved model loads."""

import os

from keras_lpips import keras_compat
from keras_lpips.errors import InputError, WeightsError
from keras_lpips.model import LPIPS


def frozen_metric(lpips_kwargs, owner):
    """`(LPIPS(**lpips_kwargs), lpips_kwargs)` for a loss or metric, of class name `owner`, that
    holds one: the metric frozen (inference only), the arguments as its config records them (paths
    as strings: what a .keras file can hold). Where `keras.saving.load_model` rebuilds it from those
    arguments reading the weight sources (`MeanLPIPS`: Keras saves no compiled metric's weights), an
    unavailable source's error says how to load the model without it. Arguments that only act
    in training (dropout, trainable, train_backbone) are refused: they would be ignored."""
    inert = {"dropout": 0, "trainable": False, "train_backbone": False}
    ignored = [key for key, value in inert.items() if key in lpips_kwargs and lpips_kwargs[key] != value]
    if ignored:
        raise InputError(
            f"{owner} computes with its metric frozen, in inference: {', '.join(ignored)} "
            f"{'does' if len(ignored) == 1 else 'do'} not apply. Received: {', '.join(f'{k}={lpips_kwargs[k]!r}' for k in ignored)}"
        )
    try:
        metric = LPIPS(**lpips_kwargs)
    except WeightsError as error:
        if not keras_compat.loading_a_saved_model():
            raise
        hint = (
            f"; a .keras file keeps {owner}'s arguments, not its weights, and load_model rebuilds it from "
            "them: keras.saving.load_model(path, compile=False) loads the model without it"
        )
        raise type(error)(str(error).rstrip(".") + hint) from None
    metric.trainable = False
    return metric, {key: os.fspath(value) if isinstance(value, os.PathLike) else value for key, value in lpips_kwargs.items()}
