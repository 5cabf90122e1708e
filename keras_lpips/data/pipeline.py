"""`tf.data` pipelines over BAPPS records: parallel image decoding, resizing, seeded shuffling, batching.

Each element is a dict of batched tensors::

    twoafc_dataset(...) -> {"ref", "p0", "p1": float32 (B, S, S, 3) in input_range, "judge": float32 (B,)}
    jnd_dataset(...)    -> {"p0", "p1": float32 (B, S, S, 3) in input_range, "same": float32 (B,)}

Every image file is read as `keras_lpips.images.read_image` reads it (the reader of `score`,
`pairs`, `matrix` and `embed`), in 8 bits: its pixels are round(255 x read_image(path)), so
exactly read_image's for every file of up to 8 bits per sample (8-bit PNG, JPEG, GIF, BMP,
WebP, ...), and read_image's rounded to the nearest 1/255 for deeper ones (16-bit grey PNG,
TIFF and PGM, floating-point TIFF): EXIF orientation applied, CMYK converted as Pillow does,
alpha dropped (colours as stored), a file read as what it holds whatever its name. A file
read_image refuses is refused, in its words (a multi-frame file too: the datasets take no
frame=). They are mapped to `input_range` from there (the reference's ToTensor + Normalize(0.5,
0.5) for (-1, 1)); for 8-bit files that is the reference's `Image.open(...).convert("RGB")`.

Which decoder reads a file is decided from its header when the dataset is built
(`image_kinds.decode_kind`, once per file and process): TensorFlow's `decode_png` for 8-bit PNG
(and 16-bit colour, of which Pillow keeps the high byte; 16-bit grey through `decode_png`'s
uint16, rounded), `decode_jpeg` with libjpeg's accurate integer IDCT (Pillow's) for 8-bit grey,
YCbCr and RGB JPEG, where they give Pillow's pixels exactly; `read_image`'s own code in Python
(`tf.numpy_function`) for every other file: other formats, PNG and JPEG with an EXIF or XMP
orientation, animated PNG, CMYK JPEG, MPO, and anything malformed before its pixels. A dataset
of files of one kind (all of BAPPS: 8-bit PNG) runs that decoder alone, as fast as before; a
mixed one picks each file's with `tf.switch_case`. The one divergence is of corrupt files: a PNG
whose pixels' chunk has a CRC error beyond its first 64 KB is refused (libpng checks it), though
`read_image` reads it; `data verify` reports it either way.

Images that are not S x S already are resized to S x S by Pillow's bilinear filter on those 8-bit
pixels, the reference's `transforms.Resize(S)` on PIL images: a square image's pixels are the
reference's exactly, at every S (a non-square one is squashed to S x S, where the reference keeps
its aspect ratio and could not batch it). BAPPS patches are 64 x 64, so at the default S = 64
nothing is resized.

Under `tf.distribute` the datasets use the DATA auto-shard policy: every worker runs the whole
pipeline and keeps its share of each global batch, so `strategy.experimental_distribute_dataset`
splits batches across workers and replicas. The shares are disjoint only if every worker produces
the same elements in the same order: use the same `seed` on every worker (the default, 0) and
pass `deterministic=True` with MultiWorkerMirroredStrategy. With `deterministic=False` parallel
decoding may emit elements out of order, differently on each worker, so in an epoch some
triplets would reach two workers and others none.

A corrupt or refused image stops iteration with TensorFlow's error (a decoder's, or an assertion
holding read_image's reason), which does not name the file. `naming_bad_images(records)` turns it
into one `InputError` naming it (`fit_run` and `evaluate_run` use it): TensorFlow's decoder's
reason ("Cannot decode image PATH: Invalid PNG data, size 300") or read_image's own line ("Not
an image (or a format Pillow cannot read): PATH"); `verify_dataset` (`keras-lpips data verify
DIR`) lists every problem of a new copy before training, decoding each file as here.
"""

