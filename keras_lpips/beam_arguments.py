"""What a Beam job of `keras_lpips.beam_pipelines` is given, checked where it is launched.

Each check fails with one `InputError` (a usage error) before any worker starts, and before
any earlier output is deleted: the file systems of URLs, the SavedModel and its signature, the
pairs CSV, the output prefix (with the shards an earlier run left there), the images a pattern
matches. `remove_temporaries` tidies up after a job that failed.
"""

import csv
import fnmatch
import os
import pathlib
import re
import shutil

from apache_beam.io.filesystems import FileSystems

from keras_lpips.errors import DataError, InputError, reason
from keras_lpips.exported_metric import METADATA, METADATA_BYTES, no_savedmodel_message, parse_metadata, savedmodel_directory
from keras_lpips.savedmodel_ops import MAX_GRAPH_BYTES, check_ops

PAIR_COLUMNS = ("img0", "img1")


def first_line(error):
    """An exception's message as one line (its first, at most 500 characters), for an error line."""
    return reason(error)[:500]


def check_file_systems(*paths):
    """Refuses a URL whose file system Beam lacks (e.g. gs:// without apache-beam[gcp])."""
    for path in map(str, paths):
        if "://" in path:
            try:
                FileSystems.get_filesystem(path)
            except ValueError as error:
                raise InputError(first_line(error)) from None


def output_prefix(out, overwrite, suffix):
    """(`out` as the pipeline writes it, the shards of an earlier run there to delete). A local
    `out` is made absolute and must name files in an existing folder; its earlier shards (of
    this prefix exactly, outputs and errors) are refused unless `overwrite`. So is any other
    file Beam would delete as it writes: its sinks replace whatever matches OUT-*-of-NNNNN.SUFFIX,
    the shards of OUT-2 too. A URL is used as it is (not looked at: Beam replaces as it does)."""
    out = str(out)
    if "://" in out:
        return out, []
    if not out or out.endswith(("/", os.sep)) or os.path.isdir(out):
        raise InputError(f"out= is a prefix for the output files (e.g. out/photos), not a folder. Received: {out!r}")
    if any(c in os.path.basename(out) for c in "*?["):
        raise InputError(f"out= must not hold the pattern characters * ? [. Received: {out!r}")
    prefix = pathlib.Path(os.path.abspath(out))
    if not prefix.parent.is_dir():
        raise InputError(f"Output folder does not exist: {prefix.parent}")
    shard = re.compile(rf"{re.escape(prefix.name)}(-errors)?-\d{{5}}-of-\d{{5}}\.(tfrecord|csv|txt)")
    replaced = [f"{prefix.name}-*-of-[0-9][0-9][0-9][0-9][0-9]{suffix}", f"{prefix.name}-errors-*-of-[0-9][0-9][0-9][0-9][0-9].txt"]
    doomed = sorted(path for path in prefix.parent.iterdir() if any(fnmatch.fnmatchcase(path.name, p) for p in replaced))
    foreign = [path for path in doomed if not shard.fullmatch(path.name)]
    if foreign:
        raise InputError(
            f"Beam would delete {foreign[0]} as it writes out={out} (its shards OUT-*-of-NNNNN{suffix} match that "
            "name); choose another out="
        )
    earlier = sorted(path for path in prefix.parent.iterdir() if shard.fullmatch(path.name))
    if earlier and not overwrite:
        raise InputError(f"{earlier[0]} exists (output of an earlier run); pass overwrite=True to replace it, or choose another out=")
    return str(prefix), earlier


def remove_temporaries(out):
    """The folders Beam's file sinks stage their shards in (beam-temp-NAME-...), beside a local `out`."""
    if "://" in out:
        return
    prefix = pathlib.Path(out)
    for folder in prefix.parent.glob(f"beam-temp-{_glob_escape(prefix.name)}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _glob_escape(text):
    """`text` with glob's special characters taken literally."""
    return re.sub(r"([*?[])", r"[\1]", text)


def matching_paths(pattern):
    """The paths `pattern` matches now, as the workers will see them (an empty list for none)."""
    try:
        return [metadata.path for metadata in FileSystems.match([pattern])[0].metadata_list]
    except Exception as error:  # noqa: BLE001 - Beam's file systems raise BeamIOError and others
        raise InputError(f"Cannot list {pattern}: {first_line(error)}") from None


def savedmodel_for(path, signature):
    """(the SavedModel directory, the smallest image side it takes) of a keras-lpips export that
    has `signature` and runs no op an export never runs (`keras_lpips.savedmodel_ops`): a local
    base or version directory, or a URL taken as the version directory."""
    if "://" in str(path):
        directory = str(path)
    else:
        directory = savedmodel_directory(path)
        if directory is None:
            raise InputError(no_savedmodel_message(path))
        directory = os.path.abspath(directory)
    metadata = FileSystems.join(directory, *METADATA.parts)
    info = parse_metadata(_read_bytes(metadata, f"{directory} is not a keras-lpips SavedModel export", METADATA_BYTES), metadata)
    from tensorflow.core.protobuf import saved_model_pb2

    data = _read_bytes(FileSystems.join(directory, "saved_model.pb"), f"Cannot read the SavedModel in {directory}", MAX_GRAPH_BYTES)
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(data)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and others
        raise DataError(f"Cannot read the SavedModel in {directory}: {first_line(error)}") from None
    check_ops(saved, directory)  # a program: refused before any worker loads it, if it could run more than an export does
    signatures = {name for graph in saved.meta_graphs for name in graph.signature_def}
    if signature not in signatures:
        raise InputError(
            f"The SavedModel in {directory} has no {signature!r} signature (an export from an older keras-lpips? "
            f"export it again). It has: {', '.join(sorted(signatures)) or 'none'}"
        )
    return directory, int(info.get("min_input_size", 1))


def _read_bytes(path, what, limit):
    """The bytes of `path` (any file system Beam has), at most `limit` of them (`DataError` beyond)."""
    try:
        with FileSystems.open(path) as f:
            data = f.read(limit + 1)
    except Exception as error:  # noqa: BLE001 - Beam's file systems raise many types for a missing file
        raise InputError(f"{what}: cannot read {path} ({first_line(error)})") from None
    if len(data) > limit:
        raise DataError(f"Cannot read {path}: it has more than {limit:,} bytes, far more than keras-lpips writes")
    return data


def check_pairs_csv(path):
    """Refuses a pairs CSV that cannot be read, is not UTF-8 text, lacks the header img0,img1,
    or has no row after it."""
    try:
        with FileSystems.open(path) as f:
            header = f.readline().decode("utf-8-sig")
            rest = f.read(1 << 16).decode("utf-8", errors="replace")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a CSV (UTF-8 text)") from None
    except Exception as error:  # noqa: BLE001 - as in `_read_bytes`
        raise InputError(f"Cannot read the pairs CSV {path}: {first_line(error)}") from None
    columns = next(csv.reader([header]), [])
    if [column.strip() for column in columns[:2]] != list(PAIR_COLUMNS):
        raise InputError(f"{path} must start with the header {','.join(PAIR_COLUMNS)}. Received: {','.join(columns)}")
    if not rest.strip():
        raise InputError(f"{path} has no rows after its header")
