"""AlexNet's convolutional trunk, ported from torchvision `alexnet().features`."""

import keras
from keras import layers

TAPS = ("relu1", "relu2", "relu3", "relu4", "relu5")
CHANNELS = (64, 192, 384, 256, 256)
# Smallest input side that leaves every tap at least 1x1, when keeping the first k taps.
MIN_INPUT_SIZE = (7, 15, 31, 31, 31)
# Keras layer name -> torchvision parameter prefix.
TORCHVISION_NAMES = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
}


def alexnet_backbone(num_taps=5, name="alexnet"):
    """Returns a model mapping NHWC images to the first `num_taps` ReLU outputs.

    Torchvision pads explicitly (conv1: 11x11 stride 4 pad 2; conv2: 5x5 pad 2;
    conv3-5: 3x3 pad 1) and pools 3x3/2 with floor rounding, so the port uses
    `ZeroPadding2D` + valid convolutions and valid pooling, never `"same"`.
    """
    spec = (  # (filters, kernel, stride, padding, max-pool before)
        (64, 11, 4, 2, False),
        (192, 5, 1, 2, True),
        (384, 3, 1, 1, True),
        (256, 3, 1, 1, False),
        (256, 3, 1, 1, False),
    )
    images = keras.Input((None, None, 3), name="images")
    x, taps = images, []
    for i, (filters, kernel, stride, pad, pool_first) in enumerate(spec[:num_taps], start=1):
        if pool_first:
            x = layers.MaxPooling2D(3, 2, name=f"pool{i - 1}")(x)
        x = layers.ZeroPadding2D(pad, name=f"pad{i}")(x)
        x = layers.Conv2D(filters, kernel, strides=stride, activation="relu", name=f"conv{i}")(x)
        taps.append(x)
    return keras.Model(images, taps, name=name)