import contextlib
import io
import os
import re

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_lpips.argument_checks import check_batch_size, check_load_size
from keras_lpips.data import image_kinds
from keras_lpips.errors import DataError, InputError
from keras_lpips.images import decode_image, frame_count

AUTOTUNE = tf.data.AUTOTUNE
# tf.data's model-based autotuning off: AUTOTUNE then means one call per core for the maps (and a
# prefetch buffer that grows while the consumer waits). On 2 cores the autotuner settled, in about
# half of the passes, on settings that kept 1.2-1.4 cores busy (~1460 triplets/s instead of ~2000);
# off, every pass measured kept 1.85 cores busy (benchmarks/pipeline.py).
AUTOTUNE_MODEL = False


def twoafc_dataset(
    records,
    batch_size=50,
    load_size=64,
    input_range=(-1.0, 1.0),
    shuffle=True,
    seed=0,
    cache=False,
    deterministic=False,
    drop_remainder=False,
):
    """A `tf.data.Dataset` of 2AFC batches from `records` (`TwoAFCRecord`s or (ref, p0, p1, judge) tuples).

    - `shuffle`: reshuffle the whole set each epoch, from `seed` (same seed, same sequence of orders).
      With `shuffle=False` elements always come in the order of `records`, whatever `deterministic`.
    - `cache`: False, True (decoded 8-bit images kept in memory: about 37 KB per 64x64 triplet),
      or a file name prefix for `Dataset.cache(filename)`. Cached images are shuffled after the cache.
    - `deterministic`: keep element order exactly reproducible (`options.deterministic = True`;
      decoding stays parallel, its results are emitted in order). When False, parallel decoding
      may hand shuffled elements to batches slightly out of order, for speed. Pass True for
      training runs you want to reproduce exactly, and under MultiWorkerMirroredStrategy (see
      the module docstring).
    - `drop_remainder`: drop a last partial batch (fixed shapes, e.g. for TPUs or distribution).

    One pass over `records`; `.repeat()` on the result gives more, each reshuffled. Building it
    reads each file's header (once per file and process: `image_kinds.decode_kinds`) to choose
    its decoder (module docstring).
    """
    rows = [(r[0], r[1], r[2], r[3]) for r in records]
    columns = {key: [str(row[i]) for row in rows] for i, key in enumerate(("ref", "p0", "p1"))}
    values = [float(row[3]) for row in rows]
    return _build(
        columns, "judge", values, batch_size, load_size, input_range, shuffle, seed, cache, deterministic,
        drop_remainder,
    )  # fmt: skip


def jnd_dataset(
    records,
    batch_size=50,
    load_size=64,
    input_range=(-1.0, 1.0),
    shuffle=True,
    seed=0,
    cache=False,
    deterministic=False,
    drop_remainder=False,
):
    """A `tf.data.Dataset` of JND batches {"p0", "p1", "same"} from `records` (`JNDRecord`s or
    (p0, p1, same) tuples); the arguments are those of `twoafc_dataset`."""
    rows = [(r[0], r[1], r[2]) for r in records]
    columns = {key: [str(row[i]) for row in rows] for i, key in enumerate(("p0", "p1"))}
    values = [float(row[2]) for row in rows]
    return _build(
        columns, "same", values, batch_size, load_size, input_range, shuffle, seed, cache, deterministic,
        drop_remainder,
    )  # fmt: skip


def _check_arguments(count, batch_size, load_size, input_range):
    if count == 0:
        raise InputError("No records to build a dataset from")
    check_batch_size(batch_size)
    check_load_size(load_size)
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise InputError(f"input_range must be (low, high). Received: input_range={input_range!r}") from None
    if not low < high:
        raise InputError(f"input_range must have low < high. Received: input_range={input_range!r}")
    return low, high


# --- reading one image file ----------------------------------------------------------------------


