"""LPIPS as a Keras loss, for training image generators to be perceptually close."""

import keras
from keras import ops

from keras_lpips.model import LPIPS


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPSLoss(keras.losses.Loss):
    """Mean LPIPS distance between `y_true` and `y_pred` images (N, H, W, 3).

    The metric network is built once, frozen, and run in inference mode.
    Keyword arguments other than Keras' loss arguments go to `keras_lpips.LPIPS`.

    Example:
    >>> model.compile(optimizer="adam", loss=LPIPSLoss(net="vgg", input_range=(0, 1)))
    """

    def __init__(self, name="lpips_loss", reduction="sum_over_batch_size", dtype=None, **lpips_kwargs):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.lpips_kwargs = lpips_kwargs
        self.metric = LPIPS(**lpips_kwargs)
        self.metric.trainable = False

    def call(self, y_true, y_pred):
        return ops.cast(self.metric([y_true, y_pred], training=False), "float32")

    def get_config(self):
        return {**super().get_config(), **self.lpips_kwargs}
