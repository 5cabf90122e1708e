"""The learned per-channel weights that turn squared feature differences into a distance."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_lpips")
class NonNegativeLinearHead(keras.layers.Layer):
    """A 1x1 convolution to one channel, without bias, with weights kept >= 0.

    The reference `lpips.NetLinLayer`: optional dropout (training only), then
    `sum_c w_c * x_c` at every position. The weights carry the `NonNeg`
    constraint, which Keras applies after every optimiser step, as the
    reference trainer clamps them. They start at 1 (the unweighted cosine
    distance) until trained or loaded.

    Input `(N, H, W, channels)`, output `(N, H, W, 1)`.
    """

    def __init__(self, channels, dropout=0.5, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(channels) < 1 or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"need channels >= 1 and 0 <= dropout < 1. Received: channels={channels}, dropout={dropout}")
        self.channels = int(channels)
        self.dropout = float(dropout)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy) if self.dropout else None

    def build(self, input_shape=None):
        self.kernel = self.add_weight(
            name="kernel", shape=(self.channels, 1), initializer="ones", constraint=keras.constraints.NonNeg()
        )

    def call(self, x, training=None):
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        return ops.matmul(x, self.kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "dropout": self.dropout}
