"""Exports an `LPIPS` metric for serving: a TF Serving SavedModel and a TFLite flatbuffer.

Both carry the same four signatures, on float32 NHWC RGB images in [0, 1] of
any batch size and any spatial size (the metric's own `input_range` is applied
inside, so every export reads the same kind of image):

- `serving_default`: `img0`, `img1` -> `distance` (N,)
- `rank`: `ref`, `p0`, `p1` -> `d0`, `d1` (N,) and `p1_preferred` (N,): 1.0
  where p1 is closer to ref, 0.0 where p0 is, 0.5 on a tie (the 2AFC verdict)
- `spatial`: `img0`, `img1` -> `map` (N, H, W)
- `embed`: `images` -> `embedding` (N, D): `LPIPS.embed`, so that the distance of
  two same-size images is the squared Euclidean distance of their embeddings. A
  graph cannot refuse: for a metric with negative linear weights (no embedding,
  `LPIPS.check_euclidean`) the served embedding is NaN.

A SavedModel also takes what clients send, encoded images (`BYTES_SIGNATURES`): a string
tensor (N,) of PNG, JPEG, BMP or GIF files of one size (base64 `{"b64": ...}` over TF
Serving's REST API), decoded as `keras-lpips score` reads files
(`keras_lpips.encoded_images`, where the differences are listed):

- `serving_bytes`: `img0`, `img1` -> `distance` (N,)
- `rank_bytes`: `ref`, `p0`, `p1` -> `d0`, `d1`, `p1_preferred` (N,)

TFLite has no image decoding ops in its builtin set: those two are SavedModel-only.

Every signature checks its images as a request (`graph_checks.checked_request`): the SavedModel refuses
one that fails (an `InvalidArgumentError`, "assertion failed: [MESSAGE]", values named as the
client sent them against [0, 1]); TFLite and ONNX, which drop assertions, give NaN in every
output at each refused item (all of them for images too small), the other items their values,
whatever the quantization.

Files appear all at once: each export is built under a temporary name beside
its destination and renamed into place, so an interrupted export leaves no
half-written model where a server would load it.

A SavedModel also carries `assets.extra/keras_lpips.json` (net, version,
distance, layers, smallest image side), which TF Serving and the SavedModel
loaders ignore; `keras_lpips.exported_metric.load_savedmodel` reads it to describe the model it
returns.

Example:
>>> metric = LPIPS(net="alex", input_range=(0, 1))
>>> export_savedmodel(metric, "models/lpips")       # models/lpips/1/saved_model.pb
>>> export_tflite(metric, "lpips.tflite", quantize="fp16")
>>> served = load_savedmodel("models/lpips")        # keras_lpips.exported_metric: the highest version
>>> served([img0, img1])                            # [0, 1] images -> (N,) distances
"""

import errno
import json
import math
from pathlib import Path

# Light imports only (no numpy, no TensorFlow): the command line reads FORMATS and QUANTIZATIONS
# for its --help.
from keras_lpips.disk_space import check_disk_space
from keras_lpips.errors import InputError
from keras_lpips.exported_metric import METADATA, ExportedMetric, savedmodel_directory, served_description
from keras_lpips.files import atomic_write, check_output, exists_message, output_error, replace_directory, scratch_directory

# Signature name -> (input names, output names).
SIGNATURES = {
    "serving_default": (("img0", "img1"), ("distance",)),
    "rank": (("ref", "p0", "p1"), ("d0", "d1", "p1_preferred")),
    "spatial": (("img0", "img1"), ("map",)),
    "embed": (("images",), ("embedding",)),
}
# SavedModel-only signatures on encoded images: a tf.string (N,) per input.
BYTES_SIGNATURES = {
    "serving_bytes": (("img0", "img1"), ("distance",)),
    "rank_bytes": (("ref", "p0", "p1"), ("d0", "d1", "p1_preferred")),
}
# What `keras-lpips export --format` writes: a SavedModel folder, or the file of each other format,
# named with its suffix (any case; `check_export_path`). ONNX: `keras_lpips.export_onnx`.
FORMATS = ("savedmodel", "tflite", "onnx")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
QUANTIZATIONS = ("none", "fp16", "dynamic")
# The images every float signature takes, whatever the metric's own input_range.
SERVED_RANGE = (0.0, 1.0)
# Steps each export reports to its `progress` callback (one call per finished step).
STEPS = {"savedmodel": 1, "tflite": 2}
# What an export holds besides its weights: the traced graphs (AlexNet's SavedModel: 9.9 MB of
# weights in a 10.3 MB folder; its TFLite file: 0.15 MB more than its weights), with room to spare.
GRAPH_BYTES = 2 * 10**6
# TFLite weights' bytes per float32 weight byte, by `quantize`.
QUANTIZED_SIZE = {"none": 1.0, "fp16": 0.5, "dynamic": 0.25}


