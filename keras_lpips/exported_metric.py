"""A SavedModel that `keras_lpips.export.export_savedmodel` wrote, read back: its version
directory (`savedmodel_directory`, as TF Serving picks it), its metadata (`parse_metadata`; what
every served form records of a metric: `served_description`) and the metric it serves
(`load_savedmodel` -> `ExportedMetric`, called like an `LPIPS`)."""

import json
from pathlib import Path

from keras_lpips.errors import DataError, InputError, reason
from keras_lpips.files import read_bounded

# Where an export keeps its description (`served_description`, with keras-lpips' version and the
# served input range), which TF Serving and the SavedModel loaders ignore; the largest such file
# read (an export writes about 200 bytes).
METADATA = Path("assets.extra") / "keras_lpips.json"
METADATA_BYTES = 10**5
# The signatures `ExportedMetric` calls: exports from before "embed" or the bytes signatures load too.
REQUIRED = ("serving_default", "rank", "spatial")


def served_description(metric):
    """What every served form of the `LPIPS` `metric` records about it, read back as the served
    metric's attributes (`ExportedMetric`, `litert_metric.LiteRTMetric`): net, version, distance,
    layers (those kept, `layers_kept`) and min_input_size. An export's METADATA and a LiteRT
    conversion's record add their own fields to it."""
    return {
        "net": metric.net, "version": metric.version, "distance": metric.distance,
        "layers": metric.layers_kept, "min_input_size": metric.min_input_size,
    }  # fmt: skip


