"""Embeddings of image folders, and the `.npz` files that keep them (`keras-lpips embed`).

An embed file holds, for images of one size:

- `names`: each image's path relative to the folder (POSIX separators), sorted;
- `vectors`: their `LPIPS.embed` vectors, (N, D) float32;
- `image_size`: (height, width) of the images;
- `metric`: a JSON description of the metric (net, version, distance, layers, weight sources);
- `fingerprint`: sha256 of that description and every weight's bytes. Embeddings are
  comparable only when their fingerprints are equal (`check_same_metric`);
- `sha256` (written by `embed_folder`; `image_file_sha256`): the sha256 of each image file's bytes
  when it was embedded, (N,) hex strings: what a rerun compares to tell an unchanged image from a
  changed one. Files of older versions lack it: `nearest` reads them, `embed_folder` embeds their
  images again (with a note) rather than trust vectors it cannot match to the images;
- `frame` (only where it holds a multi-frame image: animated GIF/PNG/WebP, multi-page TIFF;
  `read_image`): the frame read of those. Without it the file holds none (a frame given for
  images of one frame only is not recorded: they ignore it).

`keras_lpips.resumable_embedding.embed_folder` writes one resumably; what the commands compute
from folders and embed files (nearest images, diversity) is in `keras_lpips.embedding_queries`.
"""
import dataclasses
import hashlib
import json
import pathlib
import zipfile

import numpy as np

from keras_lpips import files
from keras_lpips.argument_checks import check_integer
from keras_lpips.errors import DataError, InputError, WeightsError, reason
from keras_lpips.images import MAX_PIXELS, read_images, stored_size
from keras_lpips.weights.cache import sha256_of
from keras_lpips.weights.npz_file import read_saved_npz

FRAME, SHA256 = "frame", "sha256"  # the embed file's optional keys

# The constructor arguments that, with the weights, decide what an embedding means.
DESCRIBED = ("net", "version", "distance", "layers", "backbone_weights", "lin_weights", "precision")
KEYS = ("names", "vectors", "image_size", "metric", "fingerprint")