def check_export_options(format, quantize="none", model_version=None, max_pixels=None):
    """What an export's options mean, checked before any work (the command line's too): `format`
    one of `FORMATS`; `quantize` one of `QUANTIZATIONS`, other than "none" for tflite only;
    `model_version` and `max_pixels` (None: not given) for savedmodel only. Returns the SavedModel
    version (`model_version`, 1 by default).

    Its `InputError`s, as `check_export_path`'s and `check_export_source`'s, write the arguments
    `argument=`, which the command line rewrites to its flags."""
    if format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZATIONS)}. Received: quantize={quantize!r}")
    if format != "tflite" and quantize != "none":
        raise InputError(f"quantize= applies to format=tflite only. Received: format={format} quantize={quantize}")
    if format != "savedmodel" and max_pixels is not None:
        raise InputError(f"max_pixels= applies to format=savedmodel only (its bytes signatures). Received: format={format}")
    if format != "savedmodel" and model_version is not None:
        raise InputError(f"model_version= applies to format=savedmodel only (its version folder). Received: format={format}")
    return 1 if model_version is None else model_version


def check_export_path(format, out, argument=None):
    """`InputError` where the output `out` is not named as `format` writes it: a tflite or onnx
    export is a file with its suffix (`SUFFIXES`, any case), a SavedModel a folder not named as
    one of those files. `argument`: the export function's name for `out` ("path", "directory"),
    whose messages then name that function; None: the command line's `format=` and `out=`. Every
    export function checks its output with it, after `check_output` (an input is never an
    output, whatever its name)."""
    def writer(kind):
        return f"format={kind}" if argument is None else f"export_{kind}"

    received = f"Received: {argument or 'out'}={out}"
    suffix = Path(out).suffix.lower()
    if format in SUFFIXES and suffix != SUFFIXES[format]:
        raise InputError(f"{writer(format)} writes a {SUFFIXES[format]} file: name it {SUFFIXES[format]}. {received}")
    named = [other for other, other_suffix in SUFFIXES.items() if suffix == other_suffix]
    if format == "savedmodel" and named:
        instead = f"pass {writer(named[0])}" if argument is None else f"call {writer(named[0])} for one,"
        raise InputError(f"{writer(format)} writes a folder, not a {SUFFIXES[named[0]]} file: {instead} or name a folder. {received}")


def check_export_source(format, model):
    """`InputError` where a SavedModel is to be exported from `model` (the path the metric is
    loaded from, or None) that is a SavedModel already: it holds no Keras model to export as one
    (tflite and onnx convert it as it is)."""
    if format == "savedmodel" and model is not None and savedmodel_directory(model) is not None:
        raise InputError(f"model={model} is already a SavedModel; copy its version folder, or pass a fit run or .keras file")


