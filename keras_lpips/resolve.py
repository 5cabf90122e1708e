"""What a metric description means: the one place that turns a `model` path, a preset name or
the net options into a metric, for the command line and the library alike.

    metric = resolve_metric(MetricSpec(net="vgg"))                     # an LPIPS, official weights
    metric = resolve_metric(MetricSpec(model="runs/alex-lin"))         # a fit run's model.keras
    metric = resolve_metric(MetricSpec(model="models/lpips"))          # an export (ExportedMetric)
    metric = load_metric("model.keras")

A `model` path is a fit run folder (its model.keras), a `.keras` file, or a SavedModel from
`export` (its base folder, then the highest version, or a version folder). A `.keras` metric
serves images in the `input_range` asked for, whatever range it was built with (`for_input_range`).
"""

import dataclasses
import pathlib
import zipfile

from keras_lpips.errors import InputError, UnsafeFileError, WeightsError
from keras_lpips.weights.sources import IMAGENET, OFFICIAL, RANDOM, WEIGHT_NAMES, is_weight_name, official_lin_weights, untrained
# What names a weight file (`weights.loading.read_weight_file` reads any other suffix as a .pth).
WEIGHT_SUFFIXES = (".pth", ".pt", ".npz", ".safetensors", ".bin", ".ckpt")
# The layers each net taps (`len(keras_lpips.backbones.get_backbone(net).taps)`, which imports
# Keras): `MetricSpec` checks `layers` against them before anything is loaded.
TAPS = {"alex": 5, "vgg": 5, "squeeze": 7}
# The options that describe a metric part by part (what `model` and `preset` replace).
_PARTS = ("net", "version", "distance", "layers", "lin_weights", "backbone_weights")


@dataclasses.dataclass
class MetricSpec:
    """A metric described by options: `model` (a path) or `preset` replace all the others.

    `backbone_weights` and `lin_weights` take `LPIPS`'s values, and also "random"/"none" for
    None (untrained backbone, unweighted linear heads). What can be told without loading
    anything is checked when a spec is made (`InputError`): options that clash, a `model` or
    weight file that does not exist, `layers` out of the net's range."""

    net: str = "alex"
    version: str = "0.1"
    distance: str = "lpips"
    layers: int | None = None
    lin_weights: str | None = OFFICIAL
    backbone_weights: str | None = "imagenet"
    model: str | None = None
    preset: str | None = None
    given: dataclasses.InitVar[tuple | None] = None
    named = False  # set when made: whether an option names the metric (`given`, `model`, `preset`)

    def __post_init__(self, given):
        """`model` and `preset` each fix the whole metric: another option given with one of them
        would be ignored, so it is refused ("model=PATH fixes the whole metric: drop net=").
        `given`: the options the user gave (the command line says which); by default those that
        differ from their defaults."""
        fixed_by = [f"{name}={value}" for name, value in (("model", self.model), ("preset", self.preset)) if value is not None]
        defaults = MetricSpec.__dataclass_fields__
        if given is None:
            given = [name for name in _PARTS if getattr(self, name) != defaults[name].default]
        others = [f"{name}=" for name in _PARTS if name in given]
        self.named = bool(fixed_by or others)
        if len(fixed_by) > 1 or (fixed_by and others):
            raise InputError(f"{fixed_by[0]} fixes the whole metric: drop {', '.join(fixed_by[1:] + others)}")
        if self.model is not None:
            check_model_exists(self.model)
        elif self.preset is None:
            self._check_parts()

    def _check_parts(self):
        """The net options' layers against the net's taps, and each weight source: a name it
        takes or an existing file."""
        from keras_lpips.presets import canonical_net

        net = canonical_net(self.net)
        if self.layers is not None:
            from keras_lpips.argument_checks import check_integer

            check_integer("layers", self.layers, 1, TAPS[net], note=f"for net {net!r}")
        _check_source("lin_weights", self.lin_weights, "a shipped version")
        _check_source("backbone_weights", self.backbone_weights, "a weight name")

    def lpips_config(self):
        """The `LPIPS` arguments this spec names (a preset's, or the net options with "random" and
        "none" as None); None for a `model`, which is a file to load."""
        from keras_lpips.presets import get_preset

        if self.model is not None:
            return None
        if self.preset is not None:
            return dict(get_preset(self.preset)["config"])
        return {
            "net": self.net, "version": self.version, "distance": self.distance, "layers": self.layers,
            "backbone_weights": None if untrained(self.backbone_weights) else self.backbone_weights,
            "lin_weights": None if untrained(self.lin_weights) else official_lin_weights(self.lin_weights, self.version),
        }  # fmt: skip

    def weight_sources(self):
        """Where this metric's weights come from, for reports: {"model": PATH} for a model (its
        file holds them all), else {"backbone_weights": ..., "lin_weights": ...} as `LPIPS`
        takes them ("v0.1" for the official weights, a path, or None: untrained, unweighted)."""
        config = self.lpips_config()
        if config is None:
            return {"model": str(self.model)}
        sources = {name: config.get(name) for name in ("backbone_weights", "lin_weights")}
        return {name: None if value is None else str(value) for name, value in sources.items()}

    def input_paths(self):
        """The files or folders this metric is read from (`model`, and weight files given by
        path): what a command's outputs must never replace (`keras_lpips.files.check_output`)."""
        sources = (("model", self.model), ("lin_weights", self.lin_weights), ("backbone_weights", self.backbone_weights))
        files = [value for name, value in sources if value is not None and (name == "model" or not is_weight_name(name, value))]
        return tuple(pathlib.Path(value) for value in files)


