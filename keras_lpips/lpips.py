"""The LPIPS metric (Zhang et al., CVPR 2018) as a Keras model.

d(x, x0) = sum_l mean_hw || w_l * (f_l(x) - f_l(x0)) ||^2, f_l the channel-unit-
normalised activations of backbone layer l. `call` reads as the reference
`lpips.LPIPS.forward`: scale, features, normalise, squared difference, 1x1
weights, spatial mean, sum over layers.
"""

import keras
import numpy as np
from keras import ops

from keras_lpips.backbones import get_backbone
from keras_lpips.errors import InputError
from keras_lpips.inputs import check_image_pair
from keras_lpips.layers import (
    ChannelUnitNormalization,
    InputScaling,
    NonNegativeLinearHead,
    bilinear_resize,
)
from keras_lpips.weights.convert import assign_torchvision_weights
from keras_lpips.weights.loading import backbone_state, lin_vectors

INPUT_RANGES = ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0))
PRECISIONS = ("float32", "bf16")


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPS(keras.Model):
    """Learned Perceptual Image Patch Similarity between two batches of images.

    Args:
        net: backbone, "alex"/"alexnet", "vgg"/"vgg16" or "squeeze"/"squeezenet".
        version: "0.1" applies the reference ScalingLayer to the input, "0.0" does not.
        distance: "lpips" (learned per-channel weights) or "cosine" (unweighted,
            the paper's baseline: 2 * (1 - cos) averaged over positions, summed over layers).
        layers: keep only the first N tapped layers (None: all).
        backbone_weights: "imagenet" (torchvision's, downloaded once and cached),
            "keras-imagenet" (Keras Applications' VGG16), None (untrained, from
            `seed`), or a path to a torchvision-layout `.pth` or `.npz`.
        lin_weights: "v0.1" / "v0.0" (official, shipped), None (untrained: all
            ones), or a path to an lpips-format `.pth` or a keras-lpips `.npz`.
        input_range: (-1, 1), (0, 1) or (0, 255): the range of the images passed in.
        seed: seed of the untrained backbone's initialisation.
        dropout: dropout rate before the linear heads, active in training only.
        precision: "float32" (default), or "bf16": the backbone computes in
            bfloat16 (Keras' `mixed_bfloat16` policy on its layers; weights stay
            float32), while input scaling, normalisation, heads and distances
            stay float32. It pays off where the hardware has bfloat16 units
            (AVX512-BF16/AMX CPUs, recent GPUs and TPUs); on CPUs without them
            (AVX2 only) TensorFlow computes bfloat16 convolutions in float32 and
            it runs no faster than "float32". Distances then carry bfloat16
            rounding (8-bit mantissa): measured against float32 on examples/ and
            random 64x64 and 256x256 images, at most 6e-4 absolute; 0.1-0.5%
            relative for distances above 0.01, up to 5% for near-identical
            pairs (distances near 1e-3). Parity with the reference (1e-5) holds
            for "float32" only.

    On the TensorFlow backend, eager calls (`metric([img0, img1])`, inference)
    run one `tf.function`, traced once for any batch and image size (and
    differentiable, under a `GradientTape`); inside other `tf.function`s or
    layers, with `training=True`, and on other backends the call is Keras' own.

    Example:
    >>> metric = LPIPS(net="alex")
    >>> metric([img0, img1])          # (N, H, W, 3) each -> (N,)
    >>> metric.spatial_map([img0, img1])  # -> (N, H, W)

    Saved `.keras` files carry the weights; `get_config` records None for the
    weight sources, so `from_config` alone builds an untrained model, as
    for any Keras model.
    """

    def __init__(
        self,
        net="alex",
        version="0.1",
        distance="lpips",
        layers=None,
        backbone_weights="imagenet",
        lin_weights="v0.1",
        input_range=(-1.0, 1.0),
        seed=None,
        dropout=0.5,
        precision="float32",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}")
        self.precision = precision
        self.spec = get_backbone(net)
        self.net, self.version, self.distance = self.spec.name, str(version), distance
        self.layers_kept = _check_choices(self.spec, self.version, distance, layers, input_range)
        self.input_range = tuple(float(v) for v in input_range)
        self.seed, self.dropout = seed, float(dropout)
        keras_imagenet = backbone_weights == "keras-imagenet"
        if keras_imagenet and self.spec.name != "vgg":
            raise InputError(f"backbone_weights='keras-imagenet' exists for vgg only. Received: net={net!r}")
        if keras_imagenet and distance == "lpips" and lin_weights in ("v0.1", "v0.0"):
            raise InputError(
                "The official linear weights were calibrated on torchvision's ImageNet features; with "
                "backbone_weights='keras-imagenet' pass lin_weights=None or a file trained for it. "
                f"Received: lin_weights={lin_weights!r}"
            )

        self.scaling = InputScaling(self.input_range, "caffe" if keras_imagenet else f"lpips-v{self.version}")
        if keras_imagenet:
            self.backbone = self.spec.build(self.layers_kept, keras_imagenet=True)
        else:
            self.backbone = self.spec.build(self.layers_kept)
        if precision == "bf16":
            # Each backbone layer casts its input (and kernels) to bfloat16; its
            # outputs, the taps included, stay bfloat16 until the float32
            # normalisation casts them back.
            for layer in self.backbone.layers:
                layer.dtype_policy = keras.DTypePolicy("mixed_bfloat16")
        self.normalize = ChannelUnitNormalization()
        self.heads = []
        if distance == "lpips":
            self.heads = [NonNegativeLinearHead(c, dropout=self.dropout) for c in self.spec.channels[: self.layers_kept]]
            for head in self.heads:
                head.build()
        self._load_weights(backbone_weights, lin_weights)
        self._graph_distance = self._graph_distance_concrete = None
        self.built = True

    def _load_weights(self, backbone_weights, lin_weights):
        if backbone_weights is None:
            _seeded_init(self.backbone, self.seed)
        elif backbone_weights != "keras-imagenet":
            state = backbone_state(backbone_weights, self.spec)
            assign_torchvision_weights(self.backbone, state, self.spec.torchvision_names, source=str(backbone_weights))
        if self.heads and lin_weights is not None:
            for head, vector in zip(self.heads, lin_vectors(lin_weights, self.spec, self.layers_kept)):
                head.kernel.assign(vector[:, None])

    @property
    def min_input_size(self):
        """The smallest image side the kept layers accept."""
        return self.spec.min_input_size[self.layers_kept - 1]

    def features(self, images, training=None):
        """Unit-normalised backbone features of a batch of images, one tensor per kept layer.

        Lets callers that compare one image with several (the 2AFC trainer's
        reference patch, all-pairs matrices) compute its features once.
        """
        features = self.backbone(self.scaling(images), training=training)
        if not isinstance(features, (list, tuple)):  # a functional model with one output returns it bare
            features = [features]
        return [self.normalize(f) for f in features]

    def compare(self, features0, features1, training=None):
        """Per-layer distance maps, (N, h_l, w_l, 1) each, between two lists of `features`."""
        maps = []
        for k, (f0, f1) in enumerate(zip(features0, features1)):
            diff = ops.square(f0 - f1)
            maps.append(self.heads[k](diff, training=training) if self.heads else ops.sum(diff, -1, keepdims=True))
        return maps

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, outside Keras' call wrapper, so that errors read as one plain line.
        pair = self._checked(inputs)
        if not args and _graph_call_applies(pair, kwargs):
            return self._compiled_distance()(*pair)
        return super().__call__(pair, *args, **kwargs)

    def _compiled_distance(self):
        """The concrete function of a `tf.function` computing the distances of two
        (N, H, W, 3) float32 batches in inference mode: traced once, its signature
        leaves batch and image size open. Called directly, it skips the `tf.function`
        dispatch (about a millisecond a call)."""
        if self._graph_distance is None:
            import tensorflow as tf

            image = tf.TensorSpec([None, None, None, 3], tf.float32)

            @tf.function(input_signature=[image, image], autograph=False)
            def distance(img0, img1):
                return keras.Model.__call__(self, [img0, img1], training=False)

            self._graph_distance = distance
            self._graph_distance_concrete = distance.get_concrete_function()
        return self._graph_distance_concrete

    def _checked(self, inputs):
        return check_image_pair(inputs, self.input_range, self.min_input_size)

    def _maps(self, img0, img1, training=None):
        n = ops.shape(img0)[0]
        features = self.features(ops.concatenate([img0, img1], axis=0), training=training)
        return self.compare([f[:n] for f in features], [f[n:] for f in features], training=training)

    def layer_maps(self, inputs, training=None):
        """Per-layer distance maps, a list of (N, h_l, w_l, 1) tensors; both images in one backbone pass."""
        return self._maps(*self._checked(inputs), training=training)

    def call(self, inputs, training=None):
        """Distances, shape (N,)."""
        return sum(ops.mean(m, axis=(1, 2, 3)) for m in self._maps(*inputs, training=training))

    def per_layer(self, inputs, training=None):
        """Each layer's contribution to the distance, shape (N, layers)."""
        return ops.stack([ops.mean(m, axis=(1, 2, 3)) for m in self.layer_maps(inputs, training)], axis=-1)

    def spatial_map(self, inputs):
        """Distance maps at the input resolution, shape (N, H, W): each layer's
        map upsampled bilinearly (half-pixel centres), summed over layers.
        Their spatial mean is close to, not equal to, the distance."""
        height, width = ops.shape(inputs[0])[1], ops.shape(inputs[0])[2]
        maps = [bilinear_resize(m[..., 0], height, width) for m in self.layer_maps(inputs)]
        return sum(maps[1:], maps[0])

    def get_config(self):
        return {
            **super().get_config(),
            "net": self.net,
            "version": self.version,
            "distance": self.distance,
            "layers": self.layers_kept,
            "backbone_weights": None,
            "lin_weights": None,
            "input_range": self.input_range,
            "seed": self.seed,
            "dropout": self.dropout,
            "precision": self.precision,
        }


