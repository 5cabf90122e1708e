"""`embed_folder`: writing the embed file of an image folder resumably (`keras-lpips embed`).

The images are embedded in chunks, each written whole (`files.atomic_path`) into a hidden folder
`.NAME.parts` beside the file, then gathered into the file, written whole, and the folder
removed. A rerun makes the file describe the folder as it is now: it keeps the vectors (of the
file and of the chunks an interrupted run wrote) whose image is unchanged (same name, same
`sha256`, so a file from another folder or a folder whose files were replaced is embedded anew
where their bytes differ), embeds the new and changed images, and drops the images no longer
there. A rerun is refused where what is written would mean something else: another metric, or
another `frame` than the one written (a file without one takes any: it holds no multi-frame
image); `overwrite=True` starts over instead. A failed run leaves nothing new but the chunks it
finished. One process writes a file at a time (a lock beside it; a second is refused at once).
The file's format is in `keras_lpips.embedding_files`.
"""
import contextlib
import dataclasses
import itertools
import pathlib
import shutil

import numpy as np

from keras_lpips import files
from keras_lpips.argument_checks import check_integer
from keras_lpips.disk_space import reporting_disk_full
from keras_lpips.embedding_files import (
    Embeddings,
    check_same_metric,
    image_file_sha256,
    counting_progress,
    describe_metric,
    embed_paths,
    listed_images,
    read_embeddings,
    write_embeddings,
)
from keras_lpips.errors import DataError, InputError, InUseError, OutputError, note, reason
from keras_lpips.file_lock import file_lock
from keras_lpips.images import is_multi_frame, stored_size


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
    """Writes the embeddings of the images under `folder` to the embed file `out` (named .npz:
    `check_embed_path`), resumably (see the module); returns `EmbedCounts`.

    The vectors already in `out` or in its parts folder (embedded by the same metric, and of the
    same `frame` where they hold a multi-frame image: otherwise `InputError`) are kept where their
    image's bytes are unchanged (`image_file_sha256`, read before the image is embedded, so that an
    image changed meanwhile is embedded again next time); the others are embedded again, and
    names no longer in `folder` dropped. `overwrite=True` keeps nothing: every image is embedded
    anew (the parts an earlier run left are deleted first; `out` is replaced once the new file is
    complete). All images must have the size of the first one (or of `out`'s), or `resize`.
    `frame` (0 is the first) picks the frame read of multi-frame images (`read_image`), which are
    refused without it. `progress(done, total)` is called as images are embedded (`total`: those
    to embed, new or changed; not called where there are none); `chunk` images are written at a
    time. While it runs it holds `out`'s lock (the file OUT.lock): a second `embed_folder` into
    `out` meanwhile raises `InUseError`."""
    folder, out = pathlib.Path(folder), pathlib.Path(out)
    check_embed_path(out)
    chunk, batch_size = check_integer("chunk", chunk, 1), check_integer("batch_size", batch_size, 1)
    frame = check_integer("frame", frame, 0, allow_none=True)
    if not out.parent.is_dir():
        raise InputError(f"Output folder does not exist: {out.parent}")
    names = listed_images(folder)
    metric.check_euclidean()
    with _writing(out):
        return _embed_folder(metric, folder, out, names, resize, chunk, batch_size, progress, frame, overwrite)


def check_embed_path(out):
    """`InputError` unless `out` names an .npz file (any case), what `embed_folder` writes: the
    command line checks it before it loads a metric."""
    if pathlib.Path(out).suffix.lower() != ".npz":
        raise InputError(f"out must name an .npz file (an embed file). Received: out={out}")


@contextlib.contextmanager
def _writing(out):
    """Holds `out`'s lock (`file_lock`: the file OUT.lock beside it) for the block: a second
    `embed_folder` into `out` while one runs is refused at once (`InUseError`), not run alongside
    it, where each would delete the chunks the other is writing."""
    lock = contextlib.ExitStack()
    try:  # the errors of taking the lock only: the block's own pass through
        lock.enter_context(file_lock(out, timeout=0))
    except TimeoutError:
        raise InUseError(
            f"{out} is being written by another embed process (it holds {out}.lock); wait for it to end, "
            "then run again to complete the file"
        ) from None
    except OSError as error:  # the lock file cannot be made: an unwritable folder
        raise OutputError(f"Cannot write {out}: {reason(error)}") from None
    with lock:
        yield


def _embed_folder(metric, folder, out, names, resize, chunk, batch_size, progress, frame, overwrite):
    """`embed_folder`'s work, under `out`'s lock, for the images `names` under `folder`."""
    description, fingerprint = describe_metric(metric)
    parts = parts_folder(out)
    if overwrite:
        _delete_parts(parts)
    earlier = {} if overwrite else _earlier_embeddings(out, parts, (description, fingerprint), frame)
    content = {name: image_file_sha256(folder / name) for name in names}
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
        step = counting_progress(progress, len(todo)) if todo else None  # no progress where nothing is embedded
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
