"""Apache Beam pipelines that run an exported SavedModel over image sets larger than one machine.

Both run the SavedModel `export_savedmodel` writes (`keras-lpips export --format savedmodel`)
through Beam's `RunInference`: each worker loads it once (`SavedModelHandler`) and calls one
signature on batches of images of one size. The same pipeline runs in-process on DirectRunner
(the default) and on Dataflow, Flink or Spark, chosen by Beam's own pipeline options:

- `embed_images`: each image of a folder (or of a file pattern such as gs://bucket/*.png)
  through the `embed` signature, to TFRecord shards of `tf.train.Example`s
  {"name", "embedding", "height", "width"} (`read_embedding_records` reads them back);
- `score_pairs`: each row (img0, img1) of a CSV through `serving_default`, to CSV shards of
  img0,img1,distance (the distance written exactly: 9 significant digits of its float32).

Images are read through Beam's file systems (local paths, gs://, s3://, ...: each cloud needs
Beam's extra for it, e.g. apache-beam[gcp]) and decoded as `keras-lpips score` reads files
(`keras_lpips.images.decode_image`; a multi-frame image at the `frame` given, which the workers
receive with the DoFn that reads). An input that cannot be used (an unreadable image, a
multi-frame one without `frame`, one smaller than the network takes, a pair of two sizes, a
row without two names, images the SavedModel refuses or gives NaN for) does not stop the job:
it goes to the `-errors` text shards beside the output, one line "name<TAB>reason" (the
library's words: "choose one with frame=K"), and is counted in the returned `PipelineCounts`,
which quotes the first such line. What can be checked before the job starts is
(`keras_lpips.beam_arguments`: `InputError`), and a job that fails while running raises one
`DataError` with its first line.

    keras-lpips export --format savedmodel --out models/lpips
    keras-lpips beam embed photos/ models/lpips --out out/photos
    keras-lpips beam pairs pairs.csv models/lpips --out out/pairs -- --runner DataflowRunner ...

Needs the `beam` extra (`pip install 'keras-lpips[beam]'`, apache-beam).
"""

import contextlib
import csv
import dataclasses
import io
import os
import pathlib
import posixpath
import re

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from keras_lpips import beam_arguments as arguments
from keras_lpips.argument_checks import check_integer
from keras_lpips.beam_arguments import PAIR_COLUMNS
from keras_lpips.embedding_files import image_names
from keras_lpips.errors import DataError, InputError, KerasLPIPSError
from keras_lpips.export import SIGNATURES
from keras_lpips.images import decode_image

FAILED = "failed"
NAMESPACE = "keras_lpips"  # of the Beam counters "written" and "failed"
SHARD = "-?????-of-?????"  # Beam's default shard names, as a file pattern


@dataclasses.dataclass(frozen=True)
class PipelineCounts:
    """What a finished pipeline did: `written` results, `failed` inputs (listed in `errors`,
    a file pattern; `first_error` one of their lines, "name<TAB>reason", None where none failed)
    and the `output` file pattern."""

    written: int
    failed: int
    output: str
    errors: str
    first_error: str | None = None


class SavedModelHandler(ModelHandler):
    """RunInference's model handler for a keras-lpips SavedModel: calls one of its float
    signatures (`keras_lpips.export.SIGNATURES`) on examples that are tuples of [0, 1] images,
    one per signature input; the examples of one image size in a batch go in one call.
    Batches hold `max_batch_size` examples (fewer only at the end of a bundle). Examples the
    SavedModel refuses, or gives NaN for, get an inference {"error": reason} (`failures`)."""

    def __init__(self, directory, signature, max_batch_size=32):
        super().__init__(min_batch_size=max_batch_size, max_batch_size=max_batch_size)
        self._directory = str(directory)
        self._signature = signature

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(self._directory)

    def run_inference(self, batch, model, inference_args=None):
        import tensorflow as tf

        function = model.signatures[self._signature]
        inputs, outputs = SIGNATURES[self._signature]
        results = [None] * len(batch)
        by_size = {}
        for i, example in enumerate(batch):
            by_size.setdefault(example[0].shape, []).append(i)
        for indices in by_size.values():
            images = {name: np.stack([batch[i][k] for i in indices]) for k, name in enumerate(inputs)}
            try:
                values = {name: value.numpy() for name, value in function(**images).items() if name in outputs}
            except tf.errors.InvalidArgumentError as error:  # the signature's input checks
                for i in indices:
                    results[i] = PredictionResult(batch[i], {"error": _assertion(error.message)})
                continue
            for row, i in enumerate(indices):
                inference = {name: value[row] for name, value in values.items()}
                if any(np.isnan(value).any() for value in inference.values()):
                    inference = {"error": "the SavedModel gave NaN (an export of negative linear weights has no embedding)"}
                results[i] = PredictionResult(batch[i], inference)
        return results

    def get_metrics_namespace(self):
        return NAMESPACE


