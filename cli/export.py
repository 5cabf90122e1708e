"""`keras-lpips export`: the metric as a TF Serving SavedModel, a TFLite file or an ONNX model."""

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from keras_lpips.cli import options
from keras_lpips.resolve import MetricSpec

HELP = """Export the metric for serving: a TF Serving SavedModel, a TFLite file or ONNX.

All read float32 NHWC RGB images in [0, 1], any batch and size. SavedModel and
TFLite have four signatures: serving_default (img0, img1 -> distance), rank
(ref, p0, p1 -> d0, d1, p1_preferred), spatial (img0, img1 -> map) and embed
(images -> embedding); a SavedModel also serving_bytes and rank_bytes, which
take encoded PNG/JPEG files (tf.string, base64 over REST). ONNX (the onnx
extra: tf2onnx) is serving_default alone.

  keras-lpips export --format savedmodel --out models/lpips
  keras-lpips export --format savedmodel --out models/lpips --net vgg --model-version 2
  keras-lpips export --format savedmodel --out models/lpips --max-pixels 4194304
  keras-lpips export --format savedmodel --out models/vgg-v0.0 --preset vgg-v0.0
  keras-lpips export --format savedmodel --out models/mine --model runs/alex-lin
  keras-lpips export --format tflite --out lpips.tflite --quantize fp16
  keras-lpips export --format tflite --out lpips-int8.tflite --quantize dynamic
  keras-lpips export --format tflite --out mine.tflite --model models/mine
  keras-lpips export --format onnx --out lpips.onnx
"""

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("none", "fp16", "dynamic")  # keras_lpips.export.QUANTIZATIONS, without importing TensorFlow


@options.metric_options
def export(
    fmt: Annotated[Literal[FORMATS], typer.Option("--format", help="savedmodel (TF Serving), tflite or onnx.")],
    out: Annotated[Path, typer.Option("--out", help="SavedModel: the model's base directory; tflite, onnx: the file.")],
    quantize: Annotated[Literal[QUANTIZATIONS], typer.Option("--quantize", help="tflite: none, fp16 or dynamic (int8 weights).")] = "none",
    model_version: Annotated[int, typer.Option("--model-version", min=0, help="savedmodel: the version directory.")] = 1,
    max_pixels: Annotated[
        Optional[int],
        typer.Option("--max-pixels", min=1, help="savedmodel: the most pixels one input of a bytes request may hold "
                     "(default: 179 million, as score reads; bound it to what the server's memory can score)."),
    ] = None,
    overwrite: options.Overwrite = False,
    *,
    metric: MetricSpec,
):
    from keras_lpips import LPIPS
    from keras_lpips import export_onnx as onnx
    from keras_lpips.errors import InputError
    from keras_lpips.files import check_output
    from keras_lpips.export import BYTES_SIGNATURES, SIGNATURES, STEPS, export_savedmodel, export_tflite

    if fmt != "tflite" and quantize != "none":
        raise InputError("--quantize applies to --format tflite only")
    if fmt != "savedmodel" and max_pixels is not None:
        raise InputError("--max-pixels applies to --format savedmodel only (its bytes signatures)")
    if fmt == "onnx":
        onnx.converter()  # installed? (before any weights are fetched)
    if fmt == "savedmodel":  # before any work
        check_output(out, metric.input_paths(), overwrite=True, kind="folder")
        check_output(out / str(model_version), metric.input_paths(), overwrite, kind="folder")
    else:
        check_output(out, metric.input_paths(), overwrite, kind="file", new_folders=True)  # as export_tflite/onnx
    lpips = options.resolve(metric)
    if fmt == "savedmodel" and not isinstance(lpips, LPIPS):
        raise InputError(f"--model {metric.model} is already a SavedModel; copy its version folder, or pass a fit run or .keras file")
    what = f"{lpips.net} LPIPS v{lpips.version} ({lpips.distance})"
    with options.progress_bar(onnx.STEPS if fmt == "onnx" else STEPS[fmt], f"exporting {fmt}") as bar:
        if fmt == "savedmodel":
            path = export_savedmodel(lpips, out, model_version, overwrite, bar.update, max_pixels)
        elif fmt == "tflite":
            path = export_tflite(lpips, out, quantize=quantize, overwrite=overwrite, progress=bar.update)
        else:
            path = onnx.export_onnx(lpips, out, overwrite=overwrite, progress=bar.update)
    size = f"{path.stat().st_size / 1e6:.1f} MB" if fmt != "savedmodel" else ""
    if fmt == "savedmodel":
        typer.echo(f"{what} SavedModel written to {path}")
        typer.echo(f"signatures: {', '.join(SIGNATURES)}; images float32 (N, H, W, 3) in [0, 1]")
        typer.echo(f"signatures: {', '.join(BYTES_SIGNATURES)}; images as encoded PNG/JPEG files, tf.string (N,)")
    elif fmt == "tflite":
        typer.echo(f"{what} TFLite model (quantize={quantize}, {size}) written to {path}")
        typer.echo(f"signatures: {', '.join(SIGNATURES)}; images float32 (N, H, W, 3) in [0, 1]")
    else:
        typer.echo(f"{what} ONNX model (opset {onnx.OPSET}, {size}) written to {path}")
        typer.echo(f"inputs: {', '.join(onnx.INPUTS)}, float32 (N, H, W, 3) in [0, 1]; output: distance (N,)")