def _read_image(path, kind):
    """path (a string scalar) -> uint8 (H, W, 3): `keras_lpips.images.read_image`'s pixels x 255,
    rounded to integers, so read_image's exactly for every file of up to 8 bits per sample.
    `kind` is the file's `image_kinds.decode_kind` (None: no file to read; the read fails), a
    Python int where a dataset's files are all of one kind, else an int32 scalar tensor.

    PNG and JPEG files that TensorFlow decodes as Pillow does are decoded by TensorFlow (JPEG with
    libjpeg's accurate integer IDCT, as Pillow); every other file by `read_image`'s own code
    (`keras_lpips.images.decode_image`) in Python, which fails with an `InvalidArgumentError`
    holding its reason where `read_image` refuses the file."""
    data = tf.io.read_file(path)

    def by_pillow():
        image, refusal = tf.numpy_function(_pillow_pixels, [data, path], (tf.uint8, tf.string), stateful=False)
        check = tf.debugging.Assert(tf.equal(refusal, ""), [refusal])
        with tf.control_dependencies([check]):
            return tf.ensure_shape(tf.identity(image), (None, None, 3))

    def grey_16():  # round(v / 257) = round(v / 65535 * 255): read_image's grey, rounded to 8 bits
        image = tf.cast(tf.io.decode_png(data, channels=3, dtype=tf.uint16), tf.int32)
        return tf.cast((image + 128) // 257, tf.uint8)

    decoders = {
        image_kinds.BY_PILLOW: by_pillow,
        image_kinds.PNG_8_BIT: lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8),
        image_kinds.JPEG: lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        image_kinds.PNG_GREY_16: grey_16,
    }
    if kind is None or isinstance(kind, int):
        return decoders[image_kinds.PNG_8_BIT if kind is None else kind]()
    return tf.switch_case(kind, decoders)


def _pillow_pixels(data, path):
    """(`read_image`'s pixels of the encoded image `data` as uint8 (H, W, 3), b"") or, where it
    refuses the file, (an empty image, its reason): no Python exception, whose traceback
    TensorFlow would log."""
    try:
        image = decode_image(bytes(data), os.fsdecode(path))
    except Exception as error:  # noqa: BLE001  (InputError, DataError: their one line)
        return np.zeros((0, 0, 3), np.uint8), (str(error) or type(error).__name__).encode()
    return np.round(image * 255.0).astype(np.uint8), b""


_KINDS = "_kinds"  # the element's key of its files' kinds, where they are not all of one kind


def _kind_column(kinds):
    """A dataset's `decode_kind`s of its files -> (one kind for all, or None; int32 per file)."""
    known = {kind for kind in kinds if kind is not None}
    if len(known) <= 1:
        return (known.pop() if known else None), None
    return None, [image_kinds.PNG_8_BIT if kind is None else kind for kind in kinds]


def _pillow_bilinear(image, size):
    """uint8 (H, W, 3) -> uint8 (size, size, 3) by `PIL.Image.resize(..., BILINEAR)`, the filter of
    the reference's `transforms.Resize` (Pillow's fixed-point arithmetic, so bit-identical; it
    releases the GIL while it filters)."""
    return np.asarray(Image.fromarray(image).resize((int(size), int(size)), Image.BILINEAR))


def _decoder(image_keys, load_size, kind):
    """element {key: path, value: float[, _KINDS: {key: int32}]} -> {key: uint8 (S, S, 3), value:
    float}; `kind` the kind of every image (`_read_image`), or None to read it from `_KINDS`."""

    def load(path, kind):
        image = _read_image(path, kind)
        size = tf.shape(image)[:2]

        def resized():
            return tf.numpy_function(_pillow_bilinear, [image, load_size], tf.uint8, stateful=False)

        image = tf.cond(tf.reduce_all(tf.equal(size, load_size)), lambda: image, resized)
        return tf.ensure_shape(image, (load_size, load_size, 3))

    def decode(element):
        out = dict(element)
        kinds = out.pop(_KINDS, None)
        for key in image_keys:
            out[key] = load(element[key], kind if kinds is None else kinds[key])
        return out

    return decode