def _assertion(message):
    """The message of a failed graph assertion ("assertion failed: [MESSAGE]"), else the first line."""
    found = re.search(r"assertion failed: \[(.*?)\]\s*(\[\[|$)", message, re.S)
    return found.group(1).strip() if found else message.strip().splitlines()[0]


class ReadImages(beam.DoFn):
    """(key, paths) -> (key, images): each path read through Beam's file systems and decoded to
    float32 RGB in [0, 1] (frame `frame` of a multi-frame image, which is refused without it);
    images of one key must share one size of at least `min_size`. A key whose images cannot be
    used goes to the `FAILED` output as "key<TAB>reason"."""

    def __init__(self, min_size, frame=None):
        self._min_size = min_size
        self._frame = frame
        self._failed = beam.metrics.Metrics.counter(NAMESPACE, "failed")

    def process(self, element):
        key, paths = element
        try:
            images = tuple(_read(path, self._frame) for path in paths)
            sizes = sorted({image.shape[:2] for image in images})
            if len(sizes) > 1:
                raise InputError(f"images of different sizes {sizes}")
            if min(sizes[0]) < self._min_size:
                raise InputError(f"smaller than {self._min_size}x{self._min_size}, the smallest the network takes")
        except KerasLPIPSError as error:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(FAILED, f"{_key_text(key)}\t{error}")
            return
        yield key, images


class SplitFailures(beam.DoFn):
    """(key, PredictionResult) -> the same, or to the `FAILED` output as "key<TAB>reason" where
    the handler marked it an error; counts both."""

    def __init__(self):
        self._written = beam.metrics.Metrics.counter(NAMESPACE, "written")
        self._failed = beam.metrics.Metrics.counter(NAMESPACE, "failed")

    def process(self, element):
        key, result = element
        if "error" in result.inference:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(FAILED, f"{_key_text(key)}\t{result.inference['error']}")
        else:
            self._written.inc()
            yield element


class SplitPairs(beam.DoFn):
    """CSV lines -> (key, paths): the key the row's first two fields, the paths those relative
    to `base` unless absolute or URLs. Blank lines are skipped; a line without two names goes
    to the `FAILED` output."""

    def __init__(self, base):
        self._base = base
        self._failed = beam.metrics.Metrics.counter(NAMESPACE, "failed")

    def process(self, line):
        if not line.strip():
            return
        row = next(csv.reader([line]), [])
        if len(row) < 2 or not row[0] or not row[1]:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(FAILED, f"{line}\tnot a row of two image names ({', '.join(PAIR_COLUMNS)})")
            return
        yield (row[0], row[1]), (_joined(self._base, row[0]), _joined(self._base, row[1]))


def _key_text(key):
    """A key as the errors shards write it: an image's name, or a pair's two names as a CSV row."""
    return _csv_line(key) if isinstance(key, tuple) else key


def _read(path, frame):
    try:
        with FileSystems.open(path) as f:
            data = f.read()
    except Exception as error:  # noqa: BLE001 - Beam's file systems raise their own IOError-like types
        raise DataError(f"Cannot read {path}: {error}") from None
    return decode_image(data, path, frame)


def _embedding_example(keyed):
    import tensorflow as tf

    name, result = keyed
    vector = np.asarray(result.inference["embedding"], np.float32)
    height, width = result.example[0].shape[:2]
    feature = {
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=vector.tolist())),  # 5x faster than the array
        "height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
        "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _pair_row(keyed):
    (img0, img1), result = keyed
    return _csv_line([img0, img1, f"{np.float32(result.inference['distance']):.9g}"])


def _csv_line(values):
    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow(values)
    return text.getvalue()


def _joined(base, name):
    return name if "://" in name or pathlib.PurePath(name).is_absolute() else FileSystems.join(base, name)