def _graph_call_applies(pair, kwargs):
    """Whether `__call__` may take the traced `tf.function`: TensorFlow backend, eager
    tensors, not training, and not nested in another layer's call (whose `training`
    flag Keras would pass down)."""
    if keras.backend.backend() != "tensorflow" or set(kwargs) - {"training"} or kwargs.get("training"):
        return False
    import tensorflow as tf

    if not tf.executing_eagerly() or tf.distribute.has_strategy():
        return False
    if not all(isinstance(x, tf.Tensor) and hasattr(x, "numpy") for x in pair):
        return False
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("current_call_ctx") is None


def _check_choices(spec, version, distance, layers, input_range):
    """Validates the constructor's choices; returns the number of taps kept."""
    if version not in ("0.1", "0.0"):
        raise InputError(f"version must be '0.1' or '0.0'. Received: version={version!r}")
    if distance not in ("lpips", "cosine"):
        raise InputError(f"distance must be 'lpips' or 'cosine'. Received: distance={distance!r}")
    if tuple(float(v) for v in input_range) not in INPUT_RANGES:
        raise InputError(f"input_range must be one of {INPUT_RANGES}. Received: input_range={input_range!r}")
    total = len(spec.taps)
    if layers is None:
        return total
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or not 1 <= layers <= total:
        raise InputError(f"layers must be an integer from 1 to {total} for net {spec.name!r}. Received: layers={layers!r}")
    return int(layers)


def _seeded_init(model, seed):
    """Re-draws every conv kernel He-normal and zeroes biases, from `seed`."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            fan_in = int(np.prod(kernel.shape[:3]))
            kernel = rng.standard_normal(kernel.shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
            layer.set_weights([kernel, np.zeros_like(bias)])
