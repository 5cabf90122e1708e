"""Unit-normalises feature vectors over channels, as the reference does."""

import keras
from keras import ops

# Below this squared norm, the norm is taken as sqrt(_TINY): the value changes by
# less than 1e-5 of eps, and the gradient of sqrt stays finite at a zero vector.
_TINY = 1e-30


@keras.saving.register_keras_serializable(package="keras_lpips")
class ChannelUnitNormalization(keras.layers.Layer):
    """`x / (||x||_2 + epsilon)` over the last axis, with finite gradients.

    Matches `lpips.normalize_tensor` (eps 1e-10) to the last bit wherever a
    feature vector is not all zero; where it is, the reference's gradient is NaN
    (sqrt'(0) = inf) while this one stays finite. Runs in float32 by default,
    also under mixed precision, and never in half precision whatever its dtype
    policy: float16 and bfloat16 inputs are cast to float32 first, because in
    float16 eps 1e-10 underflows and squares overflow above 256 (or vanish
    below 1e-4), while the reference normalises in float32.

    Example:
    >>> ChannelUnitNormalization()(np.array([[3.0, 4.0]]))  # -> [[0.6, 0.8]]
    """

    def __init__(self, epsilon=1e-10, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive. Received: epsilon={epsilon}")
        self.epsilon = float(epsilon)

    def call(self, x):
        if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
        return x / (ops.sqrt(ops.maximum(squared_norm, _TINY)) + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
