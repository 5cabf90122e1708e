"""`keras-lpips export`: the metric as a TF Serving SavedModel, a TFLite file or an ONNX model."""

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from keras_lpips.cli import options
from keras_lpips.export import FORMATS, QUANTIZATIONS  # no TensorFlow: the export itself imports it
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


@options.metric_options
def export(
    fmt: Annotated[Literal[FORMATS], typer.Option("--format", help="savedmodel (TF Serving), tflite or onnx.")],
    out: Annotated[
        Path, typer.Option("--out", help="SavedModel: the model's base directory (no .tflite/.onnx suffix); tflite, onnx: the .tflite/.onnx file.")
    ],
    quantize: Annotated[Literal[QUANTIZATIONS], typer.Option("--quantize", help="tflite: none, fp16 or dynamic (int8 weights).")] = "none",
    model_version: Annotated[
        Optional[int], typer.Option("--model-version", min=0, help="savedmodel: the version directory (default: 1).")
    ] = None,
    max_pixels: Annotated[
        Optional[int],
        typer.Option("--max-pixels", min=1, help="savedmodel: the most pixels one input of a bytes request may hold "
                     "(default: 179 million, as score reads; bound it to what the server's memory can score)."),
    ] = None,
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
    *,
    metric: MetricSpec,
):
    from keras_lpips.export import check_export_options, check_export_path, check_export_source
    from keras_lpips.files import check_output

    model_version = check_export_options(fmt, quantize, model_version, max_pixels)  # before any work
    if fmt == "savedmodel":  # then an input is never an output, whatever the output's name
        check_output(out, metric.input_paths(), overwrite=True, kind="folder")
    else:
        check_output(out, metric.input_paths(), overwrite, kind="file", new_folders=True)  # as export_tflite/onnx
    check_export_path(fmt, out)
    check_export_source(fmt, metric.model)
    if fmt == "savedmodel":
        check_output(out / str(model_version), metric.input_paths(), overwrite, kind="folder")
    from keras_lpips import export_onnx as onnx  # TensorFlow (tf2onnx, the metric): after the checks

    if fmt == "onnx":
        onnx.converter()  # installed? (before any weights are fetched)
    lpips = options.resolve(metric)
    path = _written(fmt, lpips, out, quantize, model_version, overwrite, max_pixels)
    _report(fmt, lpips, metric, path, quantize, model_version, as_json)


def _written(fmt, lpips, out, quantize, model_version, overwrite, max_pixels):
    """Exports `lpips` as `fmt` to `out`, with a progress bar; returns the path written."""
    from keras_lpips import export_onnx as onnx
    from keras_lpips.export import STEPS, export_savedmodel, export_tflite

    with options.progress_bar(onnx.STEPS if fmt == "onnx" else STEPS[fmt], f"exporting {fmt}") as bar:
        if fmt == "savedmodel":
            return export_savedmodel(lpips, out, model_version, overwrite, bar.update, max_pixels)
        if fmt == "tflite":
            return export_tflite(lpips, out, quantize=quantize, overwrite=overwrite, progress=bar.update)
        return onnx.export_onnx(lpips, out, overwrite=overwrite, progress=bar.update)


def _size(path):
    """Bytes at `path`: a file's, or those of the files under a folder."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _report(fmt, lpips, metric, path, quantize, model_version, as_json):
    """What was written: lines of text, or with `as_json` one JSON object (format, path, bytes,
    the metric `lpips`, the weight sources its MetricSpec `metric` names, the signatures or ONNX
    inputs; model_version, quantize or opset by format)."""
    from keras_lpips import export_onnx as onnx
    from keras_lpips.export import BYTES_SIGNATURES, SIGNATURES
    from keras_lpips.reports import dumps

    size = _size(path)
    if as_json:
        report = {"format": fmt, "path": str(path), "bytes": size, "net": lpips.net, "version": lpips.version, "distance": lpips.distance}
        report.update(metric.weight_sources())
        extra = {
            "savedmodel": {"model_version": model_version, "signatures": [*SIGNATURES, *BYTES_SIGNATURES]},
            "tflite": {"quantize": quantize, "signatures": list(SIGNATURES)},
            "onnx": {"opset": onnx.OPSET, "inputs": list(onnx.INPUTS)},
        }[fmt]
        typer.echo(dumps({**report, **extra}))
        return
    what = f"{lpips.net} LPIPS v{lpips.version} ({lpips.distance})"
    if fmt == "savedmodel":
        typer.echo(f"{what} SavedModel written to {path}")
        typer.echo(f"signatures: {', '.join(SIGNATURES)}; images float32 (N, H, W, 3) in [0, 1]")
        typer.echo(f"signatures: {', '.join(BYTES_SIGNATURES)}; images as encoded PNG/JPEG files, tf.string (N,)")
    elif fmt == "tflite":
        typer.echo(f"{what} TFLite model (quantize={quantize}, {size / 1e6:.1f} MB) written to {path}")
        typer.echo(f"signatures: {', '.join(SIGNATURES)}; images float32 (N, H, W, 3) in [0, 1]")
    else:
        typer.echo(f"{what} ONNX model (opset {onnx.OPSET}, {size / 1e6:.1f} MB) written to {path}")
        typer.echo(f"inputs: {', '.join(onnx.INPUTS)}, float32 (N, H, W, 3) in [0, 1]; output: distance (N,)")
