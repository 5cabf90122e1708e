"""Reading the BAPPS layout (Zhang et al. 2018): 2AFC triplets and JND pairs with their judgments.

The layout, as the official tarballs extract::

    ROOT/2afc/{train,val}/<subset>/ref/000000.png     the reference patch
                                  /p0/000000.png      two distorted versions of it
                                  /p1/000000.png
                                  /judge/000000.npy   1-element float array: fraction of raters preferring p1
    ROOT/jnd/val/<subset>/p0/000000.png               a patch and a distorted version of it
                         /p1/000000.png
                         /same/000000.npy             fraction of raters who saw no difference

Files are matched by name (stem) across the folders, which for BAPPS is the same as the
reference loader's pairing of the sorted lists. `pair_subset` alone says how a subset's files
pair and what is wrong with them: the listings raise its first problem as a `DataError` naming
the file or folder at fault, `verify_dataset` reports them all. Hidden entries and `__MACOSX`
folders (what archivers add) are no subsets, and are skipped wherever subsets are listed.
"""

import hashlib
import io
import math
import os
import pathlib
import re
import stat
from typing import NamedTuple

import numpy as np

from keras_lpips import errors
from keras_lpips.errors import DataError, InputError
from keras_lpips.files import TF_IMAGE_SUFFIXES

TRAIN_SUBSETS = ("traditional", "cnn", "mix")
VAL_SUBSETS = ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")
JND_SUBSETS = ("traditional", "cnn")

TWOAFC_IMAGE_FOLDERS = ("ref", "p0", "p1")
JND_IMAGE_FOLDERS = ("p0", "p1")
# A one-number .npy is 128 bytes (np.save pads its header); a judge file larger than this is not one.
MAX_FRACTION_FILE_BYTES = 4096


class TwoAFCRecord(NamedTuple):
    """One 2AFC triplet: `judge` is the fraction of raters who found `p1` closer to `ref`."""

    ref: pathlib.Path
    p0: pathlib.Path
    p1: pathlib.Path
    judge: float

    @property
    def subset(self):
        return self.ref.parent.parent.name


class JNDRecord(NamedTuple):
    """One JND pair: `same` is the fraction of raters who saw no difference between `p0` and `p1`."""

    p0: pathlib.Path
    p1: pathlib.Path
    same: float

    @property
    def subset(self):
        return self.p0.parent.parent.name


def resolve_root(root):
    """The folder holding `2afc/` and/or `jnd/`: `root` itself, `root/dataset`, or the parent
    of a `2afc`/`jnd` folder `root` points at. Raises `InputError` when none fits."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise InputError(f"BAPPS root {root} is not a directory")
    for candidate in (root, root / "dataset"):
        if (candidate / "2afc").is_dir() or (candidate / "jnd").is_dir():
            return candidate
    if root.name in ("2afc", "jnd"):
        return root.parent
    raise InputError(
        f"{root} does not look like a BAPPS dataset: expected a 2afc/ or jnd/ folder in it (or in {root / 'dataset'})"
    )


def _split_dir(root, kind, split):
    base = resolve_root(root) / kind
    if not base.is_dir():
        raise InputError(f"No {kind}/ folder in {resolve_root(root)}")
    path = base / split
    if not path.is_dir():
        present = _folder_names(base)
        raise InputError(f"No {kind}/{split} folder in {base.parent}; splits there: {', '.join(present) or 'none'}")
    return path


def has_split(root, kind, split):
    """Whether the dataset at `root` (`resolve_root`) has the folder `kind/split` ("2afc/val", "jnd/val")."""
    return (resolve_root(root) / kind / split).is_dir()


def available_subsets(split_dir):
    """The subset folders under a split folder, sorted; hidden ones and `__MACOSX` skipped."""
    return _folder_names(split_dir)


def _folder_names(folder):
    """The names of the folders in `folder`, sorted, but hidden ones and `__MACOSX`."""
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if p.is_dir() and not _junk(p.name))


def _junk(name):
    """Whether a folder entry is no part of a dataset: hidden, or an archiver's `__MACOSX`."""
    return name.startswith(".") or name == "__MACOSX"


def _subset_dirs(split_dir, subsets, label):
    present = available_subsets(split_dir)
    if subsets is None:
        if not present:
            raise InputError(f"{label} ({split_dir}) has no subset folders")
        subsets = present
    elif isinstance(subsets, str):
        subsets = [subsets]
    subsets = list(subsets)
    if not subsets:
        raise InputError(f"No subsets asked for in {label}")
    for subset in subsets:
        if subset not in present:
            raise InputError(
                f"Subset {label}/{subset} not found in {split_dir}; subsets there: {', '.join(present) or 'none'}"
            )
    return [split_dir / s for s in subsets]


