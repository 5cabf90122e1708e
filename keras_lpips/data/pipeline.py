"""`tf.data` pipelines over BAPPS records: parallel PNG decoding, resizing, seeded shuffling, batching.

Each element is a dict of batched tensors::

    twoafc_dataset(...) -> {"ref", "p0", "p1": float32 (B, S, S, 3) in input_range, "judge": float32 (B,)}
    jnd_dataset(...)    -> {"p0", "p1": float32 (B, S, S, 3) in input_range, "same": float32 (B,)}

Images are decoded as RGB (grey, palette and RGBA converted, alpha dropped, as the reference's
`Image.open(...).convert("RGB")`) and mapped to `input_range` (the reference's ToTensor +
Normalize(0.5, 0.5) for (-1, 1)). Images that are not S x S already are resized to S x S by
Pillow's bilinear filter, the reference's `transforms.Resize(S)` on PIL images: a square image's
pixels are the reference's exactly, at every S (a non-square one is squashed to S x S, where the
reference keeps its aspect ratio and could not batch it). BAPPS patches are 64 x 64, so at the
default S = 64 nothing is resized.

Under `tf.distribute` the datasets use the DATA auto-shard policy: every worker runs the whole
pipeline and keeps its share of each global batch, so `strategy.experimental_distribute_dataset`
splits batches across workers and replicas. The shares are disjoint only if every worker produces
the same elements in the same order: use the same `seed` on every worker (the default, 0) and
pass `deterministic=True` with MultiWorkerMirroredStrategy. With `deterministic=False` parallel
decoding may emit elements out of order, differently on each worker, so in an epoch some
triplets would reach two workers and others none.

A corrupt image stops iteration with TensorFlow's decode error, which does not name the file.
`naming_bad_images(records)` turns it into one `InputError` naming it (`fit_run` and
`evaluate_run` use it); `verify_dataset` (`keras-lpips data verify DIR`) lists every problem
of a new copy before training.
"""

import contextlib
import re

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_lpips.argument_checks import check_batch_size, check_load_size
from keras_lpips.errors import DataError, InputError

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

    One pass over `records`; `.repeat()` on the result gives more, each reshuffled.
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


def _read_image(path, png_only):
    """path -> uint8 (H, W, 3). PNG-only sets (BAPPS) use `decode_png`, a little faster than the
    format-sniffing `decode_image`. A 16-bit PNG keeps its high 8 bits (as Pillow reads 16-bit
    colour: the right range, never clipped); an animated PNG gives its first frame, which
    `data verify` reports."""
    data = tf.io.read_file(path)
    if png_only:
        return tf.io.decode_png(data, channels=3, dtype=tf.uint8)
    return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def _pillow_bilinear(image, size):
    """uint8 (H, W, 3) -> uint8 (size, size, 3) by `PIL.Image.resize(..., BILINEAR)`, the filter of
    the reference's `transforms.Resize` (Pillow's fixed-point arithmetic, so bit-identical; it
    releases the GIL while it filters)."""
    return np.asarray(Image.fromarray(image).resize((int(size), int(size)), Image.BILINEAR))


def _decoder(image_keys, load_size, png_only):
    """element {key: path, value: float} -> {key: uint8 (S, S, 3), value: float}."""

    def load(path):
        image = _read_image(path, png_only)
        size = tf.shape(image)[:2]

        def resized():
            return tf.numpy_function(_pillow_bilinear, [image, load_size], tf.uint8, stateful=False)

        image = tf.cond(tf.reduce_all(tf.equal(size, load_size)), lambda: image, resized)
        return tf.ensure_shape(image, (load_size, load_size, 3))

    def decode(element):
        out = dict(element)
        for key in image_keys:
            out[key] = load(element[key])
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
    png_only = all(path.lower().endswith(".png") for paths in columns.values() for path in paths)
    decode = _decoder(image_keys, int(load_size), png_only)
    # Unshuffled sets keep the records' order (evaluation lines results up with records by position);
    # shuffled ones decode in order only when deterministic (None: follow options.deterministic).
    order = True if deterministic or not shuffle else None

    dataset = tf.data.Dataset.from_tensor_slices({**columns, value_key: tf.constant(values, tf.float32)})
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
    """(path, problem) of the first of `paths` that TensorFlow cannot read or decode, else None;
    `problem` is e.g. "Cannot decode image PATH: Invalid PNG data, size 300" or "Cannot read
    image PATH: Is a directory".

    Decodes in parallel, `chunk` files at a time, stopping at the first chunk with a failure:
    on a failure path, so it costs at most one pass over the files at the pipeline's rate."""
    paths = [str(p) for p in paths]
    png_only = all(p.lower().endswith(".png") for p in paths)
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        dataset = tf.data.Dataset.from_tensor_slices((tf.range(len(part), dtype=tf.int64), part))
        dataset = dataset.map(lambda i, p: (i, tf.shape(_read_image(p, png_only))[0]), num_parallel_calls=AUTOTUNE)
        read = set()
        for indices, _ in dataset.ignore_errors().batch(1024):
            read.update(indices.numpy().tolist())
        if len(read) == len(part):
            continue
        path = part[min(set(range(len(part))) - read)]
        try:
            _read_image(tf.constant(path), png_only)
        except tf.errors.NotFoundError:
            return path, f"No such image file: {path}"
        except READ_ERRORS as error:
            return path, f"Cannot read image {path}: {_read_reason(error, path)}"
        except tf.errors.OpError as error:
            return path, f"Cannot decode image {path}: {_error_reason(error)}"
        return path, f"Cannot decode image {path}: it failed in the pipeline but decodes now (changed while reading?)"
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
