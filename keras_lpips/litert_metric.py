"""The float32 metric served by LiteRT: an official configuration converted once to TFLite and
cached, so that scoring later needs neither TensorFlow nor Keras (a fraction of their start-up).

    metric = litert_metric(MetricSpec(net="alex"))   # None where it does not apply
    metric([img0, img1])                             # [0, 1] images -> (N,) distances

Official configurations only: torchvision's ImageNet backbone with a pinned digest
(`keras_lpips.weights.sources.IMAGENET_FEATURES_SHA256`: alex, vgg) and the shipped linear
weights (`LIN_SHA256`) or the cosine distance, any `layers`. The conversion
(`keras_lpips.export.export_tflite`, quantize="none") is cached in the weight cache's `litert/`
under a digest of the configuration, those pins and the versions of keras-lpips, TensorFlow,
Keras and ai-edge-litert (read from the installed packages' metadata: no import), beside a JSON that
records its sha256; a file whose digest differs, or that does not load, is converted again,
never used. One process converts while others wait for it (a lock); a read-only cache filled
ahead of time is used as it is; a conversion that fails is a note, and Keras scores (options
the metric refuses, an `InputError`, are the user's error, raised as they are).
`KERAS_LPIPS_NO_LITERT=1` turns this path off (the Keras metric is used instead).
"""

import contextlib
import hashlib
import importlib.metadata
import json
import os
import time

from keras_lpips.array_checks import checked_array_pair
from keras_lpips.errors import InputError, WeightsError, note, reason
from keras_lpips.quiet import muted_stderr

PACKAGES = ("tensorflow", "keras", "ai-edge-litert")
# Pixels (all images together) up to which `score` takes this path: larger inputs go through the
# Keras metric, whose memory check (`keras_lpips.memory.check_fits_in_memory`) needs its backbone.
LITERT_MAX_PIXELS = 3 * 1024 * 1024


def official_config(spec):
    """The `LPIPS` arguments of `spec` (a `keras_lpips.resolve.MetricSpec`) when LiteRT can serve
    it (no `model`, pinned ImageNet backbone, shipped linear weights or cosine), else None."""
    from keras_lpips.presets import canonical_net
    from keras_lpips.weights.sources import IMAGENET_FEATURES_SHA256, LIN_SHA256

    config = spec.lpips_config()
    if config is None:
        return None
    config = {"layers": None, **config, "net": canonical_net(config["net"]), "version": str(config["version"])}
    if config["backbone_weights"] != "imagenet" or IMAGENET_FEATURES_SHA256.get(config["net"]) is None:
        return None
    if config["distance"] != "cosine" and f"{config['lin_weights']}/{config['net']}.npz" not in LIN_SHA256:
        return None
    return config


def cache_key(config):
    """A digest of what the conversion of `config` depends on."""
    import keras_lpips
    from keras_lpips.weights.sources import IMAGENET_FEATURES_SHA256, LIN_SHA256

    lin = None if config["distance"] == "cosine" else LIN_SHA256[f"{config['lin_weights']}/{config['net']}.npz"]
    described = {
        "net": config["net"], "version": config["version"], "distance": config["distance"], "layers": config["layers"],
        "backbone_sha256": IMAGENET_FEATURES_SHA256[config["net"]], "lin_sha256": lin,
        "keras_lpips": keras_lpips.__version__, **{name: _installed_version(name) for name in PACKAGES},
    }  # fmt: skip
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def _installed_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cached_paths(config, for_writing=False):
    """(the .tflite file, its JSON record) of `config` in the cache: where they are for reading
    (a read-only cache's too), where they go for writing (`keras_lpips.weights.cache_folder.cached_file`)."""
    from keras_lpips.weights.cache_folder import cached_file

    stem = f"litert/{config['net']}-{cache_key(config)}"
    record = cached_file(f"{stem}.json", for_writing)
    return record.with_suffix(".tflite"), record


