"""LPIPS as a Keras metric: the running mean distance over batches."""

import keras

from keras_lpips.model import LPIPS


@keras.saving.register_keras_serializable(package="keras_lpips")
class MeanLPIPS(keras.metrics.Mean):
    """Averages the LPIPS distance between `y_true` and `y_pred` over all updates.

    Keyword arguments other than `name` and `dtype` go to `keras_lpips.LPIPS`.

    Example:
    >>> model.compile(optimizer="adam", loss="mse", metrics=[MeanLPIPS(net="alex", input_range=(0, 1))])
    """

    def __init__(self, name="mean_lpips", dtype=None, **lpips_kwargs):
        super().__init__(name=name, dtype=dtype)
        self.lpips_kwargs = lpips_kwargs
        self._lpips = LPIPS(**lpips_kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self._lpips([y_true, y_pred], training=False), sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), **self.lpips_kwargs}