def _folder_files(folder, suffixes):
    """The files `<stem><suffix>` in `folder` for one of `suffixes` (any case; hidden entries
    skipped), as ({stem: path}, {stem: problem}): a problem is one line naming an entry that the
    pipeline could not read as a file (a folder named `x.png`, a broken link, a device or pipe)
    or a stem given twice (`1.png` and `1.jpg`). Raises `OSError` when `folder` cannot be listed."""
    found, problems = {}, {}
    with os.scandir(folder) as entries:
        entries = sorted(entries, key=lambda entry: entry.name)
    for entry in entries:
        path = pathlib.Path(folder) / entry.name
        if _junk(entry.name) or path.suffix.lower() not in suffixes:
            continue
        problem = _not_a_file(entry)
        if problem is not None:
            problems.setdefault(path.stem, f"{path} {problem}")
        elif path.stem in found:
            problems.setdefault(path.stem, f"Two files named {path.stem} in {folder}: {found[path.stem].name} and {path.name}")
        else:
            found[path.stem] = path
    return found, problems


def _not_a_file(entry):
    """Why the folder entry `entry` is no regular file, or None for a file (or a link to one)."""
    try:
        if entry.is_file():
            return None
        if entry.is_dir():
            return "is a folder, not a file"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "is a broken link (its target does not exist)"
    return "is not a regular file (a device, pipe or socket)"


# The header np.save writes for a small float/int array of one element; anything else goes through np.load.
_SIMPLE_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=]?(?:f[248]|[iu][1248]))', 'fortran_order': False, 'shape': \((?:1(?:, ?1)*,?)?\), \}\s*")


def _fast_npy(data):
    """Parses a one-element .npy without np.load's header evaluation (10x faster, which
    matters for the 150k judges of BAPPS train); None when the file is not that simple."""
    if len(data) < 12 or data[:6] != b"\x93NUMPY" or data[6] not in (1, 2, 3):
        return None
    start = 10 if data[6] == 1 else 12
    end = start + int.from_bytes(data[8:start], "little")
    match = _SIMPLE_NPY_HEADER.fullmatch(data[start:end])
    if match is None:
        return None
    dtype = np.dtype(match.group(1).decode())
    if len(data) - end != dtype.itemsize:
        return None
    return np.frombuffer(data, dtype, count=1, offset=end)


def read_fraction(path, name="judge"):
    """Loads a 1-element .npy holding a fraction in [0, 1]; `DataError` naming the file otherwise:
    also for anything but a small regular file (a folder, a device, a large file), for another
    format (an .npz, a pickle: never loaded) and for a header announcing more than one number."""
    try:
        data = _small_file_bytes(path)
        value = _fast_npy(data)
        if value is None:
            value = _checked_npy(data, path, name)
    except DataError:  # a ValueError too, and already naming the file
        raise
    except (OSError, ValueError, TypeError, EOFError) as error:  # TypeError: numpy on a header it cannot make sense of
        raise DataError(f"Cannot read {name} file {path}: {errors.reason(error)}") from None
    value = float(value.reshape(()))
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise DataError(f"{name} file {path} holds {value}, outside [0, 1]")
    return value


