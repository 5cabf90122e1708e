"""LPIPS as a Keras loss, for training image generators to be perceptually close."""

import keras
from keras import ops

from keras_lpips import keras_compat
from keras_lpips.errors import InputError, reason
from keras_lpips.inputs import as_image_batch
from keras_lpips.model import HALF_PRECISION, frozen_metric

NAMES = ("y_true", "y_pred")


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPSLoss(keras_compat.RebuiltWhenLoaded, keras.losses.Loss):
    """Mean LPIPS distance between `y_true` and `y_pred` images (N, H, W, 3).

    The metric network is built once, frozen, and run in inference mode.
    Keyword arguments other than Keras' loss arguments go to `keras_lpips.LPIPS`. The images are
    checked as `LPIPS` checks them (`keras_lpips.inputs`; the errors call them y_true and y_pred),
    also in the graph `model.fit` traces. A `.keras` file of a model compiled with it keeps its
    arguments, not its network's weights: `keras.saving.load_model` rebuilds it from its weight
    sources (`keras_compat.RebuiltWhenLoaded`).

    Example:
    >>> model.compile(optimizer="adam", loss=LPIPSLoss(net="vgg", input_range=(0, 1)))
    """

    _not_saved = ("metric",)

    def __init__(self, name="lpips_loss", reduction="sum_over_batch_size", dtype=None, **lpips_kwargs):
        try:
            super().__init__(name=name, reduction=reduction, dtype=dtype)
        except (TypeError, ValueError) as error:  # e.g. an unknown reduction
            raise InputError(reason(error)) from None
        if self.dtype in ("float16", "bfloat16"):  # Keras converts the images to it
            raise InputError(f"LPIPSLoss would round the images to {self.dtype}: {HALF_PRECISION}. Received: dtype={dtype!r}")
        self.metric, self.lpips_kwargs = frozen_metric(lpips_kwargs, "LPIPSLoss")

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Before Keras converts them: None, strings and non-numeric dtypes raise `InputError`.
        return super().__call__(as_image_batch(y_true, NAMES[0]), as_image_batch(y_pred, NAMES[1]), sample_weight)

    def call(self, y_true, y_pred):
        return ops.cast(self.metric.call_named([y_true, y_pred], NAMES, training=False), "float32")

    def get_config(self):
        return {**super().get_config(), **self.lpips_kwargs}
