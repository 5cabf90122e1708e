"""`keras-lpips pairs` and `keras-lpips matrix`: distances over folders of images, to CSV."""

import csv
import io
from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lpips.cli import options

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
PAIRS_HELP = """Distance for each file name present in both folders.

  keras-lpips pairs originals/ restored/ --out distances.csv
"""
MATRIX_HELP = """Distances between all pairs of images in one folder (each image's features computed once).

  keras-lpips matrix samples/ --out matrix.csv --net vgg
"""

Out = Annotated[Optional[Path], typer.Option("--out", help="Write CSV here (default: print it).")]
Resize = Annotated[bool, typer.Option("--resize", help="Resize images to the first one's size.")]


def _images_in(folder):
    from keras_lpips.errors import InputError

    if not folder.is_dir():
        raise InputError(f"Not a folder: {folder}")
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def _write_csv(rows, out):
    from keras_lpips.weights.cache import atomic_write_bytes
    from keras_lpips.errors import InputError

    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    if out is None:
        typer.echo(text.getvalue(), nl=False)
        return
    if not out.parent.is_dir():
        raise InputError(f"Output folder does not exist: {out.parent}")
    try:
        atomic_write_bytes(out, text.getvalue().encode())
    except OSError as error:
        raise InputError(f"Cannot write {out}: {error.strerror or error}") from None
    typer.echo(f"wrote {len(rows) - 1} rows to {out}", err=True)


def pairs(
    dir0: Annotated[Path, typer.Argument(help="First folder.")],
    dir1: Annotated[Path, typer.Argument(help="Second folder.")],
    out: Out = None,
    net: options.Net = "alex",
    version: options.Version = "0.1",
    distance: options.Distance = "lpips",
    layers: options.Layers = None,
    lin_weights: options.LinWeights = "v0.1",
    backbone_weights: options.BackboneWeights = "imagenet",
    model: options.Model = None,
    resize: Resize = False,
):
    from keras_lpips.cli.metric_options import build_metric, read_same_size
    from keras_lpips.errors import InputError
    from keras_lpips.pairwise import paired_distances

    first, second = _images_in(dir0), _images_in(dir1)
    names = sorted(set(first) & set(second))
    if not names:
        raise InputError(f"No image file name is present in both {dir0} and {dir1}")
    metric = build_metric(net, version, distance, layers, lin_weights, backbone_weights, model)
    images0, images1 = [], []
    for name in names:
        a, b = read_same_size([first[name], second[name]], resize)
        images0.append(a)
        images1.append(b)
    with options.progress_bar(len(names), "scoring pairs") as bar:
        distances = paired_distances(metric, images0, images1, progress=bar.update)
    _write_csv([["name", "distance"]] + [[n, f"{d:.6f}"] for n, d in zip(names, distances)], out)


def matrix(
    folder: Annotated[Path, typer.Argument(help="Folder of same-size images.")],
    out: Out = None,
    net: options.Net = "alex",
    version: options.Version = "0.1",
    distance: options.Distance = "lpips",
    layers: options.Layers = None,
    lin_weights: options.LinWeights = "v0.1",
    backbone_weights: options.BackboneWeights = "imagenet",
    model: options.Model = None,
    resize: Resize = False,
):
    from keras_lpips.cli.metric_options import build_metric, read_same_size
    from keras_lpips.errors import InputError
    from keras_lpips.pairwise import distance_matrix

    files = _images_in(folder)
    if len(files) < 2:
        raise InputError(f"Need at least two images in {folder}; found {len(files)}")
    names = list(files)
    images = read_same_size([files[n] for n in names], resize)
    metric = build_metric(net, version, distance, layers, lin_weights, backbone_weights, model)
    n = len(names)
    with options.progress_bar(n * (n - 1) // 2, "scoring all pairs") as bar:
        result = distance_matrix(metric, images, progress=bar.update)
    _write_csv([[""] + names] + [[name] + [f"{d:.6f}" for d in row] for name, row in zip(names, result)], out)
