"""SqueezeNet 1.1's convolutional trunk, ported from torchvision `squeezenet1_1().features`."""

import keras
from keras import layers

from keras_lpips.layers.ceil_max_pooling import CeilMaxPooling2D

TAPS = ("relu1", "relu2", "relu3", "relu4", "relu5", "relu6", "relu7")
CHANNELS = (64, 128, 256, 384, 384, 512, 512)
MIN_INPUT_SIZE = (3, 5, 9, 17, 17, 17, 17)
# (torchvision index, squeeze, expand) of the Fire modules fire2..fire9, and the
# tap each one closes, if any. Ceil-mode 3x3/2 pools sit before fire2, fire4, fire6.
_FIRES = (
    (3, 16, 64, None), (4, 16, 64, 1),
    (6, 32, 128, None), (7, 32, 128, 2),
    (9, 48, 192, 3), (10, 48, 192, 4),
    (11, 64, 256, 5), (12, 64, 256, 6),
)  # fmt: skip
_POOL_BEFORE = (3, 6, 9)  # torchvision indices of the fires that follow a pool
TORCHVISION_NAMES = {"conv1": "features.0"}
for _number, (_index, *_) in enumerate(_FIRES, start=2):
    for _part in ("squeeze", "expand1x1", "expand3x3"):
        TORCHVISION_NAMES[f"fire{_number}_{_part}"] = f"features.{_index}.{_part}"


def _fire(x, number, squeeze, expand):
    """Fire module: 1x1 squeeze, then concat(1x1 expand, 3x3 expand), all ReLU."""
    s = layers.Conv2D(squeeze, 1, activation="relu", name=f"fire{number}_squeeze")(x)
    e1 = layers.Conv2D(expand, 1, activation="relu", name=f"fire{number}_expand1x1")(s)
    e3 = layers.ZeroPadding2D(1, name=f"fire{number}_pad")(s)
    e3 = layers.Conv2D(expand, 3, activation="relu", name=f"fire{number}_expand3x3")(e3)
    return layers.Concatenate(name=f"fire{number}")([e1, e3])


def squeezenet_backbone(num_taps=7, name="squeezenet1_1"):
    """Returns a model mapping NHWC images to the first `num_taps` tap outputs."""
    images = keras.Input((None, None, 3), name="images")
    x = layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(images)
    taps = [x]
    for number, (index, squeeze, expand, tap) in enumerate(_FIRES, start=2):
        if len(taps) == num_taps:
            break
        if index in _POOL_BEFORE:
            x = CeilMaxPooling2D(3, 2, name=f"pool_before_fire{number}")(x)
        x = _fire(x, number, squeeze, expand)
        if tap is not None:
            taps.append(x)
    return keras.Model(images, taps, name=name)
