"""LPIPS as a Keras loss, for training image generators to be perceptually close."""

import keras
from keras import ops

from keras_lpips import keras_compat
from keras_lpips.array_checks import LOSS_NAMES
from keras_lpips.errors import InputError, WeightsError, reason
from keras_lpips.inputs import as_image_batch, check_sample_weight
from keras_lpips.frozen_metric import frozen_metric
from keras_lpips.metric_arguments import HALF_PRECISION
from keras_lpips.weights.loading import sources_deferred


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPSLoss(keras.losses.Loss):
    """Mean LPIPS distance between `y_true` and `y_pred` images (N, H, W, 3).

    The metric network is built once, frozen, and run in inference mode.
    Keyword arguments other than Keras' loss arguments go to `keras_lpips.LPIPS`. The images are
    checked as `LPIPS` checks them (`keras_lpips.inputs`; the errors call them y_true and y_pred),
    also in the graph `model.fit` traces. A `.keras` file of a model compiled with it keeps its
    network's weights as they are when saved (Keras saves a compiled loss's state), and
    `keras.saving.load_model` reads them from the file, no weight source.

    Example:
    >>> model.compile(optimizer="adam", loss=LPIPSLoss(net="vgg", input_range=(0, 1)))
    """

    def __init__(self, name="lpips_loss", reduction="sum_over_batch_size", dtype=None, **lpips_kwargs):
        try:
            super().__init__(name=name, reduction=reduction, dtype=dtype)
        except (TypeError, ValueError) as error:  # e.g. an unknown reduction
            raise InputError(reason(error)) from None
        if self.dtype in ("float16", "bfloat16"):  # Keras converts the images to it
            raise InputError(f"LPIPSLoss would round the images to {self.dtype}: {HALF_PRECISION}. Received: dtype={dtype!r}")
        self.metric, self.lpips_kwargs = frozen_metric(lpips_kwargs, "LPIPSLoss")
        self._awaiting_file = False  # True while built without its sources, until a file's weights arrive

    @classmethod
    def from_config(cls, config):
        """The loss `config` describes; inside `keras.saving.load_model`, whose file holds its
        network's weights (Keras restores a compiled loss's state after compiling), its network is
        built reading no weight source, as `LPIPS.from_config` does: the model loads offline."""
        if not keras_compat.loading_a_saved_model():
            return super().from_config(config)
        with sources_deferred():
            loss = super().from_config(config)
        loss._awaiting_file = True
        return loss

    def load_own_variables(self, store):
        # Keras' saving calls it on a loss it restores, then restores the network's weights from the
        # file (raising where the file lacks them); a loss it does not reach refuses to run.
        self._awaiting_file = False

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._awaiting_file:
            raise WeightsError(
                "This LPIPSLoss was rebuilt by keras.saving.load_model without its weights, which the file "
                "did not restore (Keras restores a compiled loss's, not one held elsewhere): build it with "
                f"LPIPSLoss(**config). Received: config={self.get_config()!r}"
            )
        # Before Keras converts them: None, strings and non-numeric dtypes raise `InputError`.
        y_true, y_pred = as_image_batch(y_true, LOSS_NAMES[0]), as_image_batch(y_pred, LOSS_NAMES[1])
        check_sample_weight(sample_weight, y_true)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        return ops.cast(self.metric.call_named([y_true, y_pred], LOSS_NAMES, training=False), "float32")

    def get_config(self):
        return {**super().get_config(), **self.lpips_kwargs}