def serving_functions(metric, max_pixels=None):
    """The metric's signatures as `tf.function`s on [0, 1] images (`SIGNATURES`) and on encoded
    images (`BYTES_SIGNATURES`, refusing an input of more than `max_pixels` pixels in all, or an
    image of more: `encoded_images.decode_images`; None: `read_image`'s limit, `MAX_PIXELS`), in
    a `tf.Module` that owns its weights.

    Returns `(module, {signature name: tf.function})`, ready for `tf.saved_model.save`.
    """
    import tensorflow as tf

    from keras_lpips import keras_compat
    from keras_lpips.encoded_images import decode_images
    from keras_lpips.images import MAX_PIXELS
    from keras_lpips.graph_checks import checked_request

    max_pixels = _checked_max_pixels(max_pixels) or MAX_PIXELS
    image = keras_compat.image_batch_spec()
    low, high = metric.input_range

    def served(compute, **images):
        """`compute`'s outputs (name -> (N, ...) tensor) on a client's `images` in [0, 1], checked
        as a request (`graph_checks.checked_request`), scaled to the metric's input_range, and NaN at
        every item refused: `_nan_where_refused`."""
        images, valid = checked_request(images, SERVED_RANGE, metric.min_input_size)
        scaled = [x if (low, high) == SERVED_RANGE else x * (high - low) + low for x in images.values()]
        return {name: _nan_where_refused(x, valid) for name, x in compute(*scaled).items()}

    def verdicts(ref, p0, p1):
        """The rank signature's outputs: d(ref, p0), d(ref, p1) and the 2AFC verdict."""
        d0, d1 = metric.twoafc(ref, p0, p1, training=False)
        verdict = tf.where(d1 < d0, 1.0, tf.where(d1 == d0, 0.5, 0.0))
        return {"d0": d0, "d1": d1, "p1_preferred": tf.where(tf.math.is_nan(d0 + d1), float("nan"), verdict)}  # never a verdict on NaN

    @tf.function(input_signature=[image, image])
    def distance(img0, img1):
        return served(lambda img0, img1: {"distance": metric([img0, img1], training=False)}, img0=img0, img1=img1)

    @tf.function(input_signature=[image, image, image])
    def rank(ref, p0, p1):
        return served(verdicts, ref=ref, p0=p0, p1=p1)

    @tf.function(input_signature=[image, image])
    def spatial(img0, img1):
        return served(lambda img0, img1: {"map": metric.spatial_map([img0, img1])}, img0=img0, img1=img1)

    @tf.function(input_signature=[image])
    def embed(images):
        return served(lambda images: {"embedding": metric.embedding(metric.features(images, training=False))}, images=images)

    encoded = tf.TensorSpec([None], tf.string)

    @tf.function(input_signature=[encoded, encoded])
    def distance_bytes(img0, img1):
        return distance(decode_images(img0, "img0", max_pixels), decode_images(img1, "img1", max_pixels))

    @tf.function(input_signature=[encoded, encoded, encoded])
    def rank_bytes(ref, p0, p1):
        return rank(*(decode_images(x, name, max_pixels) for x, name in ((ref, "ref"), (p0, "p0"), (p1, "p1"))))

    module = tf.Module()
    # The backing tf.Variables, not the Keras objects: the TFLite converter freezes
    # only those into constants (Keras' own ExportArchive tracks the same).
    module.weights = [v.value for v in metric.variables]
    module.distance, module.rank, module.spatial, module.embed = distance, rank, spatial, embed
    module.distance_bytes, module.rank_bytes = distance_bytes, rank_bytes
    functions = {"serving_default": distance, "rank": rank, "spatial": spatial, "embed": embed}
    return module, {**functions, "serving_bytes": distance_bytes, "rank_bytes": rank_bytes}


def _nan_where_refused(outputs, valid):
    """`outputs`, (N, ...), NaN at each item not `valid` (N,). Applied to what a signature returns,
    after every kernel: a dynamic-range int8 one quantizes a NaN input to a number."""
    import tensorflow as tf

    valid = tf.reshape(valid, [-1] + [1] * (outputs.shape.rank - 1))
    return tf.where(valid, outputs, tf.constant(float("nan"), outputs.dtype))


def export_savedmodel(metric, directory, version=1, overwrite=False, progress=None, max_pixels=None):
    """Writes `metric` to `directory/<version>/`, the layout TF Serving loads
    (`--model_base_path=directory`), and returns that version directory. Its bytes signatures
    refuse an input of more than `max_pixels` pixels (None: `read_image`'s limit, 179 million,
    which a server may not have the memory to score: bound it to what it can).

    Refuses (`InputError`) a `directory` named as a .tflite or .onnx file (`check_export_path`), to
    replace an existing version unless `overwrite`, and a version folder that appears while the
    export runs (another process's) likewise: nothing is ever replaced silently. `progress`, if
    given, is called with 1 when the SavedModel is written.
    """
    from keras_lpips.argument_checks import check_integer

    version = check_integer("version", version, 0, note="(a TF Serving version)")
    _checked_max_pixels(max_pixels)
    directory = Path(directory)
    check_output(directory, _inputs(metric), overwrite=True, kind="folder")  # holds the versions
    check_export_path("savedmodel", directory, "directory")
    target = check_output(directory / str(version), _inputs(metric), overwrite, kind="folder")
    needed = estimate_export_bytes(metric, "savedmodel")
    check_disk_space(directory, needed, f"A SavedModel of {metric.net} LPIPS")
    try:
        # Built under a hidden name (never taken for a version by TF Serving), then renamed into
        # place: a version folder that appeared meanwhile is refused unless `overwrite`.
        with scratch_directory(target, needed=needed) as scratch:
            _save(metric, scratch / "model", max_pixels)
            _publish_version(scratch / "model", target, overwrite)
    except OSError as error:
        raise output_error(directory, error) from None
    if progress:
        progress(1)
    return target


