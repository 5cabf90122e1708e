"""Exports an `LPIPS` metric as an ONNX model, for runtimes outside TensorFlow (onnxruntime, ...).

The ONNX graph is the SavedModel's `serving_default` signature (`keras_lpips.export`)
converted by tf2onnx: `img0`, `img1`, float32 NHWC RGB in [0, 1] of any batch and size
(dynamic axes) -> `distance` (N,), NaN at each item the SavedModel would refuse (ONNX has no
assertions: `keras_lpips.export`). Other signatures are other graphs: a 2AFC verdict is two
distances. Needs the `onnx` extra (`pip install 'keras-lpips[onnx]'`: tf2onnx and onnx;
onnxruntime to run the file).

Example:
>>> export_onnx(LPIPS(net="alex", input_range=(0, 1)), "lpips.onnx")
>>> session = onnxruntime.InferenceSession("lpips.onnx")
>>> session.run(["distance"], {"img0": img0, "img1": img1})[0]     # (N,)
"""

from keras_lpips.errors import InputError
from keras_lpips.files import atomic_write, check_output, output_error

# ONNX opset of the exported graph: onnxruntime 1.14 and later run it.
OPSET = 17
# Inputs and outputs of the ONNX graph: `serving_default`'s.
INPUTS, OUTPUTS = ("img0", "img1"), ("distance",)
# Steps `export_onnx` reports to its `progress` callback (tracing, converting).
STEPS = 2


def converter():
    """The tf2onnx module; `InputError` saying how to install it where it is missing."""
    try:
        import tf2onnx
    except ImportError:
        raise InputError("ONNX export needs tf2onnx: pip install 'keras-lpips[onnx]' (tf2onnx, onnx)") from None
    return tf2onnx


def export_onnx(metric, path, overwrite=False, progress=None, opset=OPSET):
    """Writes `metric` (an `LPIPS`, or an `ExportedMetric` SavedModel) as an ONNX model at `path`
    and returns the path.

    Refuses (`InputError`) a `path` not named .onnx (`keras_lpips.export.check_export_path`), to
    replace an existing file unless `overwrite` (or one that appears while the export runs), to
    write over the SavedModel it converts, and where tf2onnx is not installed (`converter`).
    `progress`, if given, is called with 1 after each of the two steps.
    """
    tf2onnx = converter()
    import tensorflow as tf

    from keras_lpips import keras_compat
    from keras_lpips.export import check_export_path, serving_functions
    from keras_lpips.exported_metric import ExportedMetric
    from keras_lpips.inputs import traced_for_export

    path = check_output(path, (metric.directory,) if isinstance(metric, ExportedMetric) else (), overwrite, kind="file", new_folders=True)
    check_export_path("onnx", path, "path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as export_tflite
    except OSError as error:
        raise output_error(path, error) from None
    image = keras_compat.image_batch_spec()
    if isinstance(metric, ExportedMetric):  # already traced: convert its serving_default signature
        loaded = tf.saved_model.load(str(metric.directory))  # held: it owns the variables
        signature = loaded.signatures["serving_default"]
        distance = tf.function(lambda img0, img1: signature(img0=img0, img1=img1), input_signature=[image, image])
    else:
        _, functions = serving_functions(metric)
        distance = functions["serving_default"]
    if progress:
        progress(1)
    with traced_for_export():
        model, _ = tf2onnx.convert.from_function(distance, input_signature=[image, image], opset=opset)
    atomic_write(path, model.SerializeToString(), as_input_error=True, overwrite=overwrite)  # refuses one that appeared meanwhile
    if progress:
        progress(1)
    return path
