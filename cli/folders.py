"""`keras-lpips pairs` and `keras-lpips matrix`: distances over folders of images, to CSV."""

import csv
import io
import itertools
from pathlib import Path
from typing import Annotated, Optional

import typer
from keras_lpips.cli import options

from keras_lpips import disk_space, files
from keras_lpips.reports import dumps
from keras_lpips.resolve import MetricSpec

PAIRS_HELP = """Distance for each file name present in both folders.

  keras-lpips pairs originals/ restored/ --out distances.csv
"""
MATRIX_HELP = """Distances between all pairs of images in one folder, or between two folders' images.

Each image is embedded once; the distances are matrix products (keras_lpips.pairwise).
With --against, rows are FOLDER's images and columns DIR2's.

  keras-lpips matrix samples/ --out matrix.csv --net vgg
  keras-lpips matrix samples/ --against train/ --out cross.csv
"""

Out = Annotated[
    Optional[Path],
    typer.Option("--out", help="Write CSV here (default: print it, or the JSON with --json); an existing file only with --overwrite."),
]
Resize = Annotated[bool, typer.Option("--resize", help="Resize images to the first one's size.")]


def _images_in(folder):
    """`{file name: path}` of the images in `folder` (`files.image_files`, which refuses a non-folder)."""
    return {p.name: p for p in files.image_files(folder)}


def _write_csv(rows, out, overwrite):
    """Writes `rows` (a header, then data rows; any iterable: one row is formatted at a time, so
    a large matrix never has a second copy as text) as CSV to stdout, or to `out` whole or not
    at all (`files.atomic_path`: a full disk is one `DiskFullError`, no temporary left)."""
    if out is None:
        for line in _csv_lines(rows):
            typer.echo(line, nl=False)
        return
    count = -1
    with files.atomic_path(out, as_input_error=True, overwrite=overwrite) as partial:
        with open(partial, "x", encoding="utf-8", newline="") as f:
            for line in _csv_lines(rows):
                f.write(line)
                count += 1
    typer.echo(f"wrote {count} rows to {options.one_line(out)}", err=True)


def _csv_lines(rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for row in rows:
        writer.writerow(row)
        yield text.getvalue()
        text.seek(0)
        text.truncate()


def _csv_bytes(names, columns):
    """About the size of the CSV `matrix` writes: a header of the column names, then a row per
    name of distances written as 0.123456 (9 bytes with the comma)."""
    header = sum(len(c.encode()) + 1 for c in columns) + 1
    return header + sum(len(n.encode()) + 1 + 9 * len(columns) for n in names)


@options.metric_options
def pairs(
    dir0: Annotated[Path, typer.Argument(help="First folder.")],
    dir1: Annotated[Path, typer.Argument(help="Second folder.")],
    out: Out = None,
    *,
    metric: MetricSpec,
    resize: Resize = False,
    frame: options.Frame = None,
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
):
    from keras_lpips.errors import InputError
    from keras_lpips.images import read_images

    first, second = _images_in(dir0), _images_in(dir1)
    names = sorted(set(first) & set(second))
    if not names:
        raise InputError(f"No image file name is present in both {dir0} and {dir1}")
    if out is not None:
        files.check_output(out, [dir0, dir1, *first.values(), *second.values(), *metric.input_paths()], overwrite, kind="file")
    from keras_lpips.pairwise import paired_distances  # Keras: after the checks, which need none

    lpips = options.resolve(metric)
    images0, images1 = [], []
    for name in names:
        a, b = read_images([first[name], second[name]], resize=resize, frame=frame)
        images0.append(a)
        images1.append(b)
    with options.progress_bar(len(names), "scoring pairs") as bar:
        distances = paired_distances(lpips, images0, images1, progress=bar.update)
    if out is not None or not as_json:
        _write_csv([["name", "distance"]] + [[n, f"{d:.6f}"] for n, d in zip(names, distances)], out, overwrite)
    if as_json:
        typer.echo(dumps({"pairs": [{"name": n, "distance": float(d)} for n, d in zip(names, distances)]}))


@options.metric_options
def matrix(
    folder: Annotated[Path, typer.Argument(help="Folder of same-size images.")],
    out: Out = None,
    *,
    metric: MetricSpec,
    against: Annotated[Optional[Path], typer.Option("--against", help="A second folder: distances between the two folders' images.")] = None,
    resize: Resize = False,
    frame: options.Frame = None,
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
):
    from keras_lpips.errors import InputError
    from keras_lpips.files import IMAGE_SUFFIXES
    from keras_lpips.images import read_images

    found = _images_in(folder)
    other = _images_in(against) if against is not None else {}
    if against is None and len(found) < 2:
        raise InputError(f"Need at least two images in {folder}; found {len(found)} (files named {', '.join(IMAGE_SUFFIXES)})")
    if against is not None and not (found and other):
        raise InputError(f"Need images in both {folder} and {against}; found {len(found)} and {len(other)}")
    if out is not None:
        files.check_output(out, [folder, against, *found.values(), *other.values(), *metric.input_paths()], overwrite, kind="file")
    from keras_lpips.pairwise import check_matrix_memory, cross_distance_matrix, distance_matrix  # Keras: after the checks

    names, columns = list(found), list(other) or list(found)
    check_matrix_memory(len(names), len(columns))  # before reading any image: the matrix, then its CSV
    if out is not None:
        disk_space.check_disk_space(out, _csv_bytes(names, columns), f"A {len(names):,} x {len(columns):,} distance matrix as CSV")
    images = read_images([found[n] for n in names] + [other[n] for n in other], resize=resize, frame=frame)
    lpips = options.resolve(metric)
    n = len(names)
    pairs = n * len(other) if other else n * (n - 1) // 2
    with options.progress_bar(pairs, "scoring all pairs") as bar:
        if other:
            result = cross_distance_matrix(lpips, images[:n], images[n:], progress=bar.update)
        else:
            result = distance_matrix(lpips, images, progress=bar.update)
    if out is not None or not as_json:
        rows = ([name] + [f"{d:.6f}" for d in row] for name, row in zip(names, result))  # formatted one at a time
        _write_csv(itertools.chain([[""] + columns], rows), out, overwrite)
    if as_json:
        typer.echo(dumps({"rows": names, "columns": columns, "distances": [[float(d) for d in row] for row in result]}))
