"""Embeddings of image folders, and the `.npz` files that keep them (`keras-lpips embed`).

An embed file holds, for images of one size:

- `names`: each image's path relative to the folder (POSIX separators), sorted;
- `vectors`: their `LPIPS.embed` vectors, (N, D) float32;
- `image_size`: (height, width) of the images;
- `metric`: a JSON description of the metric (net, version, distance, layers, weight sources);
- `fingerprint`: sha256 of that description and every weight's bytes. Embeddings are
  comparable only when their fingerprints are equal (`check_same_metric`);
- `sha256` (written by `embed_folder`; `content_sha256`): the sha256 of each image file's bytes
  when it was embedded, (N,) hex strings: what a rerun compares to tell an unchanged image from a
  changed one. Files of older versions lack it: `nearest` reads them, `embed_folder` embeds their
  images again (with a note) rather than trust vectors it cannot match to the images;
- `frame` (only where it holds a multi-frame image: animated GIF/PNG/WebP, multi-page TIFF;
  `read_image`): the frame read of those. Without it the file holds none (a frame given for
  images of one frame only is not recorded: they ignore it).

`embed_folder` writes one resumably: the images are embedded in chunks, each written whole
(`files.atomic_path`) into a hidden folder `.NAME.parts` beside the file, then gathered into
the file, written whole, and the folder removed. A rerun makes the file describe the folder as
it is now: it keeps the vectors (of the file and of the chunks an interrupted run wrote) whose
image is unchanged (same name, same `sha256`, so a file from another folder or a folder whose
files were replaced is embedded anew where their bytes differ), embeds the new and changed
images, and drops the images no longer there. A rerun is refused where what is written would
mean something else: another metric, or another `frame` than the one written (a file without
one takes any: it holds no multi-frame image); `overwrite=True` starts over instead. A failed
run leaves nothing new but the chunks it finished.

What the commands compute from folders and embed files is here too: `nearest_images` (each side
a folder or an embed file: which one is decided here) and `folder_diversity`.
"""
import dataclasses
import hashlib
import itertools
import json
import pathlib
import shutil
import zipfile

import numpy as np

from keras_lpips import files
from keras_lpips.argument_checks import check_integer
from keras_lpips.disk_space import reporting_disk_full
from keras_lpips.errors import DataError, InputError, OutputError, note, reason
from keras_lpips.images import is_multi_frame, read_images, stored_size

FRAME, SHA256 = "frame", "sha256"  # the embed file's optional keys

# The constructor arguments that, with the weights, decide what an embedding means.
DESCRIBED = ("net", "version", "distance", "layers", "backbone_weights", "lin_weights", "precision")
KEYS = ("names", "vectors", "image_size", "metric", "fingerprint")


@dataclasses.dataclass
class Embeddings:
    """The content of an embed file: `names` (list of str), `vectors` (N, D) float32,
    `image_size` (height, width), `metric` (dict), `fingerprint` (str), `frame` (the frame
    read of multi-frame images, or None) and `sha256` (each image file's `content_sha256` when
    it was embedded, or None: embeddings of a folder in memory, files of older versions)."""

    names: list
    vectors: np.ndarray
    image_size: tuple
    metric: dict
    fingerprint: str
    frame: int | None = None
    sha256: list | None = None


def describe_metric(metric):
    """`(description, fingerprint)` of an `LPIPS`: its arguments that decide the embedding, and
    the sha256 of them and of every weight (so two fit runs of one configuration differ)."""
    config = metric.get_config()
    description = {key: config[key] for key in DESCRIBED}
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    for variable in metric.weights:
        digest.update(np.ascontiguousarray(np.asarray(variable.numpy(), np.float32)).tobytes())
    return description, digest.hexdigest()


