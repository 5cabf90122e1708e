"""What a mixed-precision run saves and measures: float32.

A run may train under a mixed policy (`devices.resolve_precision`: the backbone computes in
bfloat16 or float16), but it saves float32 models (`RunFolder.save_model`), and its validation
scores (the untrained one, each epoch's, the final one) are those of float32 models, the ones
users get: `float32_trainer` is the saved model, `Float32Validation` scores the trainer's current
weights with it.
"""

import keras
import numpy as np

from keras_lpips.training.trainer import LPIPSTrainer


def float32_copy(layer, **overrides):
    """`layer` rebuilt from its config in float32 (no weight sources read), with its weights;
    `overrides` replace config entries (`dropout=0.0`)."""
    from keras_lpips.weights.loading import sources_deferred

    saved_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        with sources_deferred():
            config = {**layer.get_config(), **overrides, "dtype": "float32"}
            copy = type(layer).from_config(config)
        if not copy.built:
            copy.build()
    finally:
        keras.config.set_dtype_policy(saved_policy)
    copy.set_weights([np.asarray(w) for w in layer.get_weights()])
    return copy


def float32_trainer(trainer):
    """The `LPIPSTrainer` a run saves: `trainer`'s metric (without dropout) and ranker, in float32."""
    metric = float32_copy(trainer.lpips, dropout=0.0)
    return LPIPSTrainer(metric, float32_copy(trainer.ranker), train_backbone=trainer.train_backbone)


class Float32Validation:
    """Validation of a mixed-precision run on images as its saved float32 model scores:
    `validation(trainer)` copies the trainer's current weights into a float32 twin (made once,
    under `strategy`) and evaluates that on `data`; returns {"val_loss", "val_2afc"}.

    (Lin mode's precomputed validation needs none: `FrozenBackbone` computes it in float32.)"""

    def __init__(self, trainer, data, strategy):
        with strategy.scope():
            self.twin = float32_trainer(trainer)
            self.twin.compile()
        self.data = data

    def __call__(self, trainer):
        for target, source in zip(self.twin.weights, trainer.weights, strict=True):
            target.assign(source)
        scores = self.twin.evaluate(self.data, verbose=0, return_dict=True)
        return {"val_2afc": float(scores["2afc"]), "val_loss": float(scores["loss"])}  # as Keras orders them
