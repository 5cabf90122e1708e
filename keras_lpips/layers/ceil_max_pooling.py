"""Max pooling that rounds its output size up, as torch's `ceil_mode=True` does."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_lpips")
class CeilMaxPooling2D(keras.layers.Layer):
    """`torch.nn.MaxPool2d(pool_size, strides, ceil_mode=True)` for NHWC input.

    Output size is `ceil((n - pool_size) / strides) + 1`: the last window may
    hang over the bottom/right edge, and only its in-bounds values count. That is
    a valid pooling after padding `strides - 1` rows and columns of -inf at the
    end (for `pool_size >= strides`, which SqueezeNet's 3/2 pools satisfy).
    Keras' `padding="same"` differs: it pads at both ends for odd sizes.
    """

    def __init__(self, pool_size=3, strides=2, **kwargs):
        super().__init__(**kwargs)
        if not int(pool_size) >= int(strides) >= 1:
            raise ValueError(f"need pool_size >= strides >= 1. Received: pool_size={pool_size}, strides={strides}")
        self.pool_size = int(pool_size)
        self.strides = int(strides)

    def call(self, x):
        extra = self.strides - 1
        x = ops.pad(x, ((0, 0), (0, extra), (0, extra), (0, 0)), constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid", data_format="channels_last")

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else max(0, -(-(n - self.pool_size) // self.strides) + 1)

        n, h, w, c = input_shape
        return (n, size(h), size(w), c)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}
