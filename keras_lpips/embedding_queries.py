"""What the commands compute from image folders and embed files: each query image's nearest
index images (`nearest_images`, `keras-lpips nearest`) and the diversity of a folder of samples
(`folder_diversity`, `keras-lpips diversity`). Which side is a folder and which an embed file is
decided here (`comparable_embeddings`)."""
import dataclasses
import pathlib

import numpy as np

from keras_lpips.argument_checks import check_integer
from keras_lpips.embedding_files import (
    Embeddings,
    check_same_metric,
    counting_progress,
    describe_metric,
    embed_paths,
    folder_embeddings,
    image_groups,
    listed_images,
    read_embeddings,
)
from keras_lpips.errors import InputError

# How `nearest_images` searches: "exact", or a FAISS index of one of `embedding_index.KINDS`.
SEARCHES = ("exact", "flat", "hnsw", "ivf")


def _resolved(metric):
    """`metric` where it is an `LPIPS` (`_given`), else what the function `metric` returns."""
    return metric if _given(metric) else metric()


def _given(metric):
    """Whether `metric` is an `LPIPS` rather than a function returning one (told without
    importing Keras, which an `LPIPS` has been)."""
    return hasattr(metric, "embed")


def comparable_embeddings(query, index, metric, resize=False, progress=None, frame=None):
    """`(queries, index)`: the `Embeddings` of the two sides of `nearest_images`, each an embed
    file (`read_embeddings`: a path to a file) or a folder of images (any other path), embedded
    here (`folder_embeddings`, frame `frame` of multi-frame images) at the size of the other
    side's images: an embed file's, else the first folder's first image's, or resized to it with
    `resize`. Refused (`InputError`) unless both are of one metric (`check_same_metric`) and of
    images of one size.

    `metric`: the `LPIPS` that embeds the folders, or a function returning it, called only where
    a side is a folder (two embed files need no model). An `LPIPS` given is the metric asked
    for: an embed file of another is refused too. `progress(done, total)` follows the
    embedding: the images embedded so far, of all those the folders hold."""
    frame = check_integer("frame", frame, 0, allow_none=True)
    asked = metric if _given(metric) else None
    sides = [read_embeddings(path) if pathlib.Path(path).is_file() else pathlib.Path(path) for path in (query, index)]
    listed = {number: listed_images(side) for number, side in enumerate(sides) if isinstance(side, pathlib.Path)}
    given = [f"resize={resize}"] * bool(resize) + [f"frame={frame}"] * (frame is not None)
    if given and not listed:
        raise InputError(f"resize and frame apply to folders of images; QUERY and INDEX are embed files. Received: {', '.join(given)}")
    if listed:
        metric = _resolved(metric)
        size = next((side.image_size for side in sides if isinstance(side, Embeddings)), None)
        step = counting_progress(progress, sum(map(len, listed.values())))
        for number in listed:
            sides[number] = folder_embeddings(metric, sides[number], size, resize, progress=step, frame=frame)
            size = sides[number].image_size
    queries, found = sides
    check_same_metric((queries.metric, queries.fingerprint), (found.metric, found.fingerprint), ("QUERY", "INDEX"))
    if asked is not None and not listed:  # two embed files, and a metric asked for
        advice = "drop the metric options, or embed the images with the metric asked for"
        check_same_metric((queries.metric, queries.fingerprint), describe_metric(asked), ("The embed files", "the metric asked for"), advice)
    if queries.image_size != found.image_size:
        raise InputError(
            f"QUERY and INDEX were embedded from images of different sizes; their distances mean nothing. "
            f"Received: {queries.image_size} and {found.image_size}"
        )
    return queries, found


@dataclasses.dataclass
class Neighbours:
    """What `nearest_images` found: the `queries` and `index` `Embeddings`, and for each query
    the rows of `index` nearest to it, nearest first: `indices` and their `distances`, (Q, k)
    each (-1 and inf where an approximate index found fewer than k)."""

    queries: Embeddings
    index: Embeddings
    indices: np.ndarray
    distances: np.ndarray


def check_search(search, projection=None):
    """`InputError` unless `search` is one of `SEARCHES` and a `projection` comes with a FAISS
    index: what `nearest_images` checks first, and the command line before it loads a metric
    (without importing Keras, which `embedding_index` does)."""
    if search not in SEARCHES:
        raise InputError(f"search must be 'exact' or one of {', '.join(SEARCHES[1:])}. Received: search={search!r}")
    if projection is not None and search == "exact":
        raise InputError(f"projection= applies to a FAISS index (search={'/'.join(SEARCHES[1:])}). Received: search=exact")


def nearest_images(query, index, k, metric, resize=False, search="exact", projection=None, progress=None, frame=None):
    """Each query image's `k` nearest index images by exact LPIPS, as `Neighbours`.

    `query` and `index`: each a folder of images or an embed file (`comparable_embeddings`, which
    `metric`, `resize`, `progress` and `frame` are for). `search`: "exact" (`embedding.nearest`), or a FAISS
    index whose candidates are ranked by their exact distances (`embedding_index.NeighbourIndex`:
    "flat", "hnsw" or "ivf", holding a random `projection` of the vectors to that many dimensions
    if given)."""
    from keras_lpips.embedding import nearest
    from keras_lpips.embedding_index import NeighbourIndex

    check_search(search, projection)
    queries, found = comparable_embeddings(query, index, metric, resize, progress, frame)
    if search == "exact":
        indices, distances = nearest(queries.vectors, found.vectors, k)
    else:
        indices, distances = NeighbourIndex(found.vectors, search, projection).search(queries.vectors, k)
    return Neighbours(queries, found, indices, distances)


@dataclasses.dataclass
class Diversity:
    """What `folder_diversity` found: each set's `PairStatistics` (`sets`, by name: "." for the
    folder's own images), those of all their pairs pooled (`pooled`), and the metric's
    description (`metric`, `describe_metric`)."""

    sets: dict
    pooled: object
    metric: dict


def folder_diversity(metric, folder, resize=False, progress=None, frame=None):
    """The LPIPS diversity of a folder of samples, as `Diversity`: the distances between the
    pairs of images within each set (`image_groups`: each subfolder of images, or the folder's
    own images; the BicycleGAN protocol), pooled over the sets. Each set needs two images (else
    `InputError`), all of its first image's size or, with `resize`, resized to it. `metric`,
    `progress(done, total)` and `frame` as in `comparable_embeddings` (a function is called
    once the folder is checked)."""
    frame = check_integer("frame", frame, 0, allow_none=True)
    groups = image_groups(folder)
    small = [name for name, paths in groups.items() if len(paths) < 2]
    if small:
        where = pathlib.Path(folder) / small[0]
        raise InputError(f"Need at least two images in each set to form a pair. Received one in {where}")
    from keras_lpips.embedding import PairStatistics, pair_statistics  # Keras: after the checks

    metric = _resolved(metric)
    step = counting_progress(progress, sum(map(len, groups.values())))
    sets = {
        name: pair_statistics(embed_paths(metric, paths, resize=resize, progress=step, frame=frame))
        for name, paths in groups.items()
    }
    return Diversity(sets, sum(sets.values(), PairStatistics()), describe_metric(metric)[0])
