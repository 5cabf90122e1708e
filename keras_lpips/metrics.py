"""LPIPS as a Keras metric: the running mean distance over batches."""

import keras

from keras_lpips.array_checks import LOSS_NAMES
from keras_lpips.errors import InputError, reason
from keras_lpips.inputs import as_image_batch, check_sample_weight
from keras_lpips.frozen_metric import frozen_metric
from keras_lpips.metric_arguments import HALF_PRECISION


@keras.saving.register_keras_serializable(package="keras_lpips")
class MeanLPIPS(keras.metrics.Mean):
    """Averages the LPIPS distance between `y_true` and `y_pred` over all updates.

    Keyword arguments other than `name` and `dtype` go to `keras_lpips.LPIPS`; `dtype` is that of
    the running totals and the result, float32 or wider (a half dtype, mixed or not, is refused: it
    would round the result, and a count in float16 stops growing by 1 at 2048, in bfloat16 at
    256). The images are checked as `LPIPS` checks them (`keras_lpips.inputs`; the errors call
    them y_true and y_pred), also in the graph `model.fit` traces. A `.keras` file of a model
    compiled with it keeps its arguments, not its network's weights (Keras 3.15 saves no compiled
    metric's state): `keras.saving.load_model` rebuilds it from its weight sources.

    Example:
    >>> model.compile(optimizer="adam", loss="mse", metrics=[MeanLPIPS(net="alex", input_range=(0, 1))])
    """

    def __init__(self, name="mean_lpips", dtype=None, **lpips_kwargs):
        try:
            super().__init__(name=name, dtype=dtype)
        except (TypeError, ValueError) as error:  # e.g. an unknown dtype
            raise InputError(reason(error)) from None
        if self.dtype in ("float16", "bfloat16"):  # Keras casts the distances, totals and count to it
            raise InputError(
                f"MeanLPIPS would round the distances and its running totals to {self.dtype}: {HALF_PRECISION}. "
                f"Received: dtype={dtype!r}"
            )
        self._lpips, self.lpips_kwargs = frozen_metric(lpips_kwargs, "MeanLPIPS")

    def update_state(self, y_true, y_pred, sample_weight=None):
        pair = [as_image_batch(y_true, LOSS_NAMES[0]), as_image_batch(y_pred, LOSS_NAMES[1])]
        check_sample_weight(sample_weight, pair[0])
        return super().update_state(self._lpips.call_named(pair, LOSS_NAMES, training=False), sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), **self.lpips_kwargs}