def _failed_batch(failure):
    """Lines "key<TAB>reason" for each example of a batch RunInference could not run: Beam's
    dead-letter elements are (batch, (exception type, repr of the exception, traceback lines))."""
    batch, (kind, text, _) = failure
    beam.metrics.Metrics.counter(NAMESPACE, "failed").inc(len(batch))
    reason = (str(text).strip().splitlines() or [""])[0] or getattr(kind, "__name__", "error")
    return [f"{_key_text(key)}\t{reason}" for key, _ in batch]


# --- pipelines -------------------------------------------------------------------------------


def embed_images(source, saved_model, out, pipeline_args=(), batch_size=32, overwrite=False, on_start=None, frame=None):
    """Embeds every image of `source` with the SavedModel `saved_model` (its `embed` signature)
    and writes TFRecord shards `out`-SSSSS-of-NNNNN.tfrecord; returns `PipelineCounts`.

    `source` is a local folder (its images as `keras-lpips embed` finds them, named by their
    paths relative to it) or a file pattern Beam matches (gs://bucket/images/*.png, each image
    named by its path as matched). `pipeline_args`: Beam pipeline options, e.g. ["--runner",
    "DataflowRunner", ...]. A local `out` whose shards exist is refused unless `overwrite`,
    which deletes them as the job starts (shards of another count would be read with the new
    ones). `on_start()`, if given, is called once the arguments are checked, as the job starts.
    `frame` (0 is the first) picks the frame read of multi-frame images (animated GIF/PNG/WebP,
    multi-page TIFF), which fail without it (`read_image`)."""
    frame = check_integer("frame", frame, 0, allow_none=True)
    arguments.check_file_systems(source, saved_model, out)
    directory, min_size = arguments.savedmodel_for(saved_model, "embed")
    source = str(source)
    is_pattern = not os.path.isdir(source) and ("://" in source or any(c in source for c in "*?["))
    names = arguments.matching_paths(source) if is_pattern else image_names(source)
    source = source if is_pattern else os.path.abspath(source)  # as workers elsewhere see it
    if not names:
        raise InputError(f"No images {'match' if is_pattern else 'under'} {source}")
    out, earlier = arguments.output_prefix(out, overwrite, ".tfrecord")

    def build(pipeline):
        if is_pattern:
            matched = pipeline | "Match" >> fileio.MatchFiles(source)
            paths = matched | "Paths" >> beam.Map(lambda metadata: (metadata.path, (metadata.path,)))
        else:
            paths = pipeline | "Names" >> beam.Create([(name, (FileSystems.join(source, name),)) for name in names])
        results = _infer(paths, directory, "embed", min_size, batch_size, out, frame)
        results | "Examples" >> beam.Map(_embedding_example) | "Write" >> beam.io.WriteToTFRecord(out, file_name_suffix=".tfrecord")

    return _run(build, pipeline_args, out, earlier, on_start, f"{out}{SHARD}.tfrecord")


def score_pairs(pairs_csv, saved_model, out, pipeline_args=(), batch_size=32, overwrite=False, on_start=None, frame=None):
    """Scores every row of `pairs_csv` (a header, then rows img0,img1: image paths relative to
    the CSV's folder, absolute, or URLs) with the SavedModel's `serving_default` signature and
    writes CSV shards `out`-SSSSS-of-NNNNN.csv of img0,img1,distance; returns `PipelineCounts`.
    The other arguments as `embed_images`'s (`frame` for both images of a pair)."""
    frame = check_integer("frame", frame, 0, allow_none=True)
    arguments.check_file_systems(pairs_csv, saved_model, out)
    directory, min_size = arguments.savedmodel_for(saved_model, "serving_default")
    pairs_csv = str(pairs_csv) if "://" in str(pairs_csv) else os.path.abspath(pairs_csv)
    arguments.check_pairs_csv(pairs_csv)
    base = posixpath.dirname(pairs_csv) if "://" in pairs_csv else os.path.dirname(pairs_csv)
    out, earlier = arguments.output_prefix(out, overwrite, ".csv")

    def build(pipeline):
        lines = pipeline | "Read" >> beam.io.ReadFromText(pairs_csv, skip_header_lines=1)
        rows = lines | "Split" >> beam.ParDo(SplitPairs(base)).with_outputs(FAILED, main="pairs")
        results = _infer(rows.pairs, directory, "serving_default", min_size, batch_size, out, frame, rows[FAILED])
        header = _csv_line([*PAIR_COLUMNS, "distance"])
        results | "Rows" >> beam.Map(_pair_row) | "Write" >> beam.io.WriteToText(out, ".csv", header=header)

    return _run(build, pipeline_args, out, earlier, on_start, f"{out}{SHARD}.csv")


