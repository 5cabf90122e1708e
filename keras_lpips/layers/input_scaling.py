"""Maps user images to the input the backbone was trained on."""

import keras
from keras import ops

# The reference `lpips.ScalingLayer`: torchvision's ImageNet statistics, expressed on [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# Keras Applications' VGG16 expects Caffe-style input: BGR, 0..255, mean-subtracted.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

MODES = ("lpips-v0.1", "lpips-v0.0", "caffe")


@keras.saving.register_keras_serializable(package="keras_lpips")
class InputScaling(keras.layers.Layer):
    """Rescales RGB images from `input_range` to what the backbone expects.

    Images are first mapped linearly onto [-1, 1]. Then, by `mode`:
    - `"lpips-v0.1"`: the reference ScalingLayer, `(x - shift) / scale`;
    - `"lpips-v0.0"`: nothing more (the reference's v0.0 skipped the scaling);
    - `"caffe"`: back to 0..255, RGB to BGR, ImageNet mean subtracted, for
      Keras Applications' own VGG16 weights.

    Example:
    >>> layer = InputScaling(input_range=(0.0, 1.0))
    >>> layer(np.zeros((1, 8, 8, 3))).shape
    (1, 8, 8, 3)
    """

    def __init__(self, input_range=(-1.0, 1.0), mode="lpips-v0.1", **kwargs):
        super().__init__(**kwargs)
        low, high = (float(v) for v in input_range)
        if not high > low:
            raise ValueError(f"input_range must be (low, high) with high > low. Received: input_range={input_range}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        self.input_range = (low, high)
        self.mode = mode

    def call(self, images):
        low, high = self.input_range
        x = images if (low, high) == (-1.0, 1.0) else images * (2.0 / (high - low)) - (high + low) / (high - low)
        if self.mode == "lpips-v0.1":
            return (x - ops.array(LPIPS_SHIFT, x.dtype)) / ops.array(LPIPS_SCALE, x.dtype)
        if self.mode == "caffe":
            return ops.flip(x + 1.0, axis=-1) * 127.5 - ops.array(CAFFE_BGR_MEAN, x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "input_range": self.input_range, "mode": self.mode}