def _check_source(name, value, kind):
    """`InputError` unless weight source `value` is a name argument `name` takes
    (`sources.is_weight_name`: "random"/"none" included), None (no weights), or an existing file:
    "Weight file not found: PATH" for what names a file (a folder or a suffix in it), else
    "lin_weights=v0.3 is neither a shipped version (official, v0.1, v0.0, random) nor a file"."""
    if value is None or is_weight_name(name, value) or pathlib.Path(value).is_file():
        return
    path = pathlib.Path(value)
    if path.suffix in WEIGHT_SUFFIXES or len(path.parts) > 1:
        raise InputError(f"Weight file not found: {value}")
    listed = ", ".join([*WEIGHT_NAMES[name], RANDOM])
    raise InputError(f"{name}={value} is neither {kind} ({listed}) nor a file")


def check_model_exists(model):
    """`InputError` unless the path `model` exists."""
    if not pathlib.Path(model).exists():
        raise InputError(f"model={model} does not exist")


def resolve_metric(spec, input_range=(0.0, 1.0), fetch_progress=None):
    """The metric `spec` describes, for images in `input_range`.

    `fetch_progress(done_bytes, total_bytes)`, if given, follows a first download of the
    ImageNet backbone."""
    from keras_lpips.model import LPIPS

    if spec.model is not None:
        return load_metric(spec.model, input_range)
    config = spec.lpips_config()
    if config["backbone_weights"] == IMAGENET:
        ensure_imagenet_weights(config["net"], fetch_progress)
    return LPIPS(**config, input_range=input_range)


def scoring_metric(spec, sizes, report=None, fetch_progress=None):
    """The metric that scores [0, 1] images of (height, width) `sizes`, the first against each
    other: an official configuration's LiteRT metric (`keras_lpips.litert_metric`: no TensorFlow
    to import) where the images hold at most `litert_metric.LITERT_MAX_PIXELS` together, else `resolve_metric`'s,
    refused (`InsufficientMemoryError`) before any image is read where the pairs would not fit in
    memory. `report(line)` hears of a first LiteRT conversion; `fetch_progress` as `resolve_metric`."""
    from keras_lpips.litert_metric import LITERT_MAX_PIXELS, litert_metric

    if sum(height * width for height, width in sizes) <= LITERT_MAX_PIXELS:
        metric = litert_metric(spec, report)
        if metric is not None:
            return metric  # neither Keras nor TensorFlow imported
    from keras_lpips.memory import check_fits_in_memory
    from keras_lpips.model import LPIPS

    metric = resolve_metric(spec, (0.0, 1.0), fetch_progress)
    if isinstance(metric, LPIPS):  # an exported SavedModel has no backbone to estimate from
        check_fits_in_memory(metric, *sizes[0], batch=len(sizes) - 1)
    return metric


def ensure_imagenet_weights(net, progress=None):
    """Fetches torchvision's ImageNet weights for `net` into the cache unless they are there."""
    from keras_lpips.backbones import get_backbone
    from keras_lpips.weights.cache_folder import imagenet_cache_path
    from keras_lpips.weights.pretrained import imagenet_state_dict

    name = get_backbone(net).name
    if not imagenet_cache_path(name).exists():
        imagenet_state_dict(name, progress=progress)


