"""`keras-lpips embed`, `nearest` and `diversity`: LPIPS through its embedding (`keras_lpips.embedding`)."""

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from keras_lpips.cli import options
from keras_lpips.resolve import MetricSpec

EMBED_HELP = """Embed the images under a folder: vectors whose squared distances are LPIPS.

Writes an .npz with the images' names (relative paths) and vectors, for images of
one size. Resumable: finished chunks are kept; a rerun continues, and embeds only
images the file lacks.

  keras-lpips embed train/ --out train.npz
  keras-lpips embed train/ --out train.npz --net vgg --resize
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

Resize = Annotated[bool, typer.Option("--resize", help="Resize images to the first one's (or the embed file's) size.")]


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
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Images written per chunk (what a rerun keeps).")] = 256,
    as_json: options.Json = False,
):
    from keras_lpips.embedding_files import embed_folder, image_names
    from keras_lpips.errors import InputError
    from keras_lpips.files import check_output

    names = image_names(folder)
    # An embed file is completed, so it may exist; it is never one of the images or weight files read.
    check_output(out, [folder, *(folder / name for name in names), *metric.input_paths()], overwrite=True, kind="file")
    if out.suffix.lower() != ".npz":
        raise InputError(f"--out is the .npz file embed writes: name it .npz. Received: --out {out}")
    lpips = _lpips(metric)
    with options.progress_bar(len(names), "embedding") as bar:
        embedded, total = embed_folder(lpips, folder, out, resize=resize, chunk=chunk, progress=bar.update)
    if as_json:
        typer.echo(options.dumps({"out": str(out), "embedded": embedded, "total": total}))
    else:
        typer.echo(f"embedded {embedded} new image(s); {out} holds {total}")


@options.metric_options
def nearest(
    query: Annotated[Path, typer.Argument(help="Query images: a folder or an embed file.")],
    index: Annotated[Path, typer.Argument(help="Images searched: a folder or an embed file.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Neighbours per query image.")] = 5,
    *,
    metric: MetricSpec,
    resize: Resize = False,
    search: Annotated[
        Literal["exact", "flat", "hnsw", "ivf"],
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
    from keras_lpips.embedding import nearest as nearest_rows
    from keras_lpips.embedding_files import check_same_metric, folder_embeddings, image_names, read_embeddings
    from keras_lpips.embedding_index import KINDS, NeighbourIndex
    from keras_lpips.errors import InputError

    if projection is not None and search == "exact":
        raise InputError(f"--projection applies to a FAISS index (--search {', '.join(KINDS)}). Received: --search exact")
    sides = [read_embeddings(path) if path.is_file() else path for path in (query, index)]
    size = next((side.image_size for side in sides if not isinstance(side, Path)), None)
    lpips = None
    for number, side in enumerate(sides):
        if isinstance(side, Path):  # a folder: embedded here, at the size of the other side's images
            lpips = lpips or _lpips(metric)
            with options.progress_bar(len(image_names(side)), f"embedding {side}") as bar:
                sides[number] = folder_embeddings(lpips, side, size, resize, progress=bar.update)
            size = sides[number].image_size
    queries, found = sides
    check_same_metric((queries.metric, queries.fingerprint), (found.metric, found.fingerprint), ("QUERY", "INDEX"))
    if queries.image_size != found.image_size:
        raise InputError(
            f"QUERY and INDEX were embedded from images of different sizes; their distances mean nothing. "
            f"Received: {queries.image_size} and {found.image_size}"
        )
    if search == "exact":
        rows, distances = nearest_rows(queries.vectors, found.vectors, k)
    else:
        rows, distances = NeighbourIndex(found.vectors, search, projection).search(queries.vectors, k)
    results = [
        {"query": name, "nearest": [{"name": found.names[i], "distance": float(d)} for i, d in zip(row, ds) if i >= 0]}
        for name, row, ds in zip(queries.names, rows, distances)
    ]
    if as_json:
        report = {"metric": found.metric, "k": int(rows.shape[1]), "search": search, "projection": projection}
        typer.echo(options.dumps({**report, "queries": results}))
        return
    for result in results:
        typer.echo(result["query"])
        for rank, neighbour in enumerate(result["nearest"], 1):
            typer.echo(f"  {rank:>3}. {neighbour['distance']:.6f}  {neighbour['name']}")


@options.metric_options
def diversity(
    folder: Annotated[Path, typer.Argument(help="Folder of images, or of one subfolder of images per set.")],
    *,
    metric: MetricSpec,
    resize: Resize = False,
    as_json: options.Json = False,
):
    from keras_lpips.embedding import PairStatistics, pair_statistics
    from keras_lpips.embedding_files import describe_metric, embed_paths, image_groups
    from keras_lpips.errors import InputError

    groups = image_groups(folder)
    small = [name for name, paths in groups.items() if len(paths) < 2]
    if small:
        raise InputError(f"Need at least two images in each set to form a pair. Received one in {folder / small[0]}")
    lpips = _lpips(metric)
    per_group = {}
    with options.progress_bar(sum(map(len, groups.values())), "embedding") as bar:
        for name, paths in groups.items():
            per_group[name] = pair_statistics(embed_paths(lpips, paths, resize=resize, progress=bar.update))
    pooled = sum(per_group.values(), PairStatistics())
    summary = {"mean": pooled.mean, "std": pooled.std, "count": pooled.count}
    if as_json:
        sets = [{"set": name, "mean": s.mean, "std": s.std, "count": s.count} for name, s in per_group.items()]
        typer.echo(options.dumps({"metric": describe_metric(lpips)[0], **summary, "sets": sets}))
        return
    if len(per_group) > 1:
        for name, s in per_group.items():
            typer.echo(f"{name}: mean {s.mean:.6f}, std {s.std:.6f}, {s.count} pairs")
    where = f"within {len(per_group)} sets" if len(per_group) > 1 else "over all pairs"
    typer.echo(f"diversity ({where}): mean LPIPS {pooled.mean:.6f}, std {pooled.std:.6f}, {pooled.count} pairs")