def savedmodel_directory(path):
    """The SavedModel directory `path` names: `path` itself when it holds saved_model.pb, else
    its highest-numbered version subdirectory holding one (the one TF Serving would serve);
    None when it is neither."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if not path.is_dir():
        return None
    versions = [p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    return max(versions, key=lambda p: int(p.name), default=None)


def no_savedmodel_message(path):
    """Why `path` is no SavedModel, and what to do where it is a Keras model (a `.keras` file, or
    a fit run folder with its model.keras): export it first."""
    path = Path(path)
    keras_file = path if path.suffix == ".keras" else path / "model.keras"
    if keras_file.is_file():
        return (
            f"{path} is a Keras model ({keras_file.name}), not a SavedModel: export it first "
            f"(keras_lpips.export.export_savedmodel; the command line: keras-lpips export --model {path} --format savedmodel --out DIR)"
        )
    return f"{path} holds no saved_model.pb, directly or in a version subdirectory (1/, 2/, ...)"


def load_savedmodel(path):
    """An `ExportedMetric` for a SavedModel written by `export_savedmodel`: its version
    directory, or the base directory (then the highest version, as TF Serving picks).
    A SavedModel that could run ops keras-lpips exports never run is refused before it is
    loaded (`UnsafeFileError`, `keras_lpips.savedmodel_ops`)."""
    directory = savedmodel_directory(path)
    if directory is None:
        raise InputError(no_savedmodel_message(path))
    return ExportedMetric(directory)


class ExportedMetric:
    """A SavedModel from `export_savedmodel`, called like an `LPIPS` metric on [0, 1] images.

    `metric([img0, img1])` runs the `serving_default` signature, `twoafc` the `rank` one and
    `spatial_map` the `spatial` one. An export has no features to reuse: code that compares
    many images (`distance_matrix`) scores each pair through it whole.

    Attributes: `net`, `version`, `distance`, `layers_kept`, `min_input_size` (from the
    export's assets.extra/keras_lpips.json; "unknown" where it has none), `input_range`
    (always (0, 1)) and `directory`.

    Its saved_model.pb is checked before anything is loaded (`savedmodel_ops.check_savedmodel`:
    `UnsafeFileError` for an op keras-lpips exports never run); an unreadable or damaged
    metadata file is a `DataError`.
    """

    input_range = (0.0, 1.0)

    def __init__(self, directory):
        import tensorflow as tf

        from keras_lpips.savedmodel_ops import check_savedmodel

        self.directory = Path(directory)
        check_savedmodel(self.directory)
        path = self.directory / METADATA
        info = parse_metadata(read_bounded(path, METADATA_BYTES, "keras-lpips writes"), path) if path.exists() else {}
        try:
            loaded = tf.saved_model.load(str(self.directory))
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise DataError(f"Cannot load the SavedModel in {self.directory}: {error}") from None
        missing = [name for name in REQUIRED if name not in loaded.signatures]
        if missing:
            raise InputError(
                f"{self.directory} lacks the signature(s) {', '.join(missing)}: not a keras-lpips export "
                f"(it has {', '.join(loaded.signatures) or 'none'})"
            )
        self._loaded = loaded
        self._distance = loaded.signatures["serving_default"]
        self._spatial = loaded.signatures["spatial"]
        self._rank = loaded.signatures["rank"]
        self.net = info.get("net", "unknown")
        self.version = info.get("version", "unknown")
        self.distance = info.get("distance", "unknown")
        self.layers_kept = info.get("layers")
        self.min_input_size = info.get("min_input_size", 1)

    def __repr__(self):
        return f"ExportedMetric({str(self.directory)!r}, net={self.net!r}, version={self.version!r})"

    def get_weights(self):
        """The export's weights as numpy arrays (as `keras.Model.get_weights`)."""
        import numpy as np

        return [np.asarray(v) for v in getattr(self._loaded, "weights", [])]

    def _run(self, function, **images):
        """`function` of named (N, H, W, 3) images in [0, 1], checked as an `LPIPS` checks them, and
        not empty (which an `LPIPS` scores, the signatures refuse)."""
        import numpy as np
        import tensorflow as tf

        from keras_lpips.array_checks import check_not_empty
        from keras_lpips.inputs import check_images

        first = next(iter(images))
        for name, x in images.items():  # the signatures refuse an empty batch: said here, in their words
            check_not_empty(np.shape(x), name)
        tensors = check_images(list(images.values()), self.input_range, self.min_input_size, tuple(images), fixed_range=True)
        checked = dict(zip(images, tensors))
        try:
            return function(**checked)
        except tf.errors.InvalidArgumentError as error:
            reason = error.message.strip().splitlines()[0]
            shape = tuple(checked[first].shape)
            raise InputError(f"The SavedModel in {self.directory} cannot score images of shape {shape}: {reason}") from None

    def __call__(self, inputs, training=None):
        """Distances, shape (N,), of a pair [img0, img1] of (N, H, W, 3) images in [0, 1]."""
        return self._run(self._distance, img0=inputs[0], img1=inputs[1])["distance"]

    def spatial_map(self, inputs):
        """Distance maps at the input resolution, shape (N, H, W)."""
        return self._run(self._spatial, img0=inputs[0], img1=inputs[1])["map"]

    def twoafc(self, ref, p0, p1):
        """(d0, d1) of a batch of triplets in [0, 1], through the `rank` signature."""
        out = self._run(self._rank, ref=ref, p0=p0, p1=p1)
        return out["d0"], out["d1"]


def parse_metadata(data, path):
    """An export's METADATA file, the bytes `data` of `path`, as a dict: `DataError` when it is
    not a JSON object, or when a field `ExportedMetric` reads has another type than
    `served_description` gives."""
    from keras_lpips.argument_checks import is_integer  # numpy: not at import (`keras_lpips.export`'s)

    try:
        info = json.loads(data)
    except (ValueError, RecursionError) as error:  # not JSON or not UTF-8; nested too deep
        raise DataError(f"Cannot read {path}: not JSON ({reason(error)})") from None
    if not isinstance(info, dict):
        raise DataError(f"Cannot read {path}: expected a JSON object. Received: {json.dumps(info)[:80]}")
    for key in ("net", "version", "distance"):
        if not isinstance(info.get(key, ""), str):
            raise DataError(f"Cannot read {path}: its {key!r} must be a string. Received: {json.dumps(info[key])[:80]}")
    for key in ("layers", "min_input_size"):
        value = info.get(key, 1)
        if not (is_integer(value) and value >= 1):
            raise DataError(f"Cannot read {path}: its {key!r} must be a positive integer. Received: {json.dumps(value)[:80]}")
    return info