def _scaler(image_keys, low, high):
    """batched {key: uint8} -> {key: float32 in [low, high]}."""

    def to_range(batch):  # x / 255 first, as ToTensor: 0 and 255 land exactly on low and high
        out = dict(batch)
        for key in image_keys:
            out[key] = tf.cast(batch[key], tf.float32) / 255.0 * (high - low) + low
        return out

    return to_range


def _build(columns, value_key, values, batch_size, load_size, input_range, shuffle, seed, cache, deterministic,
           drop_remainder):  # fmt: skip
    low, high = _check_arguments(len(values), batch_size, load_size, input_range)
    image_keys = tuple(columns)
    paths = [path for key in image_keys for path in columns[key]]
    kind, per_file = _kind_column(image_kinds.decode_kinds(paths))
    decode = _decoder(image_keys, int(load_size), kind)
    slices = {**columns, value_key: tf.constant(values, tf.float32)}
    if per_file is not None:  # files of several kinds: each decoded by its own (`tf.switch_case`)
        count = len(values)
        slices[_KINDS] = {key: tf.constant(per_file[i * count : (i + 1) * count], tf.int32) for i, key in enumerate(image_keys)}
    # Unshuffled sets keep the records' order (evaluation lines results up with records by position);
    # shuffled ones decode in order only when deterministic (None: follow options.deterministic).
    order = True if deterministic or not shuffle else None

    dataset = tf.data.Dataset.from_tensor_slices(slices)
    if cache is not False and cache is not None:
        dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=order)
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(len(values), seed=seed, reshuffle_each_iteration=True)
    if cache is False or cache is None:
        dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE, deterministic=order)
    dataset = dataset.batch(int(batch_size), drop_remainder=bool(drop_remainder))
    # Whole batches stay in order whatever `deterministic` (a last partial batch comes last).
    dataset = dataset.map(_scaler(image_keys, low, high), num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.prefetch(AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.autotune.enabled = AUTOTUNE_MODEL
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# --- naming the file behind a decode error ------------------------------------------------------

# What a failing read or decode raises while a dataset is iterated (directly or inside Keras' fit):
# a bad image, a missing file, a folder or an unreadable file in its place.
READ_ERRORS = (tf.errors.NotFoundError, tf.errors.FailedPreconditionError, tf.errors.PermissionDeniedError)
DECODE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError, *READ_ERRORS)


def _error_reason(error):
    """The first line of a TensorFlow error's message, without its {{function_node ...}} prefix
    and [[node ...]] / [Op:...] suffixes: e.g. "Invalid PNG data, size 300"."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(error, "message", None) or str(error))
    text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return re.sub(r"\s*\[(\[|Op:).*$", "", text).strip() or type(error).__name__


def _read_reason(error, path):
    """Why reading `path` failed: "Is a directory" from "PATH; Is a directory"."""
    return _error_reason(error).replace(f"{path};", "").strip() or type(error).__name__


def image_paths(records):
    """The image paths of `TwoAFCRecord`s (ref, p0, p1) or `JNDRecord`s (p0, p1), in order."""
    paths = []
    for record in records:
        paths += [str(v) for v in tuple(record) if not isinstance(v, (int, float))]
    return paths


def first_unreadable_image(paths, chunk=8192):
    """(path, problem) of the first of `paths` that the pipeline cannot read or decode, else None;
    `problem` is one line naming the file: e.g. "Cannot decode image PATH: Invalid PNG data, size
    300", "Cannot read image PATH: Is a directory", or `read_image`'s own refusal of a file it
    decodes ("Not an image (or a format Pillow cannot read): PATH").

    Decodes in parallel, `chunk` files at a time, stopping at the first chunk with a failure:
    on a failure path, so it costs at most one pass over the files at the pipeline's rate."""
    return next(unreadable_images(paths, chunk), None)


def unreadable_images(paths, chunk=8192, progress=None):
    """Yields (path, problem) for each of `paths` that the pipeline cannot read or decode, in
    order (`first_unreadable_image`'s problems), decoding `chunk` files at a time as the pipeline
    does (each file's kind read again from its header); `progress(done, total)` after each chunk."""
    paths = [str(p) for p in paths]
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        kinds = [image_kinds.decode_kind(path) for path in part]
        column = [image_kinds.PNG_8_BIT if kind is None else kind for kind in kinds]
        dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(part), dtype=tf.int64), part, tf.constant(column, tf.int32)))
        dataset = dataset.map(lambda i, p, k: (i, tf.shape(_read_image(p, k))[0]), num_parallel_calls=AUTOTUNE)
        read = set()
        for indices, _ in dataset.ignore_errors().batch(1024):
            read.update(indices.numpy().tolist())
        for index in sorted(set(range(len(part))) - read):
            path = part[index]
            yield path, _problem(path, kinds[index]) or (
                f"Cannot decode image {path}: it failed in the pipeline but decodes now (changed while reading?)"
            )
        if progress is not None:
            progress(start + len(part), len(paths))