def litert_metric(spec, report=None):
    """A `LiteRTMetric` for `spec`, converting it first where the cache lacks it, or None where
    LiteRT does not apply: not an official configuration, its ImageNet weights not cached yet,
    ai-edge-litert missing, `KERAS_LPIPS_NO_LITERT=1`, or a conversion that failed.
    `report(line)`, if given, is told of a conversion and its time."""
    from keras_lpips.weights.cache_folder import imagenet_cache_path, offline

    offline()  # a KERAS_LPIPS_OFFLINE that means nothing is refused on this path too
    config = official_config(spec)
    if os.environ.get("KERAS_LPIPS_NO_LITERT") == "1" or config is None:
        return None
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return None
    loaded = _load_verified(*cached_paths(config))
    if loaded is not None:
        return loaded
    if not imagenet_cache_path(config["net"]).exists():
        return None  # the Keras path fetches them, with its progress bar; the next run converts
    try:
        return _converted(config, report)
    except WeightsError:
        return None  # the Keras metric reads the same weights, and says what is wrong with them
    except InputError:
        raise  # the user's options are wrong: Keras would refuse them too, in the same words
    except Exception as error:  # any other failure (a full disk, TensorFlow's converter): Keras serves this run
        note(f"could not prepare the LiteRT scorer ({reason(error)}); scoring with Keras, and trying again next time")
        return None


def _converted(config, report):
    """The conversion of `config`, made in the writable cache under a lock: a process that
    finds another converting waits for it and uses its result."""
    from keras_lpips.file_lock import file_lock

    model, record = cached_paths(config, for_writing=True)
    model.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(model):
        loaded = _load_verified(model, record)
        if loaded is None:
            start = time.perf_counter()
            _convert(config, model, record, report)
            if report:
                report(f"prepared in {time.perf_counter() - start:.0f} s")
            loaded = _load_verified(model, record)
            if loaded is None:
                raise RuntimeError(f"LiteRT cannot load the conversion written to {model}")
    return loaded


def _load_verified(model, record):
    """The cached conversion if its content matches its record and loads; anything else (a
    missing, damaged or foreign file) is a miss, and what is there is removed where it can be."""
    try:
        info = json.loads(record.read_text())
        content = model.read_bytes()
    except (OSError, ValueError):
        return None
    if isinstance(info, dict) and hashlib.sha256(content).hexdigest() == info.get("sha256"):
        try:
            return LiteRTMetric(content, info)
        except (KeyError, TypeError, ValueError, RuntimeError):
            pass  # a record of another shape, or a file LiteRT cannot load: converted again
    for path in (model, record):
        with contextlib.suppress(OSError):  # a read-only cache's copy stays; the writable cache gets a new one
            path.unlink(missing_ok=True)
    return None


def _convert(config, model, record, report=None):
    """Converts the metric `config` describes to TFLite at `model` (written whole or not at all),
    then its `record`; `report` says so once its weights are read (the conversion then takes
    10-30 s). The caller holds the lock on `model`."""
    from keras_lpips.export import export_tflite
    from keras_lpips.exported_metric import served_description
    from keras_lpips.files import atomic_write
    from keras_lpips.model import LPIPS

    metric = LPIPS(**config, input_range=(0.0, 1.0))
    if report:
        report(f"preparing the LiteRT scorer for {config['net']} v{config['version']} once (about 20 s) ...")
    record.unlink(missing_ok=True)  # no record describes a file being replaced
    export_tflite(metric, model, quantize="none", overwrite=True)
    info = {"sha256": hashlib.sha256(model.read_bytes()).hexdigest(), **served_description(metric)}
    atomic_write(record, json.dumps(info, indent=2) + "\n")


class LiteRTMetric:
    """A cached TFLite conversion of an `LPIPS` metric, called like one on [0, 1] images.

    `metric([img0, img1])` runs the `serving_default` signature, `spatial_map` the `spatial` one.
    Attributes as `keras_lpips.exported_metric.ExportedMetric`: `net`, `version`, `distance`,
    `layers_kept`, `min_input_size` (its record's `served_description`) and `input_range` (always
    (0, 1))."""

    input_range = (0.0, 1.0)

    def __init__(self, content, info):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=content)
        self._distance = self._interpreter.get_signature_runner("serving_default")
        self._spatial = self._interpreter.get_signature_runner("spatial")
        self.net, self.version, self.distance = info["net"], info["version"], info["distance"]
        self.layers_kept, self.min_input_size = info["layers"], int(info["min_input_size"])

    def __repr__(self):
        return f"LiteRTMetric(net={self.net!r}, version={self.version!r}, distance={self.distance!r})"

    def __call__(self, inputs):
        """Distances, shape (N,), of a pair [img0, img1] of (N, H, W, 3) images in [0, 1]."""
        return self._run(self._distance, inputs)["distance"]

    def spatial_map(self, inputs):
        """Distance maps at the input resolution, shape (N, H, W)."""
        return self._run(self._spatial, inputs)["map"]

    def _run(self, runner, inputs):
        img0, img1 = checked_array_pair(inputs, self.input_range, self.min_input_size, fixed_range=True)
        with muted_stderr():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" line
            return runner(img0=img0, img1=img1)