def _infer(keyed_paths, directory, signature, min_size, batch_size, out, frame, earlier_failures=None):
    """Reads the images of (key, paths) (frame `frame` of multi-frame ones), runs `signature` on
    them, writes the failures to `out`-errors shards; returns the (key, PredictionResult)
    collection of the successes."""
    read = keyed_paths | "ReadImages" >> beam.ParDo(ReadImages(min_size, frame)).with_outputs(FAILED, main="images")
    handler = KeyedModelHandler(SavedModelHandler(directory, signature, batch_size))
    inferred = read.images | "RunInference" >> RunInference(handler).with_exception_handling()
    results = inferred[0] | "SplitFailures" >> beam.ParDo(SplitFailures()).with_outputs(FAILED, main="results")
    failed_batches = inferred[1].failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch)
    failures = [read[FAILED], results[FAILED], failed_batches] + ([earlier_failures] if earlier_failures is not None else [])
    (
        failures
        | "Failures" >> beam.Flatten()
        | "WriteErrors" >> beam.io.WriteToText(f"{out}-errors", ".txt", shard_name_template="-SSSSS-of-NNNNN")
    )
    return results.results


def _run(build, pipeline_args, out, earlier, on_start, output):
    """Builds the pipeline with `build(pipeline)`, deletes the `earlier` shards, runs it and
    returns its `PipelineCounts` (the errors shards deleted when nothing failed, else the first
    line of one quoted). Bad pipeline
    options are an `InputError`; a failure while it runs one `DataError`, its temporaries removed."""
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(list(pipeline_args)))
    except (ValueError, TypeError) as error:  # e.g. an unknown --runner
        raise InputError(f"Bad Beam pipeline options {' '.join(pipeline_args)}: {arguments.first_line(error)}") from None
    build(pipeline)
    for path in earlier:
        path.unlink(missing_ok=True)
    if on_start:
        on_start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as error:  # noqa: BLE001 - whatever a worker raised, as one line
        arguments.remove_temporaries(out)
        raise DataError(f"The Beam pipeline failed: {arguments.first_line(error)}") from None
    counters = {}
    for counter in result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + counter.committed
    errors = f"{out}-errors{SHARD}.txt"
    shards = sorted(metadata.path for match in FileSystems.match([errors]) for metadata in match.metadata_list)
    failed = counters.get("failed", 0)
    if not failed:  # the errors shards are empty
        FileSystems.delete(shards)
    return PipelineCounts(counters.get("written", 0), failed, output, errors, _first_line_of(shards) if failed else None)


def _first_line_of(paths):
    """The first line of the first of the text files `paths` that has one (None if none has, or
    they cannot be read: the job's result stands without it)."""
    with contextlib.suppress(OSError):  # Beam's BeamIOError too
        for path in paths:
            with FileSystems.open(path) as f:
                line = f.readline().decode("utf-8", errors="replace").rstrip("\n")
            if line:
                return line
    return None


def read_embedding_records(pattern):
    """The TFRecord shards `embed_images` wrote (a file pattern, e.g.
    "out/photos-?????-of-?????.tfrecord", its `PipelineCounts.output`) as
    `{(height, width): (names, vectors)}`: per image size (embeddings of different sizes are
    not comparable), the names sorted and their (N, D) float32 vectors."""
    import tensorflow as tf

    files = tf.io.gfile.glob(str(pattern))
    if not files:
        raise InputError(f"No files match {pattern}")
    spec = {
        "name": tf.io.FixedLenFeature([], tf.string),
        "embedding": tf.io.VarLenFeature(tf.float32),
        "height": tf.io.FixedLenFeature([], tf.int64),
        "width": tf.io.FixedLenFeature([], tf.int64),
    }
    by_size = {}
    for serialized in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(serialized, spec)
        size = (int(example["height"]), int(example["width"]))
        by_size.setdefault(size, {})[example["name"].numpy().decode()] = tf.sparse.to_dense(example["embedding"]).numpy()
    return {size: (sorted(rows), np.stack([rows[name] for name in sorted(rows)])) for size, rows in by_size.items()}