def _publish_version(folder, target, overwrite):
    """Renames the SavedModel `folder` to its version folder `target`: one that exists (another
    process's, written meanwhile) is refused (`InputError`) unless `overwrite`."""
    try:
        replace_directory(folder, target, replace=overwrite)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise InputError(exists_message(target)) from None
        raise


def export_tflite(metric, path, quantize="none", overwrite=False, progress=None):
    """Writes `metric` (an `LPIPS`, or an `ExportedMetric` SavedModel) as a TFLite flatbuffer
    with the float signatures (`SIGNATURES`; not the bytes ones) and returns its path.

    Inputs have dynamic shapes (-1, -1, -1, 3): a signature runner resizes them
    to what it is given. `quantize`: "none" (float32), "fp16" (float16 weights,
    half the size) or "dynamic" (int8 weights, dynamic-range quantisation).
    Refuses (`InputError`) a `path` not named .tflite (`check_export_path`), to replace an
    existing file unless `overwrite`, and a file that appears while the export runs (another
    process's) likewise, and never writes over the SavedModel it converts. `progress`, if given, is called with 1 after each of the two steps
    (tracing to a SavedModel, converting).
    """
    check_export_options("tflite", quantize)
    import tensorflow as tf

    path = check_output(path, _inputs(metric), overwrite, kind="file", new_folders=True)
    check_export_path("tflite", path, "path")
    needed = estimate_export_bytes(metric, "tflite", quantize)
    check_disk_space(path.parent, needed, f"A TFLite export of {metric.net} LPIPS (quantization {quantize})")
    try:
        with scratch_directory(path, needed=needed) as scratch:
            if isinstance(metric, ExportedMetric):  # already traced: convert its SavedModel
                saved = metric.directory
            else:
                saved = scratch / "model"
                _save(metric, saved)
            if progress:
                progress(1)
            converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=list(SIGNATURES))
            if quantize != "none":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "fp16":
                converter.target_spec.supported_types = [tf.float16]
            flatbuffer = converter.convert()
    except OSError as error:
        raise output_error(path, error) from None
    atomic_write(path, flatbuffer, as_input_error=True, overwrite=overwrite)  # a file that appeared meanwhile is refused
    if progress:
        progress(1)
    return path


def estimate_export_bytes(metric, fmt="savedmodel", quantize="none"):
    """Bytes an export takes on disk at its peak, from the size of `metric`'s weights (an `LPIPS`,
    or an `ExportedMetric`: its SavedModel's variables): a SavedModel is its float32 weights and
    graphs (`GRAPH_BYTES`); a TFLite export first writes such a SavedModel beside its file
    (unless converting an `ExportedMetric`), removed before the flatbuffer (weights times
    `QUANTIZED_SIZE[quantize]`, and graphs) is written, so the larger of the two."""
    if isinstance(metric, ExportedMetric):
        variables = Path(metric.directory) / "variables"
        weights = sum(p.stat().st_size for p in variables.rglob("*") if p.is_file()) if variables.is_dir() else 0
    else:
        weights = 4 * sum(math.prod(v.shape) for v in metric.weights)  # float32 (a bf16 metric: at most)
    savedmodel = weights + GRAPH_BYTES
    if fmt == "savedmodel":
        return savedmodel
    tflite = int(weights * QUANTIZED_SIZE.get(quantize, 1.0)) + GRAPH_BYTES
    return tflite if isinstance(metric, ExportedMetric) else max(savedmodel, tflite)


def _inputs(metric):
    """What an export reads from disk: an `ExportedMetric`'s SavedModel folder."""
    return (metric.directory,) if isinstance(metric, ExportedMetric) else ()


def _checked_max_pixels(max_pixels):
    from keras_lpips.argument_checks import check_integer

    return check_integer("max_pixels", max_pixels, 1, allow_none=True, note="(pixels per input of a bytes request)")


def _save(metric, path, max_pixels=None):
    import tensorflow as tf

    import keras_lpips
    from keras_lpips.inputs import traced_for_export

    with traced_for_export():
        module, signatures = serving_functions(metric, max_pixels)
        tf.saved_model.save(module, str(path), signatures=signatures)
    info = {"keras_lpips": keras_lpips.__version__, **served_description(metric), "input_range": list(SERVED_RANGE)}
    (Path(path) / METADATA).parent.mkdir(exist_ok=True)
    atomic_write(Path(path) / METADATA, json.dumps(info, indent=2) + "\n")
