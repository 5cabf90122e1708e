"""`keras-lpips beam embed` and `beam pairs`: an exported SavedModel over large image sets, on Apache Beam."""

from pathlib import Path
from typing import Annotated

import typer

from keras_lpips.cli.options import Overwrite

app = typer.Typer(
    help="Embed a folder or score a CSV of pairs with a SavedModel on Apache Beam (DirectRunner, Dataflow, Flink, Spark).",
    no_args_is_help=True,
)
# Arguments after `--` are Beam's pipeline options: --runner DataflowRunner --project ... .
PIPELINE_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}

SavedModel = Annotated[str, typer.Argument(help="The SavedModel from `keras-lpips export --format savedmodel` (base or version folder, or a URL).")]
Out = Annotated[str, typer.Option("--out", help="Output prefix: shards OUT-00000-of-0000N.*, failures in OUT-errors-*.txt.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Images per signature call on a worker.")]


@app.command(context_settings=PIPELINE_ARGS)
def embed(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A folder of images, or a file pattern Beam matches (gs://bucket/images/*.png).")],
    saved_model: SavedModel,
    out: Out,
    batch_size: BatchSize = 32,
    overwrite: Overwrite = False,
):
    """Embed images with the SavedModel's embed signature, to TFRecord shards.

    Each record holds name, embedding, height and width; squared distances between embeddings
    of one image size are LPIPS. Arguments after -- are Beam pipeline options.

      keras-lpips beam embed photos/ models/lpips --out out/photos
      keras-lpips beam embed 'gs://b/photos/*.jpg' gs://b/models/lpips/1 --out gs://b/out/photos -- --runner DataflowRunner --project P --region R --temp_location gs://b/tmp
    """
    _check_out(out, overwrite)
    counts = _run(beam_pipelines().embed_images, source, saved_model, out, ctx.args, batch_size)
    _report(counts, "images embedded", "images")


@app.command(context_settings=PIPELINE_ARGS)
def pairs(
    ctx: typer.Context,
    pairs_csv: Annotated[str, typer.Argument(help="CSV with the header img0,img1; paths relative to its folder, absolute, or URLs.")],
    saved_model: SavedModel,
    out: Out,
    batch_size: BatchSize = 32,
    overwrite: Overwrite = False,
):
    """Score each row of a CSV of image pairs with the SavedModel, to CSV shards img0,img1,distance.

    Arguments after -- are Beam pipeline options.

      keras-lpips beam pairs pairs.csv models/lpips --out out/distances
    """
    _check_out(out, overwrite)
    counts = _run(beam_pipelines().score_pairs, pairs_csv, saved_model, out, ctx.args, batch_size)
    _report(counts, "pairs scored", "pairs")


def beam_pipelines():
    """keras_lpips.beam_pipelines, imported without the warnings Beam logs about cloud clients
    it lacks; `InputError` saying how to install Apache Beam where it is missing."""
    import logging

    from keras_lpips.errors import InputError

    logging.disable(logging.WARNING)
    try:
        from keras_lpips import beam_pipelines as module
    except ModuleNotFoundError as error:
        if error.name != "apache_beam" and not (error.name or "").startswith("apache_beam."):
            raise
        raise InputError("The Beam pipelines need Apache Beam: pip install 'keras-lpips[beam]'") from None
    finally:
        logging.disable(logging.NOTSET)
    return module


def _check_out(out, overwrite):
    """A local OUT needs an existing folder, and no earlier output under its prefix unless
    --overwrite, which deletes it."""
    from keras_lpips.errors import InputError

    if "://" in out:
        return
    prefix = Path(out)
    if not prefix.parent.is_dir():
        raise InputError(f"Output folder does not exist: {prefix.parent}")
    earlier = sorted(prefix.parent.glob(f"{prefix.name}-*-of-*"))
    if earlier and not overwrite:
        raise InputError(f"{earlier[0]} exists (output of an earlier run); pass --overwrite to replace it, or choose another --out")
    for path in earlier:  # shards of another count would be read with the new ones
        path.unlink()


def _run(pipeline, source, saved_model, out, pipeline_args, batch_size):
    from keras_lpips.errors import InputError

    unknown = [arg for arg in pipeline_args if arg.startswith("--") and arg.split("=", 1)[0] in ("--out", "--batch-size", "--overwrite")]
    if unknown:
        raise InputError(f"{unknown[0]} goes before --, which starts Beam's pipeline options")
    def started():
        typer.echo(f"running the Beam pipeline ({_runner(pipeline_args)})", err=True)

    return pipeline(source, saved_model, out, pipeline_args, batch_size, on_start=started)


def _runner(pipeline_args):
    for i, arg in enumerate(pipeline_args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(pipeline_args):
            return pipeline_args[i + 1]
    return "DirectRunner"


def _report(counts, done, what):
    from keras_lpips.errors import DataError

    typer.echo(f"{counts.written} {done}: {counts.output}")
    if counts.failed:
        raise DataError(f"{counts.failed} {what} could not be used; the reasons are in {counts.errors}")
