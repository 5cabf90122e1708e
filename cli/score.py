"""`keras-lpips score`: the distance between two images, or which of two is closer to a reference."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lpips.cli import options
from keras_lpips.reports import dumps
from keras_lpips.resolve import MetricSpec

HELP = """Score images with LPIPS.

Two images: their distance. Three: d(REF, A), d(REF, B) and which is closer to REF.

  keras-lpips score examples/ref.png examples/p0.png examples/p1.png
  keras-lpips score a.png b.png --net vgg --json
  keras-lpips score a.png b.png --preset vgg-v0.0
  keras-lpips score ref.png a.png b.png --map map.png
"""


@options.metric_options
def score(
    ref: Annotated[Path, typer.Argument(help="Reference image.")],
    a: Annotated[Path, typer.Argument(help="Image compared with REF.")],
    b: Annotated[Optional[Path], typer.Argument(help="Second image compared with REF (2AFC).")] = None,
    *,
    metric: MetricSpec,
    map_png: Annotated[Optional[Path], typer.Option("--map", help="Write the spatial distance map(s) beside the images as PNG.")] = None,
    resize: Annotated[bool, typer.Option("--resize", help="Resize the other images to REF's size.")] = False,
    frame: options.Frame = None,
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
):
    import numpy as np

    from keras_lpips.errors import InputError
    from keras_lpips.files import check_output
    from keras_lpips.images import check_same_size, read_images, stored_size

    paths = [ref, a] + ([b] if b is not None else [])
    if map_png is not None:  # before any work: never one of the images, nor an existing file unless --overwrite
        check_output(map_png, [*paths, *metric.input_paths()], overwrite, kind="file")
        if map_png.suffix.lower() != ".png":
            raise InputError(f"--map writes a PNG: name it .png. Received: --map {map_png}")
    # The sizes from the files' headers: decoding a huge image whole takes long and much memory
    # itself, and the metric that scores them (LiteRT, or Keras checked to fit in memory) depends on them.
    sizes = [stored_size(path, frame) for path in paths]
    if not resize:  # before the metric is loaded (a first LiteRT conversion, a download)
        check_same_size(paths, sizes)
    lpips = options.resolve(metric, sizes)
    images = read_images(paths, resize=resize, frame=frame)
    refs = np.stack([images[0]] * (len(images) - 1))
    others = np.stack(images[1:])
    distances = [float(d) for d in np.asarray(lpips([refs, others]))]

    result = {"ref": str(ref), "net": lpips.net, "version": lpips.version, "distance": lpips.distance}
    result.update(metric.weight_sources())
    result["pairs"] = [{"image": str(p), "distance": d} for p, d in zip(paths[1:], distances)]
    if b is not None:
        result["closer"] = str(a) if distances[0] < distances[1] else str(b) if distances[1] < distances[0] else None
    if map_png is not None:
        _write_map(lpips, images, refs, others, map_png, overwrite)
        result["map"] = str(map_png)
    if as_json:
        typer.echo(dumps(result))
        return
    for pair in result["pairs"]:
        typer.echo(f"d({options.one_line(ref)}, {options.one_line(pair['image'])}) = {pair['distance']:.4f}")
    if b is not None:
        closer = f"{options.one_line(result['closer'])} is closer to {options.one_line(ref)}"
        typer.echo(closer if result["closer"] else "both are equally close")
    if map_png is not None:
        typer.echo(f"distance map written to {options.one_line(map_png)}")


def _write_map(lpips, images, refs, others, path, overwrite):
    """REF, then each other image beside its distance map, as one PNG (`distance_map_picture`)."""
    import numpy as np

    from keras_lpips.pictures import distance_map_picture, save_png

    maps = np.asarray(lpips.spatial_map([refs, others]))
    save_png(distance_map_picture(images, maps), path, overwrite=overwrite)