def _problem(path, kind):
    """Why `_read_image` fails on `path`, a file of `kind` (one line naming it), or None where it
    reads it now."""
    try:
        data = tf.io.read_file(path)
    except tf.errors.NotFoundError:
        return f"No such image file: {path}"
    except READ_ERRORS as error:
        return f"Cannot read image {path}: {_read_reason(error, path)}"
    if kind == image_kinds.BY_PILLOW:
        return _pillow_problem(data.numpy(), path)
    try:
        _read_image(tf.constant(path), kind)  # eagerly: TensorFlow's decoder's error
    except tf.errors.OpError as error:
        return f"Cannot decode image {path}: {_error_reason(error)}"
    return None


def multi_frame_problem(frames):
    """Why a file of `frames` frames is refused (`read_image` refuses it without a frame=, which
    the datasets do not take)."""
    return f"it has {frames} frames (an animated or multi-page image); fit and eval read single-frame images only"


def _pillow_problem(data, path):
    """`read_image`'s refusal of the file `path` holding `data`, or None where it reads it; a file
    of several frames, which `read_image` refuses without a frame= that the datasets do not take,
    is refused in these words."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            frames = frame_count(image)
    except Exception:  # noqa: BLE001  (not an image, corrupt: `decode_image` says which)
        frames = 1
    if frames > 1:
        return f"Cannot decode image {path}: {multi_frame_problem(frames)}"
    try:
        decode_image(data, path)
    except Exception as error:  # noqa: BLE001  (InputError, DataError: one line naming the file)
        return str(error) or f"Cannot decode image {path}: {type(error).__name__}"
    return None


@contextlib.contextmanager
def naming_bad_images(records, data_root=None):
    """Turns a read or decode error raised while the datasets of `records` are iterated into one
    `DataError` naming the image at fault ("Cannot decode image PATH: Invalid PNG data, size 300");
    other errors, and decode errors no image of `records` explains, pass through unchanged::

        with naming_bad_images(train_records + val_records, "dataset"):
            trainer.fit(...)
    """
    try:
        yield
    except DECODE_ERRORS:
        bad = first_unreadable_image(image_paths(records))
        if bad is None:
            raise
        hint = f" (keras-lpips data verify {data_root} lists every problem)" if data_root is not None else ""
        raise DataError(bad[1] + hint) from None


def iterate_naming_bad_images(dataset, records, data_root=None):
    """Iterates `dataset` (built from `records`) as `naming_bad_images` would name a bad image;
    errors raised by the loop's own body are left alone."""
    with naming_bad_images(records, data_root):
        yield from dataset
