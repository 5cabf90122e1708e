"""`keras-lpips beam embed` and `beam pairs`: an exported SavedModel over large image sets, on Apache Beam."""

import sys
from typing import Annotated

import typer

from keras_lpips.cli.options import Frame, Overwrite

app = typer.Typer(
    help="Embed a folder or score a CSV of pairs with a SavedModel on Apache Beam (DirectRunner, Dataflow, Flink, Spark).",
    no_args_is_help=True,
)
# What follows `--` is Beam's pipeline options (--runner DataflowRunner --project ...); Click
# collects it in ctx.args, with anything else it did not know (refused: `_pipeline_args`).
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
    frame: Frame = None,
    overwrite: Overwrite = False,
):
    """Embed images with the SavedModel's embed signature, to TFRecord shards.

    Each record holds name, embedding, height and width; squared distances between embeddings
    of one image size are LPIPS. Arguments after -- are Beam pipeline options.

      keras-lpips beam embed photos/ models/lpips --out out/photos
      keras-lpips beam embed 'gs://b/photos/*.jpg' gs://b/models/lpips/1 --out gs://b/out/photos -- --runner DataflowRunner --project P --region R --temp_location gs://b/tmp
    """
    pipeline_args = _pipeline_args(ctx)
    started = _started(pipeline_args)
    counts = beam_pipelines().embed_images(source, saved_model, out, pipeline_args, batch_size, overwrite, started, frame)
    _report(counts, "images embedded", "images")


@app.command(context_settings=PIPELINE_ARGS)
def pairs(
    ctx: typer.Context,
    pairs_csv: Annotated[str, typer.Argument(help="CSV with the header img0,img1; paths relative to its folder, absolute, or URLs.")],
    saved_model: SavedModel,
    out: Out,
    batch_size: BatchSize = 32,
    frame: Frame = None,
    overwrite: Overwrite = False,
):
    """Score each row of a CSV of image pairs with the SavedModel, to CSV shards img0,img1,distance.

    Arguments after -- are Beam pipeline options.

      keras-lpips beam pairs pairs.csv models/lpips --out out/distances
    """
    pipeline_args = _pipeline_args(ctx)
    started = _started(pipeline_args)
    counts = beam_pipelines().score_pairs(pairs_csv, saved_model, out, pipeline_args, batch_size, overwrite, started, frame)
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
        raise InputError(
            "The Beam pipelines need Apache Beam: pip install 'keras-lpips[beam]' (in an environment of its own: "
            "it pins Pillow < 13 and protobuf < 7)"
        ) from None
    finally:
        logging.disable(logging.NOTSET)
    return module


def _pipeline_args(ctx):
    """The arguments after `--`; anything else Click did not know (a mistyped option, an extra
    argument) is a usage error, not an option passed to Beam."""
    from keras_lpips.errors import InputError

    after = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    stray = ctx.args[: len(ctx.args) - len(after)] if ctx.args[len(ctx.args) - len(after) :] == after else ctx.args
    if stray:
        raise InputError(f"Unknown option or extra argument {stray[0]!r}; Beam's pipeline options go after --")
    own = [arg for arg in after if arg.split("=", 1)[0] in ("--out", "--batch-size", "--frame", "--overwrite")]
    if own:
        raise InputError(f"{own[0]} goes before --, which starts Beam's pipeline options")
    return list(after)


def _started(pipeline_args):
    """The `on_start` callback: says which runner the checked job starts on."""
    runner = "DirectRunner"
    for i, arg in enumerate(pipeline_args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(pipeline_args):
            runner = pipeline_args[i + 1]
    return lambda: typer.echo(f"running the Beam pipeline ({runner})", err=True)


def _report(counts, done, what):
    """The counts; a failure line that quotes the first reason (the program's one place that
    spells errors, `app.main`, writes its arguments as flags: "choose one with --frame K")."""
    from keras_lpips.errors import DataError

    typer.echo(f"{counts.written} {done}: {counts.output}")
    if counts.failed:
        first = ", e.g. " + counts.first_error.replace("\t", ": ", 1) if counts.first_error else ""
        raise DataError(f"{counts.failed} {what} could not be used; the reasons are in {counts.errors}{first}")