def load_metric(model, input_range=None):
    """The metric saved at `model`: a fit run folder, a `.keras` file (an `LPIPS` or an
    `LPIPSTrainer`'s metric) or a SavedModel export. With `input_range`, the metric for images
    in that range: a `.keras` metric built for another is rebuilt for it (`for_input_range`);
    an export takes [0, 1] only, so another range is refused."""
    from keras_lpips.exported_metric import load_savedmodel, savedmodel_directory

    check_model_exists(model)
    path = pathlib.Path(model)
    if path.is_file() and path.suffix != ".keras":
        raise InputError(f"model= takes a fit run folder, a .keras file or a SavedModel folder. Received the file {path}")
    if savedmodel_directory(path) is not None:
        if input_range is not None and not (isinstance(input_range, (tuple, list)) and tuple(input_range) == (0.0, 1.0)):
            raise InputError(
                f"model={path} is an exported SavedModel, which takes images in [0, 1] only: pass them in [0, 1] "
                f"(input_range=(0, 1)). Received: input_range={input_range!r}"
            )
        return _finite(load_savedmodel(path), path)
    if path.is_dir():
        if not (path / "model.keras").is_file() and ((path / "run.json").is_file() or (path / "checkpoint").is_dir()):
            raise InputError(  # a fit run folder (`keras_lpips.training.run_folder`) before its end
                f"model={path} is a fit run that has not finished: it has no model.keras yet (fit writes it "
                f"after the last epoch); fit with resume=True and out_dir={path} completes it"
            )
        if not (path / "model.keras").is_file():
            raise InputError(
                f"model={path} is a folder with neither model.keras (a fit run) nor saved_model.pb "
                "(an export, directly or in a version folder such as 1/)"
            )
        path = path / "model.keras"
    metric = _finite(_load_keras_file(path), path)
    return metric if input_range is None else for_input_range(metric, input_range)


def for_input_range(metric, input_range):
    """`metric` (an `LPIPS`) for images in `input_range`: itself where it was built for that
    range, else a copy of it, same weights, that scales its input from that range (its distances
    on images rescaled between the two ranges agree to float rounding)."""
    from keras_lpips.model import LPIPS
    from keras_lpips.weights.loading import sources_deferred

    if isinstance(input_range, (tuple, list)) and tuple(input_range) == metric.input_range:
        return metric  # else `LPIPS` checks it ("input_range must be one of ...")
    with sources_deferred():  # every weight is copied from `metric`: no source is read
        rebuilt = LPIPS.from_config({**metric.get_config(), "input_range": input_range})
    rebuilt.set_weights(metric.get_weights())
    return rebuilt


def _finite(metric, path):
    """`metric`, unless a weight is NaN or infinite (a diverged training run saves such): its
    distances would then be NaN, not numbers."""
    import numpy as np

    if not all(np.isfinite(w).all() for w in metric.get_weights()):
        raise WeightsError(f"{path} holds NaN or infinite weights (a diverged training run?): its distances would be NaN")
    return metric


def _load_keras_file(path):
    """The `LPIPS` in a `.keras` file, loaded in safe mode; its file supplies every weight, so no
    weight source is read (it loads offline)."""
    import keras

    from keras_lpips.model import LPIPS
    from keras_lpips.training.trainer import LPIPSTrainer
    from keras_lpips.weights.loading import sources_deferred

    if not zipfile.is_zipfile(path):
        raise WeightsError(f"Cannot load model file {path}: not a .keras file (a zip archive)")
    try:
        with sources_deferred():
            loaded = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises ValueError, KeyError, TypeError, ... for damaged files
        if "safe_mode" in str(error):
            raise UnsafeFileError(
                f"refusing to load {path}: it holds code (e.g. a Lambda layer) that only safe_mode=False would run"
            ) from None
        raise WeightsError(f"Cannot load model file {path} (damaged, or not saved by keras-lpips?): {error}") from None
    if isinstance(loaded, LPIPSTrainer):
        loaded = loaded.lpips
    if not isinstance(loaded, LPIPS):
        raise InputError(f"{path} holds a {type(loaded).__name__}, not a keras_lpips.LPIPS model")
    return loaded
