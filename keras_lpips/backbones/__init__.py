"""The backbone networks LPIPS taps, by name.

Each entry says how to build the trunk, which activations it taps, their
channel counts, the smallest input it accepts, and how its Keras layers map to
torchvision's parameter names (for loading torchvision weights). Where the
weights come from is data in `keras_lpips.weights.sources`.
"""

import dataclasses
import functools

import keras

from keras_lpips.backbones import alexnet, squeezenet, vgg16
from keras_lpips.presets import canonical_net


def _channels_last(build):
    """`build`, a backbone builder, run with Keras' image data format set to "channels_last" (the
    previous one restored after): the layers it makes record that format, so the backbone takes
    NHWC images in a process set to "channels_first" too (code ported from PyTorch), where
    they would otherwise convolve and pool over the wrong axes, or not build at all."""

    @functools.wraps(build)
    def built(*args, **kwargs):
        previous = keras.config.image_data_format()
        keras.config.set_image_data_format("channels_last")
        try:
            return build(*args, **kwargs)
        finally:
            keras.config.set_image_data_format(previous)

    return built


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: callable
    taps: tuple
    channels: tuple
    min_input_size: tuple
    torchvision_names: dict


BACKBONES = {
    "alex": BackboneSpec(
        "alex", _channels_last(alexnet.alexnet_backbone), alexnet.TAPS, alexnet.CHANNELS, alexnet.MIN_INPUT_SIZE, alexnet.TORCHVISION_NAMES,
    ),
    "vgg": BackboneSpec(
        "vgg", _channels_last(vgg16.vgg16_backbone), vgg16.TAPS, vgg16.CHANNELS, vgg16.MIN_INPUT_SIZE, vgg16.TORCHVISION_NAMES,
    ),
    "squeeze": BackboneSpec(
        "squeeze", _channels_last(squeezenet.squeezenet_backbone), squeezenet.TAPS, squeezenet.CHANNELS,
        squeezenet.MIN_INPUT_SIZE, squeezenet.TORCHVISION_NAMES,
    ),
}  # fmt: skip


def get_backbone(net):
    """Returns the `BackboneSpec` for a net name or alias, or raises `InputError`."""
    return BACKBONES[canonical_net(net)]