def check_same_metric(first, second, what, advice=None):
    """Raises `InputError` unless two `(description, fingerprint)` pairs are of one metric; `what`
    names the two sides, e.g. ("QUERY", "INDEX"); `advice`, what to do instead, is said before
    what was received."""
    (description0, fingerprint0), (description1, fingerprint1) = first, second
    if fingerprint0 == fingerprint1:
        return
    advice = f"; {advice}" if advice else ""
    if description0 == description1:
        raise InputError(
            f"{what[0]} and {what[1]} belong to one configuration with different weights (an untrained backbone, "
            f"backbone_weights=None, is drawn anew in every run): distances between their embeddings mean "
            f"nothing{advice}. Received: {_summary(description0)}, twice"
        )
    raise InputError(
        f"{what[0]} and {what[1]} belong to different metrics: distances between their embeddings mean nothing"
        f"{advice}. Received: {_summary(description0)} and {_summary(description1)}"
    )


def _summary(description):
    return ", ".join(f"{key}={description.get(key)!r}" for key in DESCRIBED)


# --- folders ---------------------------------------------------------------------------------


def image_names(folder):
    """Paths of the image files (`files.IMAGE_SUFFIXES`) under `folder`, relative to it, sorted;
    hidden files and folders (names starting with ".") are skipped."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise InputError(f"Not a folder: {folder}")
    return sorted(path.relative_to(folder).as_posix() for path in files.image_files(folder, recursive=True))


def image_groups(folder):
    """`{group: [image paths]}` of a folder of samples: each subfolder holding images is a group
    (its images, `image_names`), or, without such subfolders, the folder's own images are one
    group named ".". A folder with both, or with neither, is refused (`InputError`)."""
    folder = pathlib.Path(folder)
    names = image_names(folder)
    own = [name for name in names if "/" not in name]
    groups = {}
    for name in names:
        if "/" in name:
            group, rest = name.split("/", 1)
            groups.setdefault(group, []).append(folder / group / rest)
    if own and groups:
        raise InputError(
            f"{folder} holds both images and subfolders of images: keep the images of one set together, "
            f"in the folder itself or in one subfolder per set. Received: {own[0]} and {next(iter(groups))}/"
        )
    if not own and not groups:
        raise InputError(f"No images ({', '.join(files.IMAGE_SUFFIXES)}) under {folder}")
    return groups or {".": [folder / name for name in own]}


def embed_paths(metric, paths, image_size=None, resize=False, batch_size=32, progress=None, frame=None):
    """`LPIPS.embed` vectors, (N, D) float32, of the images at `paths` (see `read_images`: frame
    `frame` of multi-frame ones), read and embedded `batch_size` at a time. `progress(k)` is
    called after each batch of k images."""
    from keras_lpips.embedding import embed_images

    batch_size = check_integer("batch_size", batch_size, 1)
    vectors = []
    for start in range(0, len(paths), batch_size):
        images = read_images(paths[start : start + batch_size], image_size, resize, frame)
        image_size = images.shape[1:3]
        vectors.append(embed_images(metric, images, batch_size))
        if progress:
            progress(len(images))
    return np.concatenate(vectors)


def _listed(folder):
    """`image_names(folder)`; `InputError` where there are none."""
    names = image_names(folder)
    if not names:
        raise InputError(f"No images ({', '.join(files.IMAGE_SUFFIXES)}) under {folder}")
    return names


def folder_embeddings(metric, folder, image_size=None, resize=False, progress=None, frame=None):
    """`Embeddings` of the images under `folder` (`image_names`; frame `frame` of multi-frame
    ones), in memory, all of `image_size` (default: the first image's) or resized to it with
    `resize`."""
    folder = pathlib.Path(folder)
    names = _listed(folder)
    image_size = tuple(image_size or stored_size(folder / names[0], frame))
    vectors = embed_paths(metric, [folder / name for name in names], image_size, resize, progress=progress, frame=frame)
    return Embeddings(names, vectors, image_size, *describe_metric(metric), frame)


# --- embed files -----------------------------------------------------------------------------


def write_embeddings(path, embeddings):
    """Writes `embeddings` (an `Embeddings`) to the `.npz` file `path`, whole or not at all."""
    optional = {FRAME: None if embeddings.frame is None else np.asarray(embeddings.frame, np.int64)}
    optional[SHA256] = None if embeddings.sha256 is None else np.asarray(embeddings.sha256, dtype=str)
    with files.atomic_path(path, as_input_error=True) as partial, open(partial, "xb") as f:
        np.savez(
            f,
            names=np.asarray(embeddings.names, dtype=str),
            vectors=np.asarray(embeddings.vectors, np.float32),
            image_size=np.asarray(embeddings.image_size, np.int64),
            metric=np.asarray(json.dumps(embeddings.metric)),
            fingerprint=np.asarray(embeddings.fingerprint),
            **{key: value for key, value in optional.items() if value is not None},
        )


def read_embeddings(path):
    """The `Embeddings` in an embed file; `DataError` for anything else (another file, a damaged
    one, one whose names, vectors and digests are not one row each)."""
    path = pathlib.Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would read a .npy, or suggest pickles
        raise DataError(f"Cannot read embed file {path}: not the .npz keras-lpips embed writes")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in KEYS if key not in data.files]
            embeddings = None if missing else Embeddings(
                names=[str(name) for name in data["names"]],
                vectors=data["vectors"],
                image_size=tuple(int(side) for side in data["image_size"]),
                metric=json.loads(str(data["metric"])),
                fingerprint=str(data["fingerprint"]),
                frame=int(data[FRAME]) if FRAME in data.files else None,
                sha256=[str(digest) for digest in data[SHA256]] if SHA256 in data.files else None,
            )  # fmt: skip
    except (OSError, ValueError) as error:  # not a file, not a zip, damaged, or holding pickles
        raise DataError(f"Cannot read embed file {path}: {error}") from None
    if missing:
        raise DataError(f"{path} is not an embed file (from keras-lpips embed): it lacks {', '.join(missing)}")
    rows = {"names": len(embeddings.names), "vectors": len(embeddings.vectors) if embeddings.vectors.ndim == 2 else None}
    rows.update({SHA256: len(embeddings.sha256)} if embeddings.sha256 is not None else {})
    if len(set(rows.values())) != 1:
        counts = ", ".join(f"{key}: {'not a matrix' if count is None else count}" for key, count in rows.items())
        raise DataError(f"Cannot read embed file {path}: it is damaged (one row per image expected; {counts})")
    return embeddings


def content_sha256(path):
    """The sha256 (hex) of an image file's bytes: what identifies its content in an embed file.

    The bytes, not the size and modification time: a stat is cheaper, but files replaced by
    copies that keep both (`cp -p`, `rsync -t`, archives with 1 s or 2 s times, images of one
    size in BMP or raw TIFF) or a file from another folder would pass for unchanged. Hashing
    reads each file once, at 10 to 40 times the speed of decoding it (measured: 0.02 ms against
    0.2-0.3 ms for a 64x64 PNG or JPEG, 0.9 ms against 16 ms for a 512x512 PNG), so a rerun that
    embeds nothing costs less than a tenth of a read of the folder. `DataError` where the file
    cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise DataError(f"Cannot read image file {path}: {reason(error)}") from None
    return digest.hexdigest()


def parts_folder(path):
    """The hidden folder beside an embed file where `embed_folder` keeps finished chunks."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.parts")


@dataclasses.dataclass
class EmbedCounts:
    """What `embed_folder` did: the images it `embedded` (new or changed since they were last
    embedded), those `dropped` from the file (no longer in the folder) and the `total` it holds."""

    embedded: int
    dropped: int
    total: int


ANEW = "pass overwrite=True to embed the folder anew"  # how every refusal to complete an embed file ends


def embed_folder(metric, folder, out, resize=False, chunk=256, batch_size=32, progress=None, frame=None, overwrite=False):
    """Writes the embeddings of the images under `folder` to the embed file `out`, resumably
    (see the module); returns `EmbedCounts`.

    The vectors already in `out` or in its parts folder (embedded by the same metric, and of the
    same `frame` where they hold a multi-frame image: otherwise `InputError`) are kept where their
    image's bytes are unchanged (`content_sha256`, read before the image is embedded, so that an
    image changed meanwhile is embedded again next time); the others are embedded again, and
    names no longer in `folder` dropped. `overwrite=True` keeps nothing: every image is embedded
    anew (the parts an earlier run left are deleted first; `out` is replaced once the new file is
    complete). All images must have the size of the first one (or of `out`'s), or `resize`.
    `frame` (0 is the first) picks the frame read of multi-frame images (`read_image`), which are
    refused without it. `progress(done, total)` is called as images are embedded (`total`: those
    to embed, new or changed; not called where there are none); `chunk` images are written at a
    time."""
    folder, out = pathlib.Path(folder), pathlib.Path(out)
    chunk, batch_size = check_integer("chunk", chunk, 1), check_integer("batch_size", batch_size, 1)
    frame = check_integer("frame", frame, 0, allow_none=True)
    if not out.parent.is_dir():
        raise InputError(f"Output folder does not exist: {out.parent}")
    names = _listed(folder)
    metric.check_euclidean()
    description, fingerprint = describe_metric(metric)
    parts = parts_folder(out)
    if overwrite:
        _delete_parts(parts)
    earlier = {} if overwrite else _earlier_embeddings(out, parts, (description, fingerprint), frame)
    content = {name: content_sha256(folder / name) for name in names}
    vectors = _unchanged(earlier.values(), content)
    todo = [name for name in names if name not in vectors]
    dropped = len({name for previous in earlier.values() for name in previous.names} - set(names))
    if not todo and not dropped and list(earlier) == [out] and not parts.exists():
        return EmbedCounts(0, 0, len(names))  # `out` is up to date
    image_size = next(iter(earlier.values())).image_size if earlier else stored_size(folder / names[0], frame)
    if earlier and todo and not resize:
        _check_size_of_new(folder / todo[0], image_size, out, frame)
    written = next((previous.frame for previous in earlier.values() if previous.frame is not None), None)
    created = _make_parts_folder(parts) if todo else []
    try:
        new_parts = _new_part_paths(parts)
        step = _counting(progress, len(todo)) if todo else None  # no progress where nothing is embedded
        for start in range(0, len(todo), chunk):
            chunk_names = todo[start : start + chunk]
            chunk_paths = [folder / n for n in chunk_names]
            chunk_vectors = embed_paths(metric, chunk_paths, image_size, resize, batch_size, step, frame)
            chunk_frame = _frame_read(chunk_paths, frame)
            chunk_digests = [content[n] for n in chunk_names]
            part = Embeddings(chunk_names, chunk_vectors, tuple(image_size), description, fingerprint, chunk_frame, chunk_digests)
            write_embeddings(next(new_parts), part)
            vectors.update(zip(chunk_names, chunk_vectors))
            written = written if chunk_frame is None else chunk_frame
        stacked = np.stack([vectors[name] for name in names])
        size = tuple(int(s) for s in image_size)
        write_embeddings(out, Embeddings(names, stacked, size, description, fingerprint, written, list(content.values())))
    except BaseException:
        files.remove_if_empty(created)  # a parts folder made here and holding no finished chunk
        raise
    shutil.rmtree(parts, ignore_errors=True)
    return EmbedCounts(len(todo), dropped, len(names))


def _earlier_embeddings(out, parts, metric, frame):
    """`{path: Embeddings}` of what earlier runs of `embed_folder` left to keep: `out`, then the
    chunks in `parts`, each checked against `metric` (`(description, fingerprint)`) and `frame`,
    and all of one image size: otherwise `InputError` saying how to go on. Files without the
    images' `sha256` (older versions) are checked alike, then said in a note: none of their
    vectors can be matched to an image (`_unchanged`), so their images are embedded again."""
    sources = [out] if out.exists() else []
    sources += sorted(parts.glob("part-*.npz")) if parts.is_dir() else []
    earlier = {}
    for source in sources:
        previous = _read_earlier(source, out)
        check_same_metric((previous.metric, previous.fingerprint), metric, (str(source), "the metric given"), ANEW)
        _check_same_frame(source, previous.frame, frame)
        if previous.sha256 is None:
            note(f"{source} does not record which image contents its vectors are of (an older keras-lpips wrote it): "
                 f"embedding its images again")  # fmt: skip
        first = next(iter(earlier), source)
        if previous.image_size != earlier.get(first, previous).image_size:
            raise InputError(
                f"{source} and {first} hold embeddings of images of different sizes; delete {source}, or {ANEW}. "
                f"Received: {previous.image_size} and {earlier[first].image_size}"
            )
        earlier[source] = previous
    return earlier


def _read_earlier(source, out):
    """`read_embeddings(source)`, `out` or one of its parts; where it cannot be read, the
    `DataError` says how to go on: delete the part (its images are embedded again), or start over."""
    try:
        return read_embeddings(source)
    except DataError as error:
        if source == out:
            raise DataError(f"{error}; {ANEW}, replacing it") from None
        raise DataError(f"{error}; delete it (its images are embedded again), or {ANEW}") from None


def _unchanged(earlier, content):
    """`{name: vector}` of the vectors in `earlier` (`Embeddings`) whose image is in the folder
    with the same content: its recorded `sha256` is `content[name]`."""
    return {
        name: vector
        for previous in earlier
        if previous.sha256 is not None  # an older file: no vector of it can be matched
        for name, digest, vector in zip(previous.names, previous.sha256, previous.vectors)
        if content.get(name) == digest
    }


def _check_size_of_new(path, image_size, out, frame):
    """Refuses (`InputError`) to complete `out`, of images of `image_size`, with the image at
    `path` of another size: resize it, or start over."""
    size = tuple(stored_size(path, frame))
    if size != tuple(image_size):
        raise InputError(
            f"{path} is {size[1]}x{size[0]} but {out} holds images of {image_size[1]}x{image_size[0]}; "
            f"pass resize=True to resize it, or overwrite=True to embed the folder anew"
        )


def _delete_parts(parts):
    """Deletes the chunks an earlier run left in `parts` (`overwrite=True`); `OutputError` where
    they cannot be deleted."""
    try:
        shutil.rmtree(parts)
    except FileNotFoundError:
        return  # no earlier run left any
    except OSError as error:
        raise OutputError(f"Cannot write {parts}: {reason(error)}") from None


def _make_parts_folder(parts):
    """Creates the folder `parts` where missing; returns `[parts]` where it was created here, else
    []. `OutputError` ("Cannot write PARTS: reason") or `DiskFullError` where it cannot be."""
    try:
        with reporting_disk_full(parts):
            return files.make_folder(parts)
    except OSError as error:
        raise OutputError(f"Cannot write {parts}: {reason(error)}") from None


def _new_part_paths(parts):
    """Paths for new chunks in `parts`: part-000000.npz, part-000001.npz, ..., skipping those that
    exist (the order of the chunks does not matter: `_unchanged` matches each vector by content)."""
    for number in itertools.count():
        path = parts / f"part-{number:06d}.npz"
        if not path.exists():
            yield path


def _frame_read(paths, frame):
    """`frame` where one of the images at `paths` has several frames (it was read with it), else
    None: images of one frame ignore `frame`, and a file of them records none."""
    if frame is not None and any(is_multi_frame(path) for path in paths):
        return frame
    return None


def _check_same_frame(source, written, frame):
    """Refuses to complete `source`, written with frame `written` of multi-frame images, with
    another `frame`: its vectors of those images would be of one frame, the new ones of another.
    A file written without a frame holds no multi-frame image, so any frame completes it."""
    if written is not None and frame != written:
        received = "no frame" if frame is None else f"frame={frame}"
        raise InputError(
            f"{source} holds frame {written} of its multi-frame images: complete it with frame={written}, "
            f"or {ANEW}. Received: {received}"
        )


# --- what the commands compute: nearest images, diversity ------------------------------------


def _resolved(metric):
    """`metric` where it is an `LPIPS`, else what the function `metric` returns."""
    from keras_lpips.model import LPIPS

    return metric if isinstance(metric, LPIPS) else metric()


def _counting(progress, total):
    """A `progress(k)` for each batch of k images that calls `progress(done, total)` (once with 0
    done before any); None without `progress`."""
    if progress is None:
        return None
    done = 0

    def step(k):
        nonlocal done
        done += k
        progress(done, total)

    progress(0, total)
    return step


def comparable_embeddings(query, index, metric, resize=False, progress=None, frame=None):
    """`(queries, index)`: the `Embeddings` of the two sides of `nearest_images`, each an embed
    file (`read_embeddings`: a path to a file) or a folder of images (any other path), embedded
    here (`folder_embeddings`, frame `frame` of multi-frame images) at the size of the other
    side's images: an embed file's, else the first folder's first image's, or resized to it with
    `resize`. Refused (`InputError`) unless both are of one metric (`check_same_metric`) and of
    images of one size.

    `metric`: the `LPIPS` that embeds the folders, or a function returning it, called only where
    a side is a folder (two embed files need no model). `progress(done, total)` follows the
    embedding: the images embedded so far, of all those the folders hold."""
    frame = check_integer("frame", frame, 0, allow_none=True)
    sides = [read_embeddings(path) if pathlib.Path(path).is_file() else pathlib.Path(path) for path in (query, index)]
    listed = {number: _listed(side) for number, side in enumerate(sides) if isinstance(side, pathlib.Path)}
    if listed:
        metric = _resolved(metric)
        size = next((side.image_size for side in sides if isinstance(side, Embeddings)), None)
        step = _counting(progress, sum(map(len, listed.values())))
        for number in listed:
            sides[number] = folder_embeddings(metric, sides[number], size, resize, progress=step, frame=frame)
            size = sides[number].image_size
    queries, found = sides
    check_same_metric((queries.metric, queries.fingerprint), (found.metric, found.fingerprint), ("QUERY", "INDEX"))
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


def nearest_images(query, index, k, metric, resize=False, search="exact", projection=None, progress=None, frame=None):
    """Each query image's `k` nearest index images by exact LPIPS, as `Neighbours`.

    `query` and `index`: each a folder of images or an embed file (`comparable_embeddings`, which
    `metric`, `resize`, `progress` and `frame` are for). `search`: "exact" (`embedding.nearest`), or a FAISS
    index whose candidates are ranked by their exact distances (`embedding_index.NeighbourIndex`:
    "flat", "hnsw" or "ivf", holding a random `projection` of the vectors to that many dimensions
    if given)."""
    from keras_lpips.embedding import nearest
    from keras_lpips.embedding_index import KINDS, NeighbourIndex

    if search not in ("exact", *KINDS):
        raise InputError(f"search must be 'exact' or one of {', '.join(KINDS)}. Received: search={search!r}")
    if projection is not None and search == "exact":
        raise InputError(
            f"projection applies to a FAISS index (search {', '.join(KINDS)}). "
            f"Received: search='exact', projection={projection!r}"
        )
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
    from keras_lpips.embedding import PairStatistics, pair_statistics

    frame = check_integer("frame", frame, 0, allow_none=True)
    groups = image_groups(folder)
    small = [name for name, paths in groups.items() if len(paths) < 2]
    if small:
        where = pathlib.Path(folder) / small[0]
        raise InputError(f"Need at least two images in each set to form a pair. Received one in {where}")
    metric = _resolved(metric)
    step = _counting(progress, sum(map(len, groups.values())))
    sets = {
        name: pair_statistics(embed_paths(metric, paths, resize=resize, progress=step, frame=frame))
        for name, paths in groups.items()
    }
    return Diversity(sets, sum(sets.values(), PairStatistics()), describe_metric(metric)[0])
