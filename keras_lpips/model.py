"""The LPIPS metric (Zhang et al., CVPR 2018) as a Keras model, and the one place its formula lives.

    d(x, x0) = sum_l 1 / (H_l W_l) sum_hw || w_l * (f_l(x)_hw - f_l(x0)_hw) ||^2

f_l: the channel-unit-normalised activations of backbone layer l (`features`); w_l: learned
non-negative per-channel weights ("lpips") or ones ("cosine"). `call` reads as the reference
`lpips.LPIPS.forward`: scale, features, normalise, squared difference, 1x1 weights, spatial
mean, sum over layers. The trainer, the exports, the all-pairs matrix, the embedding
(`embed`: the same distance as a squared Euclidean one) and the evaluation all call the
methods below; none of them writes the formula again.
"""

import os

import keras
import numpy as np
from keras import ops

from keras_lpips import keras_compat, presets
from keras_lpips.backbones import get_backbone
from keras_lpips.errors import InputError, WeightsError, reason
from keras_lpips.array_checks import NAMES, check_static_size
from keras_lpips.inputs import check_image_pair, check_images, checked_size, static_shape
from keras_lpips.layers import ChannelUnitNormalization, InputScaling, NonNegativeLinearHead, bilinear_resize
from keras_lpips.metric_arguments import HALF_PRECISION, check_arguments, check_choices
from keras_lpips.weights.loading import restore_weights, sources_deferred
from keras_lpips.weights.sources import OFFICIAL, official_lin_weights