@dataclasses.dataclass
class Embeddings:
    """The content of an embed file: `names` (list of str), `vectors` (N, D) float32,
    `image_size` (height, width), `metric` (dict), `fingerprint` (str), `frame` (the frame
    read of multi-frame images, or None) and `sha256` (each image file's `image_file_sha256` when
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


def image_names(folder, required=False):
    """Paths of the image files under `folder` (`files.image_files`: hidden files and folders
    skipped; refused where `folder` is no folder, or with `required` holds no image), relative to
    it with POSIX separators, sorted."""
    folder = pathlib.Path(folder)
    return sorted(path.relative_to(folder).as_posix() for path in files.image_files(folder, recursive=True, required=required))


def image_groups(folder):
    """`{group: [image paths]}` of a folder of samples: each subfolder holding images is a group
    (its images, `image_names`), or, without such subfolders, the folder's own images are one
    group named ".". A folder with both, or with neither, is refused (`InputError`)."""
    folder = pathlib.Path(folder)
    names = listed_images(folder)
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


def listed_images(folder):
    """`image_names(folder)`; `InputError` where there are none."""
    return image_names(folder, required=True)


def folder_embeddings(metric, folder, image_size=None, resize=False, progress=None, frame=None):
    """`Embeddings` of the images under `folder` (`image_names`; frame `frame` of multi-frame
    ones), in memory, all of `image_size` (default: the first image's) or resized to it with
    `resize`."""
    folder = pathlib.Path(folder)
    names = listed_images(folder)
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
    """The `Embeddings` in an embed file; `DataError` naming the file (and the key at fault) for
    anything else: another file, a damaged or hostile one (read within bounds,
    `npz_file.read_saved_npz`: its arrays take at most the file's size), keys of another
    type, shape or range, names, vectors and digests not one row each."""
    path = pathlib.Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would read a .npy, or suggest pickles
        raise DataError(f"Cannot read embed file {path}: not the .npz keras-lpips embed writes")
    try:
        data = read_saved_npz(path, f"embed file {path}", text=True)
    except OSError as error:
        raise DataError(f"Cannot read embed file {path}: {reason(error)}") from None
    except WeightsError as error:
        raise DataError(str(error)) from None
    missing = [key for key in KEYS if key not in data]
    if missing:
        raise DataError(f"{path} is not an embed file (from keras-lpips embed): it lacks {', '.join(missing)}")
    vectors = _checked(path, data, "vectors", 2, "f", "a matrix of floats")
    rows = {"names": len(_checked(path, data, "names", 1, "U", "a list of strings")), "vectors": len(vectors)}
    rows.update({SHA256: len(_checked(path, data, SHA256, 1, "U", "a list of strings"))} if SHA256 in data else {})
    if len(set(rows.values())) != 1:
        counts = ", ".join(f"{key}: {count}" for key, count in rows.items())
        raise DataError(f"Cannot read embed file {path}: it is damaged (one row per image expected; {counts})")
    image_size = tuple(int(side) for side in _checked(path, data, "image_size", 1, "iu", "(height, width)"))
    if len(image_size) != 2 or min(image_size) < 1 or image_size[0] * image_size[1] > MAX_PIXELS:
        raise DataError(f"Cannot read embed file {path}: its image_size must be (height, width), two sides >= 1 "
                        f"of at most {MAX_PIXELS:,} pixels. Received: {image_size!r:.100}")  # fmt: skip
    metric = str(_checked(path, data, "metric", 0, "U", "a string"))
    try:
        metric = json.loads(metric)
    except ValueError:
        metric = None
    if not isinstance(metric, dict):
        raise DataError(f"Cannot read embed file {path}: its metric is not a JSON object. Received: {metric!r:.100}")
    frame = int(_checked(path, data, FRAME, 0, "iu", "an integer")) if FRAME in data else None
    if frame is not None and frame < 0:
        raise DataError(f"Cannot read embed file {path}: its frame must be >= 0. Received: {frame}")
    return Embeddings(
        names=[str(name) for name in data["names"]],
        vectors=vectors.astype(np.float32, copy=False),
        image_size=image_size,
        metric=metric,
        fingerprint=str(_checked(path, data, "fingerprint", 0, "U", "a string")),
        frame=frame,
        sha256=[str(digest) for digest in data[SHA256]] if SHA256 in data else None,
    )


def _checked(path, data, key, ndim, kinds, expected):
    """`data[key]`, or `DataError` naming `path` and `key` unless it has `ndim` dimensions and a
    dtype of one of `kinds` (numpy's `dtype.kind`): `expected` says what it should be."""
    array = data[key]
    if array.ndim != ndim or array.dtype.kind not in kinds:
        raise DataError(f"Cannot read embed file {path}: its {key} must be {expected}. "
                        f"Received: an array of shape {array.shape!r:.100} and dtype {array.dtype}")  # fmt: skip
    return array


def image_file_sha256(path):
    """The sha256 (hex) of an image file's bytes (`weights.cache.sha256_of`): what identifies its
    content in an embed file.

    The bytes, not the size and modification time: a stat is cheaper, but files replaced by
    copies that keep both (`cp -p`, `rsync -t`, archives with 1 s or 2 s times, images of one
    size in BMP or raw TIFF) or a file from another folder would pass for unchanged. Hashing
    reads each file once, at 10 to 40 times the speed of decoding it (measured: 0.02 ms against
    0.2-0.3 ms for a 64x64 PNG or JPEG, 0.9 ms against 16 ms for a 512x512 PNG), so a rerun that
    embeds nothing costs less than a tenth of a read of the folder. `DataError` where the file
    cannot be read."""
    try:
        return sha256_of(path)
    except OSError as error:
        raise DataError(f"Cannot read image file {path}: {reason(error)}") from None


def counting_progress(progress, total):
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
