"""VGG16's convolutional trunk, from `keras.applications.VGG16(include_top=False)`."""

import keras

TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (64, 128, 256, 512, 512)
MIN_INPUT_SIZE = (1, 2, 4, 8, 16)
_TAP_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
_CONV_LAYERS = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
)  # fmt: skip
_TORCHVISION_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TORCHVISION_NAMES = {k: f"features.{i}" for k, i in zip(_CONV_LAYERS, _TORCHVISION_INDICES)}


def vgg16_backbone(num_taps=5, name="vgg16"):
    """Returns a model mapping NHWC images to the first `num_taps` block outputs.

    Keras' VGG16 has the same layers as torchvision's `vgg16().features`
    (3x3 "same" convolutions with ReLU, 2x2/2 pools), so torchvision weights
    load into it directly, and so do Keras Applications' own (by layer name).
    """
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    taps = [vgg.get_layer(n).output for n in _TAP_LAYERS[:num_taps]]
    return keras.Model(vgg.input, taps, name=name)
