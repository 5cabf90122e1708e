"""Exports an `LPIPS` metric for serving: a TF Serving SavedModel and a TFLite flatbuffer.

Both carry the same three signatures, on float32 NHWC RGB images in [0, 1] of
any batch size and any spatial size (the metric's own `input_range` is applied
inside):

- `serving_default`: `img0`, `img1` -> `distance` (N,)
- `rank`: `ref`, `p0`, `p1` -> `d0`, `d1` (N,) and `p1_preferred` (N,): 1.0
  where p1 is closer to ref, 0.0 where p0 is, 0.5 on a tie (the 2AFC verdict)
- `spatial`: `img0`, `img1` -> `map` (N, H, W)

Files appear all at once: each export is built under a temporary name next to
its destination and renamed into place, so an interrupted export leaves no
half-written model where a server would load it.

Example:
>>> metric = LPIPS(net="alex", input_range=(0, 1))
>>> export_savedmodel(metric, "models/lpips")       # models/lpips/1/saved_model.pb
>>> export_tflite(metric, "lpips.tflite", quantize="fp16")
"""

import os
import shutil
import tempfile
import warnings
from pathlib import Path

from keras_lpips.errors import InputError

QUANTIZATIONS = ("none", "fp16", "dynamic")


def _serving_module(metric):
    """A `tf.Module` holding the metric, with one `tf.function` per signature."""
    import tensorflow as tf
    from keras import ops

    image = tf.TensorSpec([None, None, None, 3], tf.float32)
    low, high = metric.input_range

    def to_metric_range(x):
        return x if (low, high) == (0.0, 1.0) else x * (high - low) + low

    def distances(features0, features1):
        maps = metric.compare(features0, features1, training=False)
        return ops.sum(ops.stack([ops.mean(m, axis=(1, 2, 3)) for m in maps], axis=-1), axis=-1)

    module = tf.Module()
    # Track the backing tf.Variables, not the Keras ones: the TFLite converter
    # freezes only the former into constants (Keras' own ExportArchive does the same).
    module.tf_variables = [v.value for v in metric.variables]

    @tf.function(input_signature=[image, image])
    def distance(img0, img1):
        return {"distance": metric([to_metric_range(img0), to_metric_range(img1)], training=False)}

    @tf.function(input_signature=[image, image, image])
    def rank(ref, p0, p1):
        # One backbone pass over [ref, p0, p1]: the reference's features serve both comparisons.
        n = tf.shape(ref)[0]
        features = metric.features(to_metric_range(tf.concat([ref, p0, p1], axis=0)), training=False)
        d0 = distances([f[:n] for f in features], [f[n : 2 * n] for f in features])
        d1 = distances([f[:n] for f in features], [f[2 * n :] for f in features])
        preferred = tf.where(d1 < d0, 1.0, tf.where(d1 == d0, 0.5, 0.0))
        return {"d0": d0, "d1": d1, "p1_preferred": preferred}

    @tf.function(input_signature=[image, image])
    def spatial(img0, img1):
        return {"map": metric.spatial_map([to_metric_range(img0), to_metric_range(img1)])}

    module.distance, module.rank, module.spatial = distance, rank, spatial
    signatures = {"serving_default": distance, "rank": rank, "spatial": spatial}
    return module, signatures


def _save(metric, path):
    import tensorflow as tf

    module, signatures = _serving_module(metric)
    tf.saved_model.save(module, str(path), signatures=signatures)


def export_savedmodel(metric, directory, version=1, overwrite=False):
    """Writes `metric` as `directory/<version>/`, the layout TF Serving loads
    (`--model_base_path=directory`); returns that version directory.

    Refuses (`InputError`) to replace an existing version unless `overwrite`.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InputError(f"version must be a non-negative integer (TF Serving's version directory). Received: {version!r}")
    directory = Path(directory)
    target = directory / str(version)
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    # A dot-name that is not an integer: TF Serving never picks it up as a version.
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=directory))
    try:
        _save(metric, staging / "model")
        _replace(staging / "model", target, staging / "old")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def export_tflite(metric, path, quantize="none", overwrite=False):
    """Writes `metric` as a TFLite flatbuffer with the same signatures; returns its path.

    Inputs have dynamic shapes (-1, -1, -1, 3): resize them at run time, or call a
    signature runner, which does. `quantize`: "none" (float32), "fp16" (float16
    weights, half the size) or "dynamic" (int8 weights, dynamic-range quantisation).
    """
    if quantize not in QUANTIZATIONS:
        raise InputError(f"quantize must be one of {', '.join(QUANTIZATIONS)}. Received: quantize={quantize!r}")
    import tensorflow as tf

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.partial-", dir=path.parent) as staging:
        _save(metric, Path(staging) / "model")
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(Path(staging) / "model"), signature_keys=["serving_default", "rank", "spatial"]
        )
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter warns about its own deprecations
            flatbuffer = converter.convert()
        partial = Path(staging) / "model.tflite"
        partial.write_bytes(flatbuffer)
        os.replace(partial, path)
    return path


def _replace(source, target, trash):
    """Renames directory `source` to `target`, moving an existing `target` to `trash` first."""
    if target.exists():
        os.replace(target, trash)
    os.replace(source, target)
