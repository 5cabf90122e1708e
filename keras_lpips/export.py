"""Exports an `LPIPS` metric for serving: a TF Serving SavedModel and a TFLite flatbuffer.

Both carry the same three signatures, on float32 NHWC RGB images in [0, 1] of
any batch size and any spatial size (the metric's own `input_range` is applied
inside, so every export reads the same kind of image):

- `serving_default`: `img0`, `img1` -> `distance` (N,)
- `rank`: `ref`, `p0`, `p1` -> `d0`, `d1` (N,) and `p1_preferred` (N,): 1.0
  where p1 is closer to ref, 0.0 where p0 is, 0.5 on a tie (the 2AFC verdict)
- `spatial`: `img0`, `img1` -> `map` (N, H, W)

Files appear all at once: each export is built under a temporary name beside
its destination and renamed into place, so an interrupted export leaves no
half-written model where a server would load it.

Example:
>>> metric = LPIPS(net="alex", input_range=(0, 1))
>>> export_savedmodel(metric, "models/lpips")       # models/lpips/1/saved_model.pb
>>> export_tflite(metric, "lpips.tflite", quantize="fp16")
"""

import os
import tempfile
from pathlib import Path

from keras_lpips.errors import InputError

# Signature name -> (input names, output names).
SIGNATURES = {
    "serving_default": (("img0", "img1"), ("distance",)),
    "rank": (("ref", "p0", "p1"), ("d0", "d1", "p1_preferred")),
    "spatial": (("img0", "img1"), ("map",)),
}
QUANTIZATIONS = ("none", "fp16", "dynamic")


def serving_functions(metric):
    """The metric's signatures as `tf.function`s on [0, 1] images, in a `tf.Module` that owns its weights.

    Returns `(module, {signature name: tf.function})`, ready for `tf.saved_model.save`.
    """
    import tensorflow as tf
    from keras import ops

    image = tf.TensorSpec([None, None, None, 3], tf.float32)
    low, high = metric.input_range

    def scaled(x):  # [0, 1] -> the metric's input_range
        return x if (low, high) == (0.0, 1.0) else x * (high - low) + low

    def distances(features0, features1):  # as LPIPS.call: spatial mean per layer, summed over layers
        return sum(ops.mean(m, axis=(1, 2, 3)) for m in metric.compare(features0, features1, training=False))

    @tf.function(input_signature=[image, image])
    def distance(img0, img1):
        return {"distance": metric([scaled(img0), scaled(img1)], training=False)}

    @tf.function(input_signature=[image, image, image])
    def rank(ref, p0, p1):
        # One backbone pass over [ref, p0, p1]: the reference's features serve both comparisons.
        n = tf.shape(ref)[0]
        features = metric.features(scaled(tf.concat([ref, p0, p1], axis=0)), training=False)
        d0 = distances([f[:n] for f in features], [f[n : 2 * n] for f in features])
        d1 = distances([f[:n] for f in features], [f[2 * n :] for f in features])
        return {"d0": d0, "d1": d1, "p1_preferred": tf.where(d1 < d0, 1.0, tf.where(d1 == d0, 0.5, 0.0))}

    @tf.function(input_signature=[image, image])
    def spatial(img0, img1):
        return {"map": metric.spatial_map([scaled(img0), scaled(img1)])}

    module = tf.Module()
    # The backing tf.Variables, not the Keras objects: the TFLite converter freezes
    # only those into constants (Keras' own ExportArchive tracks the same).
    module.weights = [v.value for v in metric.variables]
    module.distance, module.rank, module.spatial = distance, rank, spatial
    return module, {"serving_default": distance, "rank": rank, "spatial": spatial}


def export_savedmodel(metric, directory, version=1, overwrite=False):
    """Writes `metric` to `directory/<version>/`, the layout TF Serving loads
    (`--model_base_path=directory`), and returns that version directory.

    Refuses (`InputError`) to replace an existing version unless `overwrite`.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InputError(f"version must be a non-negative integer (a TF Serving version). Received: {version!r}")
    directory = Path(directory)
    target = directory / str(version)
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    # A dot-name, not an integer: TF Serving never takes it for a version.
    with tempfile.TemporaryDirectory(prefix=f".{version}.partial-", dir=directory) as staging:
        _save(metric, Path(staging) / "model")
        if target.exists():
            os.replace(target, Path(staging) / "replaced")  # deleted with the staging directory
        os.replace(Path(staging) / "model", target)
    return target


def export_tflite(metric, path, quantize="none", overwrite=False):
    """Writes `metric` as a TFLite flatbuffer with the same signatures and returns its path.

    Inputs have dynamic shapes (-1, -1, -1, 3): a signature runner resizes them
    to what it is given. `quantize`: "none" (float32), "fp16" (float16 weights,
    half the size) or "dynamic" (int8 weights, dynamic-range quantisation).
    Refuses (`InputError`) to replace an existing file unless `overwrite`.
    """
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZATIONS)}. Received: quantize={quantize!r}")
    import tensorflow as tf

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.partial-", dir=path.parent) as staging:
        saved = Path(staging) / "model"
        _save(metric, saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=list(SIGNATURES))
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        (Path(staging) / "model.tflite").write_bytes(converter.convert())
        os.replace(Path(staging) / "model.tflite", path)
    return path


def _save(metric, path):
    import tensorflow as tf

    module, signatures = serving_functions(metric)
    tf.saved_model.save(module, str(path), signatures=signatures)
