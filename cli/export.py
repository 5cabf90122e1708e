"""`keras-lpips export`: the metric as a TF Serving SavedModel or a TFLite file."""

from pathlib import Path
from typing import Annotated

import typer

from keras_lpips.cli import options
from keras_lpips.resolve import MetricSpec

HELP = """Export the metric for serving: a TF Serving SavedModel or a TFLite file.

Both read float32 NHWC RGB images in [0, 1], any batch and size, through
four signatures: serving_default (img0, img1 -> distance), rank (ref, p0,
p1 -> d0, d1, p1_preferred), spatial (img0, img1 -> map) and embed (images ->
embedding).

  keras-lpips export --format savedmodel --out models/lpips
  keras-lpips export --format savedmodel --out models/lpips --net vgg --model-version 2
  keras-lpips export --format savedmodel --out models/vgg-v0.0 --preset vgg-v0.0
  keras-lpips export --format savedmodel --out models/mine --model runs/alex-lin
  keras-lpips export --format tflite --out lpips.tflite --quantize fp16
  keras-lpips export --format tflite --out lpips-int8.tflite --quantize dynamic
  keras-lpips export --format tflite --out mine.tflite --model models/mine
"""

FORMATS = ("savedmodel", "tflite")


@options.metric_options
def export(
    fmt: Annotated[str, typer.Option("--format", help="savedmodel (TF Serving) or tflite.")],
    out: Annotated[Path, typer.Option("--out", help="SavedModel: the model's base directory; tflite: the file.")],
    quantize: Annotated[str, typer.Option("--quantize", help="tflite: none, fp16 or dynamic (int8 weights).")] = "none",
    model_version: Annotated[int, typer.Option("--model-version", help="savedmodel: the version directory.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing version or file.")] = False,
    *,
    metric: MetricSpec,
):
    from keras_lpips import LPIPS
    from keras_lpips.errors import InputError
    from keras_lpips.export import QUANTIZATIONS, SIGNATURES, STEPS, export_savedmodel, export_tflite

    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}. Received: {fmt!r}")
    if quantize not in QUANTIZATIONS:
        raise InputError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}. Received: {quantize!r}")
    if fmt == "savedmodel" and quantize != "none":
        raise InputError("--quantize applies to --format tflite only")
    lpips = options.resolve(metric)
    if fmt == "savedmodel" and not isinstance(lpips, LPIPS):
        raise InputError(f"--model {metric.model} is already a SavedModel; copy its version folder, or pass a fit run or .keras file")
    what = f"{lpips.net} LPIPS v{lpips.version} ({lpips.distance})"
    with options.progress_bar(STEPS[fmt], f"exporting {fmt}") as bar:
        if fmt == "savedmodel":
            path = export_savedmodel(lpips, out, version=model_version, overwrite=overwrite, progress=bar.update)
        else:
            path = export_tflite(lpips, out, quantize=quantize, overwrite=overwrite, progress=bar.update)
    if fmt == "savedmodel":
        typer.echo(f"{what} SavedModel written to {path}")
    else:
        size = path.stat().st_size / 1e6
        typer.echo(f"{what} TFLite model (quantize={quantize}, {size:.1f} MB) written to {path}")
    typer.echo(f"signatures: {', '.join(SIGNATURES)}; images float32 (N, H, W, 3) in [0, 1]")