@keras.saving.register_keras_serializable(package="keras_lpips")
class LPIPS(keras.Model):
    """Learned Perceptual Image Patch Similarity between two batches of images.

    Args:
        net: backbone, "alex"/"alexnet", "vgg"/"vgg16" or "squeeze"/"squeezenet".
        version: "0.1" applies the reference ScalingLayer to the input, "0.0" does not.
        distance: "lpips" (learned per-channel weights) or "cosine" (unweighted, the
            paper's baseline: 2 * (1 - cos) averaged over positions, summed over layers).
        layers: keep only the first N tapped layers (None: all).
        backbone_weights: where the backbone's weights come from: "imagenet" (torchvision's,
            fetched once into the cache), "keras-imagenet" (Keras Applications' VGG16),
            None (untrained, He-normal from `seed`), or a path to a torchvision-layout
            `.pth`, `.npz` or `.safetensors` (`weights.loading.read_weight_file`).
        lin_weights: where the linear weights come from: "official" (the default: the
            official weights of `version`, as the reference loads them; `get_config` records
            "v0.1" or "v0.0"), "v0.1" / "v0.0" (official, shipped, named), None (all ones), or
            a path to an lpips-format `.pth`, or a keras-lpips `.npz` or `.safetensors`.
        input_range: (-1, 1), (0, 1) or (0, 255): the range of the images passed in.
        seed: seed of the untrained backbone's initialisation (backbone_weights=None); None
            draws one, which `get_config` records, so that `from_config` rebuilds the same
            network.
        dropout: dropout rate before the linear heads, active with `training=True` only.
            0 (the default) keeps the metric deterministic wherever it is nested; the
            trainer uses the reference's 0.5.
        precision: "float32" (default), or "bf16": the backbone computes in bfloat16
            (weights stay float32) while scaling, normalisation, heads and distances stay
            float32. It pays off only on hardware with bfloat16 units; distances then carry
            bfloat16 rounding (measured: 2e-3 to 4e-3 of the distance, up to 3.5e-3 absolute
            on saturated pairs; docs/exactness.md). Parity with the reference (1e-5) holds
            for "float32" only.
        train_backbone: whether the backbone's weights train with the linear heads (the
            trainer's tune and scratch modes, a model fine-tuning the metric); False (the
            default) freezes it, as the reference's (pnet_tune=False).

    Under a global mixed policy (`keras.config.set_dtype_policy("mixed_float16")` or
    "mixed_bfloat16", set before building), the scaling and the backbone compute in half
    precision, while the normalisation, the linear heads and so the distances stay float32
    (measured on the CPU: within 2e-3 relative of float32 in float16 and 2e-2 in bfloat16 on
    pairs of noise sd 0.05 and more; on closer pairs, d ~ 1e-3, up to 4e-3 and 5e-2 relative;
    on near-identical ones up to 6e-7 and 3.4e-5 absolute: docs/exactness.md#half-precision;
    `benchmarks/gpu.py` measures it on a GPU).

    The backbone is frozen unless `train_backbone` (`metric.backbone.trainable`), as the
    reference's is by default: a model that holds the metric trains at most its linear heads
    (`metric.trainable = False`, or `LPIPS(..., trainable=False)`, freezes those too, as
    `LPIPSLoss` and `MeanLPIPS` do). `get_config` records both, so a saved model that holds the
    metric trains the same weights once loaded.

    The constructor builds the network, then has `keras_lpips.weights` read the two weight
    sources (cached files; a first use of "imagenet" fetches them). `get_config` records
    exactly these arguments (an untrained backbone's seed as drawn), so `from_config` rebuilds
    the same metric with its weights.
    `LPIPS.from_preset("alex-v0.1")` names an official configuration (`keras_lpips.presets`).

    On the TensorFlow backend, eager inference calls (`metric([img0, img1])`) run one
    `tf.function`, traced once for any batch and image size (and differentiable under a
    `GradientTape`); elsewhere the call is Keras' own.

    Example:
    >>> metric = LPIPS.from_preset("alex-v0.1")
    >>> metric([img0, img1])              # (N, H, W, 3) each -> (N,)
    >>> metric.spatial_map([img0, img1])  # -> (N, H, W)
    """

    def __init__(
        self,
        net="alex",
        version="0.1",
        distance="lpips",
        layers=None,
        backbone_weights="imagenet",
        lin_weights=OFFICIAL,
        input_range=(-1.0, 1.0),
        seed=None,
        dropout=0.0,
        precision="float32",
        train_backbone=False,
        **kwargs,
    ):
        trainable = kwargs.pop("trainable", True)  # set once the layers exist, which Keras' setter then reaches
        try:
            super().__init__(**kwargs)
        except (TypeError, ValueError) as error:  # Keras' own arguments: name, dtype
            raise InputError(reason(error)) from None
        # Its layers follow the global policy, not this one, which would only round the images
        # (a mixed one too: distances 5e-3 relative off, for no speed gain).
        if kwargs.get("dtype") is not None and self.dtype_policy.name != "float32":
            raise InputError(
                f"LPIPS takes no dtype but float32 (its layers would not follow it; it would only round the images): "
                f"{HALF_PRECISION}. Received: dtype={self.dtype_policy.name!r}"
            )
        self.spec = get_backbone(net)
        self.net, self.version, self.distance = self.spec.name, str(version), distance
        self.layers_kept = check_choices(self.spec, self.version, distance, layers, input_range, precision)
        lin_weights = official_lin_weights(lin_weights, self.version)
        check_arguments(dropout, seed, train_backbone, backbone_weights=backbone_weights, lin_weights=lin_weights)
        self.input_range = tuple(float(v) for v in input_range)
        sources = (os.fspath(w) if isinstance(w, os.PathLike) else w for w in (backbone_weights, lin_weights))
        self.backbone_weights, self.lin_weights = sources  # paths as strings, for get_config
        if seed is None and backbone_weights is None:  # drawn here, so that the config rebuilds this network
            seed = int(np.random.default_rng().integers(2**32))
        self.seed, self.dropout, self.precision = seed, float(dropout), precision

        caffe = backbone_weights == "keras-imagenet"  # Keras Applications' VGG16 wants Caffe input
        self.scaling = InputScaling(self.input_range, "caffe" if caffe else f"lpips-v{self.version}")
        self.backbone = self.spec.build(self.layers_kept)
        if precision == "bf16":  # the taps stay bfloat16 until the float32 normalisation
            for layer in self.backbone.layers:
                layer.dtype_policy = keras.DTypePolicy("mixed_bfloat16")
        self.normalize = ChannelUnitNormalization()
        self.heads = []
        if distance == "lpips":
            self.heads = [NonNegativeLinearHead(c, dropout=self.dropout) for c in self.spec.channels[: self.layers_kept]]
            for head in self.heads:
                head.build()
        restore_weights(self, backbone_weights, lin_weights)
        self.trainable = bool(trainable)
        self.backbone.trainable = bool(train_backbone) and self.trainable
        self._compiled = self._compiled_embedding = None
        self.built = True

    @classmethod
    def from_config(cls, config):
        """The metric `config` describes, with its weights from its sources; inside
        `keras.models.load_model`, whose file supplies every weight, no source is read (so a
        `.keras` file loads offline, whatever files or downloads built it). A custom object that
        keeps an LPIPS's config and rebuilds it with `from_config` when loaded (rather than holding
        it as a layer, whose weights the file keeps) should build it with `LPIPS(**config)`."""
        config = {key: value for key, value in config.items() if key != "dtype"}  # written before get_config left it out
        if not keras_compat.loading_a_saved_model():
            return super().from_config(config)
        with sources_deferred():
            return super().from_config(config)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """An official configuration by name ("alex-v0.1", "vgg-v0.0", ...; `keras_lpips.presets`),
        with its weights; `kwargs` (e.g. `input_range`) go to the constructor."""
        config = presets.get_preset(preset)["config"]
        fixed = sorted(set(config) & set(kwargs))
        if fixed:
            raise InputError(f"Preset {preset!r} sets {', '.join(fixed)} itself; build LPIPS(...) for another choice. Received: {fixed[0]}={kwargs[fixed[0]]!r}")
        return cls(**config, **kwargs)

    @property
    def min_input_size(self):
        """The smallest image side the kept layers accept."""
        return self.spec.min_input_size[self.layers_kept - 1]

    # --- the formula ---------------------------------------------------------------------------

    def features(self, images, training=None):
        """f_l: unit-normalised backbone features of a batch, one (N, h_l, w_l, C_l) tensor per
        kept layer. Computed once per image, they serve every comparison it takes part in.
        Images smaller than `min_input_size` are refused (`inputs.checked_size`), never run; an
        empty batch of known size gives empty features without running it (TensorFlow's oneDNN
        convolutions on a CPU fail on one)."""
        images = checked_size(images, self.min_input_size)
        count, height, width, _ = static_shape(images)
        if count == 0 and height is not None and width is not None:
            return [ops.zeros((0, *shape), "float32") for shape in self.feature_shapes(height, width)]
        features = self.backbone(self.scaling(images), training=training)
        if not isinstance(features, (list, tuple)):  # a functional model with one output returns it bare
            features = [features]
        return [self.normalize(f) for f in features]

    def compare(self, features0, features1, training=None):
        """Per-layer distance maps, (N, h_l, w_l, 1) each, between two lists of `features`."""
        return self.weigh(self.squared_differences(features0, features1), training)

    @staticmethod
    def squared_differences(features0, features1):
        """(f_l(x) - f_l(x0))^2 per layer: what the weights w_l act on."""
        return [ops.square(f0 - f1) for f0, f1 in zip(features0, features1)]

    def weigh(self, squared_differences, training=None):
        """w_l applied to per-layer squared feature differences: the learned 1x1 heads (with
        their dropout in training), or the plain channel sum for the cosine distance."""
        if self.heads:
            return [head(d, training=training) for head, d in zip(self.heads, squared_differences)]
        return [ops.sum(d, axis=-1, keepdims=True) for d in squared_differences]

    @staticmethod
    def total(maps):
        """Distances (N,) from per-layer maps: spatial means, added layer by layer as the reference does."""
        distance = ops.mean(maps[0], axis=(1, 2, 3))
        for m in maps[1:]:
            distance = distance + ops.mean(m, axis=(1, 2, 3))
        return distance

    @staticmethod
    def channel_means(squared_differences):
        """(N, channels of the kept layers): each channel's spatial mean of per-layer
        `squared_differences`, the layers side by side; what `distances_from_channel_means` takes."""
        return ops.concatenate([ops.mean(d, axis=(1, 2)) for d in squared_differences], axis=-1)

    def distances_from_channel_means(self, means):
        """Distances (N,) from `channel_means` (N, channels of the kept layers). Equal, up to
        rounding, to `total(compare(...))` without dropout, because the heads are linear and
        commute with the spatial mean."""
        sizes = self.spec.channels[: self.layers_kept]
        parts = ops.split(means, np.cumsum(sizes)[:-1].tolist(), axis=-1)
        per_layer = [ops.expand_dims(ops.expand_dims(p, 1), 1) for p in parts]  # (N, 1, 1, C): a 1x1 "map"
        return self.total(self.weigh(per_layer))

    def twoafc(self, ref, p0, p1, training=None):
        """d(ref, p0) and d(ref, p1), each (N,): the reference image's features serve both
        comparisons (3 images' work per triplet, not 4). In training, dropout draws a separate
        mask for each distance, as two forward passes would. The three are checked as `call`
        checks a pair (one shape, values in `input_range`)."""
        ref, p0, p1 = self.checked_images([ref, p0, p1], names=("ref", "p0", "p1"))
        diff0, diff1 = self.twoafc_squared_differences(ref, p0, p1, training)
        return self.total(self.weigh(diff0, training)), self.total(self.weigh(diff1, training))

    def twoafc_squared_differences(self, ref, p0, p1, training=None):
        """(f_l(ref) - f_l(p0))^2 and (f_l(ref) - f_l(p1))^2 per layer (`twoafc`'s; unchecked:
        `twoafc` checks the images), each batch through the backbone on its own (`_maps`)."""
        f_ref, f0, f1 = (self.features(x, training=training) for x in (ref, p0, p1))
        return self.squared_differences(f_ref, f0), self.squared_differences(f_ref, f1)

    def _maps(self, img0, img1, training=None):
        """Per-layer distance maps of a checked pair. Each batch goes through the backbone on its
        own, as in the reference, so that an image compared with itself gives exactly 0: in one
        batch holding both, its two copies would sit at different positions, which CPU
        convolution kernels can round differently (about 1e-14 apart, measured with AVX2)."""
        return self.compare(self.features(img0, training=training), self.features(img1, training=training), training)

    def call(self, inputs, training=None):
        """Distances, shape (N,), of a pair [img0, img1] of (N, H, W, 3) images (integer ones
        converted to float32 here, inside the layer: `checked_pair` leaves a functional model's
        symbolic inputs as they are)."""
        img0, img1 = (ops.cast(x, "float32") for x in inputs)
        return self.total(self._maps(img0, img1, training=training))

    # --- the metric as a squared Euclidean distance --------------------------------------------

    def negative_linear_weights(self):
        """Indices of the kept layers whose linear weights have a negative entry (read eagerly):
        none for "cosine" and the shipped files. With none, for images of one size,
        d(x, y) = ||E(x) - E(y)||^2 (`embed`); with some, the metric has no such embedding."""
        return [index for index, head in enumerate(self.heads) if np.min(keras_compat.eager_value(head.kernel)) < 0]

    def check_euclidean(self):
        """Raises `WeightsError` unless the metric is a squared Euclidean distance (`embed`)."""
        negative = self.negative_linear_weights()
        if negative:
            raise WeightsError(
                f"The linear weights of layer(s) {negative} have negative entries: LPIPS is then no squared "
                f"Euclidean distance, and has no embedding. Received: lin_weights={self.lin_weights!r}"
            )

    def embed(self, images):
        """E(x), shape (N, D) float32, for (N, H, W, 3) images: d(x, y) = ||E(x) - E(y)||^2 for
        any two images of one size (D = `embedding_size(H, W)`). Needs non-negative linear
        weights (`check_euclidean`). Called eagerly on TensorFlow it runs `embedding_function`,
        as an eager distance runs its traced function: the two agree under bf16 too, whose
        eager kernels round otherwise than traced ones. `embedding` is the part a graph traces."""
        self.check_euclidean()
        (images,) = self.checked_images([images], names=("images",))
        if self._compiled_call_applies([images], {"training": False}):
            return self.embedding_function()(images)
        return self.embedding(self.features(images, training=False))

    def embedding_function(self):
        """E of (N, H, W, 3) float32 images in inference mode, unchecked (`embed` checks): on
        TensorFlow the concrete function of a `tf.function` traced once for every batch and size
        (what `embed_images` runs batch after batch), elsewhere the eager computation."""
        if keras.backend.backend() != "tensorflow":
            return lambda images: self.embedding(self.features(images, training=False))
        if self._compiled_embedding is None:
            import tensorflow as tf

            @tf.function(input_signature=[keras_compat.image_batch_spec()], autograph=False)
            def embed(images):
                return self.embedding(self.features(images, training=False))

            self._compiled_embedding = embed.get_concrete_function()
        return self._compiled_embedding

    def embedding(self, features):
        """E from `features`: concat_l vec(sqrt(w_l) * f_l) / sqrt(h_l w_l), so that
        ||E(x) - E(y)||^2 = sum_l 1 / (h_l w_l) sum_hw sum_c w_lc (f_l(x) - f_l(y))^2_hwc,
        the distance `total(compare(...))` computes. Negative weights give NaN (see `embed`)."""
        scales = [ops.sqrt(ops.reshape(head.kernel, (-1,))) for head in self.heads] or [None] * len(features)
        parts = []
        for f, scale in zip(features, scales):
            shape = ops.shape(f)
            f = f if scale is None else f * scale
            size = shape[1] * shape[2] * shape[3]  # not -1: an empty batch leaves that unknown
            parts.append(ops.reshape(f / ops.sqrt(ops.cast(shape[1] * shape[2], f.dtype)), (shape[0], size)))
        return ops.concatenate(parts, axis=-1)

    def feature_shapes(self, height, width):
        """(h_l, w_l, C_l) of each kept layer's features for one `height` x `width` image."""
        check_static_size((1, height, width, 3), self.min_input_size)
        specs = self.backbone.compute_output_spec(keras.KerasTensor((1, int(height), int(width), 3)))
        specs = specs if isinstance(specs, (list, tuple)) else [specs]
        return [tuple(int(d) for d in spec.shape[1:]) for spec in specs]

    def embedding_size(self, height, width):
        """D, the length of `embed`'s vectors for `height` x `width` images (31,872 for alex at 64x64)."""
        return sum(int(np.prod(shape)) for shape in self.feature_shapes(height, width))

    # --- views of the same computation ---------------------------------------------------------

    def layer_maps(self, inputs, training=None):
        """Per-layer distance maps, a list of (N, h_l, w_l, 1) tensors."""
        return self._maps(*self.checked_pair(inputs), training=training)

    def per_layer(self, inputs, training=None):
        """Each layer's contribution to the distance, shape (N, layers)."""
        return ops.stack([ops.mean(m, axis=(1, 2, 3)) for m in self.layer_maps(inputs, training)], axis=-1)

    def spatial_map(self, inputs):
        """Distance maps at the input resolution, shape (N, H, W): each layer's map upsampled
        bilinearly (half-pixel centres), summed over layers. Their spatial mean is close to,
        not equal to, the distance."""
        pair = self.checked_pair(inputs)
        height, width = ops.shape(pair[0])[1], ops.shape(pair[0])[2]
        maps = [bilinear_resize(m[..., 0], height, width) for m in self._maps(*pair)]
        return sum(maps[1:], maps[0])

    # --- calling -------------------------------------------------------------------------------

    def __call__(self, inputs, *args, **kwargs):
        return self.call_named(inputs, NAMES, *args, **kwargs)

    def call_named(self, inputs, names, *args, **kwargs):
        """`self(inputs, ...)`, its input errors calling the two images `names` (`LPIPSLoss` and
        `MeanLPIPS`: y_true and y_pred). Checked here, outside Keras' call wrapper, so that errors
        read as one plain line."""
        pair = self.checked_pair(inputs, names)
        if not args and self._compiled_call_applies(pair, kwargs):
            return self._compiled_distance()(*pair)
        return super().__call__(pair, *args, **kwargs)

    def checked_pair(self, inputs, names=NAMES):
        """The pair [img0, img1] as float32 tensors, checked (`keras_lpips.inputs`: type, shape,
        size, values; in a TensorFlow graph behind assertions). Every entry point that runs the
        network on images from outside checks them first: on images smaller than
        `min_input_size` a CPU convolution kernel can kill the process (SIGFPE) instead of raising."""
        return check_image_pair(inputs, self.input_range, self.min_input_size, names)

    def checked_images(self, images, names):
        """`checked_pair` for a list of any number of images of one shape, one per name."""
        return check_images(images, self.input_range, self.min_input_size, names)

    def _compiled_call_applies(self, pair, kwargs):
        """Whether an eager call may take the traced inference function: TensorFlow backend, eager
        tensors, not an empty batch (whose size the traced function would not see: `features`),
        no distribution strategy, and inference for certain (training=False given, or no dropout
        for a surrounding layer's training flag to switch on)."""
        if keras.backend.backend() != "tensorflow" or set(kwargs) - {"training"} or kwargs.get("training"):
            return False
        if self.dropout and kwargs.get("training") is not False:
            return False
        import tensorflow as tf

        if not tf.executing_eagerly() or tf.distribute.has_strategy():
            return False
        return all(isinstance(x, tf.Tensor) and hasattr(x, "numpy") and x.shape[0] != 0 for x in pair)

    def _compiled_distance(self):
        """The concrete function of a `tf.function` computing the distances of two (N, H, W, 3)
        float32 batches in inference mode, traced once with batch and size left open. Called
        directly, it skips the `tf.function` dispatch (about a millisecond a call)."""
        if self._compiled is None:
            import tensorflow as tf

            image = keras_compat.image_batch_spec()

            @tf.function(input_signature=[image, image], autograph=False)
            def distance(img0, img1):
                return keras.Model.__call__(self, [img0, img1], training=False)

            self._compiled = distance.get_concrete_function()
        return self._compiled

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """`keras.Model.export`, taking by default a pair of float32 (N, H, W, 3) batches of any
        batch and size: Keras cannot infer the signature, eager calls having run the traced
        function rather than its call. `keras_lpips.export` writes the exports to serve (named
        signatures, request checks, TFLite, ONNX)."""
        if input_signature is None:
            image = keras.InputSpec(shape=(None, None, None, 3), dtype="float32")
            input_signature = [[image, image]]
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    def get_config(self):
        # No "dtype": the layers follow the global policy (and `precision`), and the constructor
        # refuses any other than float32.
        return {
            **{key: value for key, value in super().get_config().items() if key != "dtype"},
            "net": self.net,
            "version": self.version,
            "distance": self.distance,
            "layers": self.layers_kept,
            "backbone_weights": self.backbone_weights,
            "lin_weights": self.lin_weights,
            "input_range": self.input_range,
            "seed": self.seed,
            "dropout": self.dropout,
            "precision": self.precision,
            "train_backbone": self.backbone.trainable,
        }
