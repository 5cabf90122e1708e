"""Keras layers of the LPIPS metric: input scaling, normalisation, heads, pooling, resizing."""

from keras_lpips.layers.bilinear_resize import bilinear_resize
from keras_lpips.layers.ceil_max_pooling import CeilMaxPooling2D
from keras_lpips.layers.input_scaling import InputScaling
from keras_lpips.layers.linear_head import NonNegativeLinearHead
from keras_lpips.layers.unit_normalization import ChannelUnitNormalization
