"""`keras-lpips data`: download the BAPPS dataset, make a synthetic stand-in, check a copy."""

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lpips.cli.options import Json, count_progress, progress_bar, shown, transfer_progress
from keras_lpips.reports import dumps

app = typer.Typer(
    help="Get, make and check BAPPS-layout datasets (2AFC triplets and JND pairs with judgments).",
    no_args_is_help=True,
)


class Split(str, Enum):
    twoafc_train = "twoafc_train"
    twoafc_val = "twoafc_val"
    jnd = "jnd"


@app.command()
def download(
    split: Annotated[
        Split, typer.Option("--split", help="Which archive: twoafc_train (5.3 GB), twoafc_val (1.1 GB), jnd (0.2 GB).")
    ],
    dest: Annotated[
        Path, typer.Option("--dest", help="Dataset root: the split lands in DEST/2afc/{train,val} or DEST/jnd/val.")
    ] = Path("dataset"),
    keep_archive: Annotated[bool, typer.Option("--keep-archive", help="Keep the .tar.gz after extracting it.")] = False,
):
    """Download and extract one split of the official BAPPS dataset.

    Resumable. The 2AFC archives are checked by sha256; jnd, which has no published checksum,
    by the size the server reports, and its sha256 is printed so that you can pin it.

      keras-lpips data download --split twoafc_val --dest dataset
      keras-lpips data download --split jnd --dest dataset
    """
    from keras_lpips.data.download import download_split
    from keras_lpips.files import check_output

    check_output(dest, overwrite=True, kind="folder")  # a dataset root, filled split by split
    with progress_bar(1, f"downloading {split.value}", item_show_func=shown) as bar:
        result = download_split(split.value, dest, progress=transfer_progress(bar), keep_archive=keep_archive)
    if result.verified_by == "already present":
        typer.echo(f"{split.value}: already present in {result.folder}; delete it to download again")
        return
    typer.echo(f"{split.value}: extracted to {result.folder} (verified by {result.verified_by})")
    typer.echo(f"sha256 {result.sha256}")
    if result.verified_by == "size":
        typer.echo("no checksum is published for this archive: pin the sha256 above to detect changes")


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the BAPPS layout into.")],
    train: Annotated[int, typer.Option("--train", min=0, help="Number of training triplets (2afc/train/traditional).")],
    val: Annotated[int, typer.Option("--val", min=0, help="Number of validation triplets (2afc/val/traditional).")],
    jnd: Annotated[Optional[int], typer.Option("--jnd", min=0, help="Number of JND pairs (default: as many as --val).")] = None,
    images: Annotated[
        Optional[Path], typer.Option("--images", help="Take random 64x64 crops of the images in this folder instead of procedural patches.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed: the same seed gives byte-identical files.")] = 0,
):
    """Write a synthetic BAPPS-layout dataset with simulated judgments.

    The judgments are proxies for exercising the training and evaluation code, not human data:
    never report results on this set. Same arguments and seed: byte-identical files.

      keras-lpips data synth --out synth --train 2000 --val 500
      keras-lpips data synth --out synth --train 500 --val 100 --images photos/ --seed 1
    """
    from keras_lpips.data.synth import synthesize
    from keras_lpips.files import check_output

    check_output(out, [images], overwrite=True, kind="folder")  # a folder it fills (existing subsets refused), never --images
    with progress_bar(1, "synthesizing") as bar:
        synthesize(out, train, val, images=images, seed=seed, n_jnd=jnd, progress=count_progress(bar))
    n_jnd = val if jnd is None else jnd
    typer.echo(f"wrote {train} train and {val} val triplets and {n_jnd} JND pairs to {out} (simulated judgments)")


@app.command()
def verify(
    root: Annotated[Path, typer.Argument(help="Dataset root (holding 2afc/ and/or jnd/), or the folder holding dataset/.")],
    as_json: Json = False,
):
    """Check a BAPPS-layout folder before training on it.

    Checks the folders and counts per subset, that every PNG is readable and every judgment a
    number in [0, 1]. Prints each problem, and exits with status 1 if there is any.

      keras-lpips data verify dataset
    """
    from keras_lpips.data.bapps import resolve_root
    from keras_lpips.data.verify import verify_dataset
    from keras_lpips.errors import DataError

    resolve_root(root)  # no dataset there at all: a usage error, one line
    with progress_bar(1, "verifying") as bar:
        report = verify_dataset(root, progress=count_progress(bar))
    if as_json:
        root_found = str(report.root or root)
        typer.echo(dumps({"root": root_found, "counts": dict(report.counts), "problems": [str(p) for p in report]}))
    else:
        for label, count in report.counts.items():
            typer.echo(f"{label}: {count}")
        for problem in report:
            typer.echo(problem)
    if report:
        raise DataError(f"{len(report)} problem{'s' if len(report) != 1 else ''} found in {report.root or root}")
    if not as_json:
        typer.echo(f"{report.root}: OK")
