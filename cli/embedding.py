"""`keras-lpips embed`, `nearest` and `diversity`: LPIPS through its embedding (`keras_lpips.embedding`)."""

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from keras_lpips.cli import options
from keras_lpips.reports import dumps
from keras_lpips.resolve import MetricSpec

EMBED_HELP = """Embed the images under a folder: vectors whose squared distances are LPIPS.

Writes an .npz with the images' names (relative paths) and vectors, for
images of one size. Resumable: finished chunks are kept. A rerun continues,
embeds only the images new or changed since (by their bytes' sha256) and
drops those gone; --overwrite starts over.

  keras-lpips embed train/ --out train.npz
  keras-lpips embed train/ --out train.npz --net vgg --resize
  keras-lpips embed clips/ --out clips.npz --frame 0
"""
NEAREST_HELP = """For each QUERY image, its K nearest INDEX images by exact LPIPS.

QUERY and INDEX are image folders or files from `keras-lpips embed` (then of the
same metric). Memorisation checks of generative models, near-duplicate search.

  keras-lpips nearest samples/ train.npz -k 5
  keras-lpips nearest query.npz train.npz -k 10 --json
  keras-lpips nearest samples/ train.npz -k 10 --search flat --projection 1024
"""
DIVERSITY_HELP = """Mean, standard deviation and count of LPIPS over pairs of images.

All pairs of the folder's images; or, when it holds subfolders of images, the
pairs within each subfolder (e.g. the samples of one input: the BicycleGAN
protocol), pooled.

  keras-lpips diversity samples/
  keras-lpips diversity samples_per_input/ --json
"""

# `--search`: `keras_lpips.embedding_queries.SEARCHES` (importing it would import numpy for --help).
SEARCHES = ("exact", "flat", "hnsw", "ivf")
Resize = Annotated[bool, typer.Option("--resize", help="Resize images to the first one's (or the embed file's) size.")]
StartOver = Annotated[
    bool, typer.Option("--overwrite", help="Replace the file instead of completing it: embed every image anew (never one of the inputs).")
]


def _lpips(spec):
    """The `LPIPS` `spec` describes; an export, which has no features to embed, is refused."""
    from keras_lpips import LPIPS
    from keras_lpips.errors import InputError

    metric = options.resolve(spec)
    if not isinstance(metric, LPIPS):
        raise InputError(
            f"Embeddings need the Keras model (net options, --preset, a fit run or a .keras file); an exported "
            f"SavedModel serves them through its embed signature. Received: --model {spec.model}"
        )
    return metric


@options.metric_options
def embed(
    folder: Annotated[Path, typer.Argument(help="Folder of images (subfolders included).")],
    out: Annotated[Path, typer.Option("--out", help="The .npz file to write (or to complete).")],
    *,
    metric: MetricSpec,
    resize: Resize = False,
    frame: options.Frame = None,
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Images written per chunk (what a rerun keeps).")] = 256,
    overwrite: StartOver = False,
    as_json: options.Json = False,
):
    from keras_lpips.embedding_files import listed_images
    from keras_lpips.files import check_output
    from keras_lpips.resumable_embedding import check_embed_path, embed_folder

    names = listed_images(folder)  # a folder of images, before the model is loaded
    # An embed file is completed, so it may exist; it is never one of the images or weight files read.
    check_output(out, [folder, *(folder / name for name in names), *metric.input_paths()], overwrite=True, kind="file")
    check_embed_path(out)
    lpips = _lpips(metric)
    with options.progress_on_first_call("embedding") as progress:
        counts = embed_folder(lpips, folder, out, resize=resize, chunk=chunk, progress=progress, frame=frame, overwrite=overwrite)
    if as_json:
        typer.echo(dumps({"out": str(out), "embedded": counts.embedded, "dropped": counts.dropped, "total": counts.total}))
        return
    dropped = f", dropped {counts.dropped} no longer in {folder}" if counts.dropped else ""
    typer.echo(f"embedded {counts.embedded} new or changed image(s){dropped}; {options.one_line(out)} holds {counts.total}")


@options.metric_options
def nearest(
    query: Annotated[Path, typer.Argument(help="Query images: a folder or an embed file.")],
    index: Annotated[Path, typer.Argument(help="Images searched: a folder or an embed file.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbours per query image.")] = 5,
    *,
    metric: MetricSpec,
    resize: Resize = False,
    frame: options.Frame = None,
    search: Annotated[
        Literal[SEARCHES],
        typer.Option(
            "--search",
            help="exact, or a FAISS index whose candidates are re-ranked exactly: flat, hnsw or ivf "
            "(pip install 'keras-lpips\\[faiss]').",  # the backslash: Rich would read [faiss] as markup and drop it
        ),
    ] = "exact",
    projection: Annotated[
        Optional[int], typer.Option("--projection", min=1, help="With a FAISS index: index a random projection to this many dimensions.")
    ] = None,
    as_json: options.Json = False,
):
    from keras_lpips.embedding_queries import check_search, nearest_images

    check_search(search, projection)  # before a metric is loaded or anything read
    with options.progress_on_first_call("embedding") as progress:
        # A metric named by an option is built, so that embed files of another are refused.
        model = _lpips(metric) if metric.named else lambda: _lpips(metric)
        neighbours = nearest_images(query, index, k, model, resize, search, projection, progress, frame)
    names = neighbours.index.names
    results = [
        {"query": name, "nearest": [{"name": names[i], "distance": float(d)} for i, d in zip(row, ds) if i >= 0]}
        for name, row, ds in zip(neighbours.queries.names, neighbours.indices, neighbours.distances)
    ]
    if as_json:
        k = int(neighbours.indices.shape[1])  # at most the number of index images
        report = {"metric": neighbours.index.metric, "k": k, "search": search, "projection": projection}
        typer.echo(dumps({**report, "queries": results}))
        return
    for result in results:
        typer.echo(options.one_line(result["query"]))
        for rank, neighbour in enumerate(result["nearest"], 1):
            typer.echo(f"  {rank:>3}. {neighbour['distance']:.6f}  {options.one_line(neighbour['name'])}")


@options.metric_options
def diversity(
    folder: Annotated[Path, typer.Argument(help="Folder of images, or of one subfolder of images per set.")],
    *,
    metric: MetricSpec,
    resize: Resize = False,
    frame: options.Frame = None,
    as_json: options.Json = False,
):
    from keras_lpips.embedding_queries import folder_diversity

    with options.progress_on_first_call("embedding") as progress:
        result = folder_diversity(lambda: _lpips(metric), folder, resize, progress, frame)
    per_group, pooled = result.sets, result.pooled
    summary = {"mean": pooled.mean, "std": pooled.std, "count": pooled.count}
    if as_json:
        sets = [{"set": name, "mean": s.mean, "std": s.std, "count": s.count} for name, s in per_group.items()]
        typer.echo(dumps({"metric": result.metric, **summary, "sets": sets}))
        return
    if len(per_group) > 1:
        for name, s in per_group.items():
            typer.echo(f"{options.one_line(name)}: mean {s.mean:.6f}, std {s.std:.6f}, {s.count} pairs")
    where = f"within {len(per_group)} sets" if len(per_group) > 1 else "over all pairs"
    typer.echo(f"diversity ({where}): mean LPIPS {pooled.mean:.6f}, std {pooled.std:.6f}, {pooled.count} pairs")