def _small_file_bytes(path):
    """The bytes of `path`, a regular file of at most `MAX_FRACTION_FILE_BYTES` (never more is
    read); `ValueError` saying why for anything else."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError("not a regular file (a folder, device or pipe)")
    with open(path, "rb") as file:
        data = file.read(MAX_FRACTION_FILE_BYTES + 1)
    if len(data) > MAX_FRACTION_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FRACTION_FILE_BYTES} bytes, so not a one-number .npy file")
    return data


def _checked_npy(data, path, name):
    """The one number in the .npy bytes `data`, read after its header says it holds one number
    (`DataError` otherwise); `ValueError` when `data` is no .npy file."""
    if not data.startswith(b"\x93NUMPY"):
        raise ValueError("not a .npy file (it does not start with the .npy magic bytes)")
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(stream)
    if math.prod(shape) != 1 or dtype.kind not in "fiu":
        raise DataError(f"{name} file {path} should hold one number, holds a {dtype} array of shape {shape}")
    rest = data[stream.tell() :]
    if len(rest) != dtype.itemsize:
        raise ValueError(f"{len(rest)} bytes of data after the header, expected {dtype.itemsize}")
    return np.frombuffer(rest, dtype, count=1)


class SubsetFiles(NamedTuple):
    """A subset's files as `pair_subset` finds them.

    - `pairs`: [(stem, {folder: path})] of the stems every folder has a readable file of, sorted.
    - `files`: {folder: {stem: path}} of every readable file, paired or not (for `verify_dataset`).
    - `problems`: one line each, naming the file or folder at fault; empty when the subset is fine.
    """

    pairs: list
    files: dict
    problems: list


def pair_subset(subset_dir, image_folders, value_folder, label):
    """The files of the subset folder `subset_dir` (called `label`, e.g. "2afc/val/cnn"), paired by
    stem across `image_folders` (files with a `TF_IMAGE_SUFFIXES` suffix) and `value_folder`
    (.npy files), with what is wrong: an empty subset, a folder missing or unlistable, an entry
    that is no readable file or a stem given twice (`_folder_files`: such an entry is not also a
    missing file), and, when folders disagree, their counts and each missing file. The only
    pairing rule: `list_twoafc` and `list_jnd` raise the first problem, `verify_dataset` lists all."""
    try:
        if not any(subset_dir.iterdir()):
            return SubsetFiles([], {}, [f"Subset {label} ({subset_dir}) is empty"])
    except OSError as error:
        return SubsetFiles([], {}, [f"Cannot list folder {subset_dir}: {errors.reason(error)}"])
    files, present, problems = {}, {}, []  # present: the stems of every entry, readable or not
    for name in (*image_folders, value_folder):
        folder = subset_dir / name
        if not folder.is_dir():
            problems.append(f"Missing folder {folder}")
            continue
        try:
            files[name], bad = _folder_files(folder, (".npy",) if name == value_folder else TF_IMAGE_SUFFIXES)
        except OSError as error:
            problems.append(f"Cannot list folder {folder}: {errors.reason(error)}")
            continue
        problems += bad.values()
        present[name] = files[name].keys() | bad.keys()
    if present and not any(present.values()):
        problems.append(f"Subset {label} ({subset_dir}) is empty: no files in {', '.join(present)}")
    stems = sorted(set().union(*present.values()))
    missing = []  # [(path, line)]: a missing image is named with its counterparts' suffix (BAPPS: .png)
    for stem in stems:
        absent = [name for name, stems_there in present.items() if stem not in stems_there]
        if not absent:
            continue
        have = {name: found[stem] for name, found in files.items() if stem in found}
        image_suffix = next((path.suffix for name, path in have.items() if name != value_folder), ".png")
        counterpart = f" (its counterpart {next(iter(have.values()))} exists)" if have else ""
        for name in absent:
            path = subset_dir / name / (stem + (".npy" if name == value_folder else image_suffix))
            missing.append((path, f"Missing {name} file {path}{counterpart}"))
    if missing:
        counts = ", ".join(f"{name} {len(stems_there)}" for name, stems_there in present.items())
        problems.append(f"Subset {label} has mismatched folders ({counts}); first missing file: {missing[0][0]}")
        problems += [line for _, line in missing]
    folders = (*image_folders, value_folder)
    pairs = [(stem, {name: files[name][stem] for name in folders}) for stem in stems
             if all(name in files and stem in files[name] for name in folders)]  # fmt: skip
    return SubsetFiles(pairs, files, problems)


def _pairs(subset_dir, image_folders, value_folder, label):
    """`pair_subset`'s pairs; `DataError` with its first problem, if any."""
    subset = pair_subset(subset_dir, image_folders, value_folder, label)
    if subset.problems:
        raise DataError(subset.problems[0])
    return subset.pairs


def list_twoafc(root, split="val", subsets=None):
    """The 2AFC triplets of `split` ("train" or "val") in `subsets` (a name, a list, or None for
    every subset present; BAPPS has `TRAIN_SUBSETS` and `VAL_SUBSETS`), as `TwoAFCRecord`s in
    subset order, then file order::

        records = list_twoafc("dataset", "val", ["traditional", "cnn"])
        records[0].ref, records[0].judge, records[0].subset
    """
    if split not in ("train", "val"):
        raise InputError(f"Unknown 2AFC split {split!r}: expected 'train' or 'val'")
    split_dir = _split_dir(root, "2afc", split)
    records = []
    for subset_dir in _subset_dirs(split_dir, subsets, f"2afc/{split}"):
        label = f"2afc/{split}/{subset_dir.name}"
        for _, paths in _pairs(subset_dir, TWOAFC_IMAGE_FOLDERS, "judge", label):
            judge = read_fraction(paths["judge"], "judge")
            records.append(TwoAFCRecord(paths["ref"], paths["p0"], paths["p1"], judge))
    return records


def list_jnd(root, subsets=None):
    """The JND pairs of `jnd/val` in `subsets` (a name, a list, or None for every subset present;
    BAPPS has `JND_SUBSETS`), as `JNDRecord`s."""
    split_dir = _split_dir(root, "jnd", "val")
    records = []
    for subset_dir in _subset_dirs(split_dir, subsets, "jnd/val"):
        label = f"jnd/val/{subset_dir.name}"
        for _, paths in _pairs(subset_dir, JND_IMAGE_FOLDERS, "same", label):
            records.append(JNDRecord(paths["p0"], paths["p1"], read_fraction(paths["same"], "same")))
    return records


def fingerprint(records, root):
    """What identifies a set of `TwoAFCRecord`s or `JNDRecord`s from the dataset at `root`, for
    comparing it with a later listing: "N triplets, sha256 0123456789abcdef" (or "N pairs"), the
    digest of the files' paths relative to the dataset root, with their judgments, sorted. A file
    added, removed or renamed, or a judgment changed, changes it (an image's pixels do not)."""
    base = resolve_root(root)
    lines = sorted("\t".join([*(os.path.relpath(p, base) for p in record[:-1]), repr(float(record[-1]))]) for record in records)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    kind = "pairs" if records and isinstance(records[0], JNDRecord) else "triplets"
    return f"{len(records)} {kind}, sha256 {digest}"
