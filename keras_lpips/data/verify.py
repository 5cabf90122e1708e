"""Checking a BAPPS-layout folder before training on it: layout, counts, and every file readable."""

import pathlib

from PIL import Image, UnidentifiedImageError

from keras_lpips.data.bapps import (
    JND_IMAGE_FOLDERS,
    TWOAFC_IMAGE_FOLDERS,
    available_subsets,
    folder_files,
    read_fraction,
    resolve_root,
)
from keras_lpips.errors import InputError
from keras_lpips.files import TF_IMAGE_SUFFIXES
from keras_lpips.images import frame_count

SPLITS = (("2afc", "train", TWOAFC_IMAGE_FOLDERS, "judge"), ("2afc", "val", TWOAFC_IMAGE_FOLDERS, "judge"),
          ("jnd", "val", JND_IMAGE_FOLDERS, "same"))  # fmt: skip


class VerifyReport(list):
    """The problems found (one line each; empty means the dataset is fine), with `counts`:
    {"2afc/val/traditional": number of complete triplets or pairs, ...} and `root`."""

    def __init__(self, problems=(), counts=None, root=None):
        super().__init__(problems)
        self.counts = dict(counts or {})
        self.root = root


def _check_image(path):
    try:
        with Image.open(path) as image:
            frames = frame_count(image)
        with Image.open(path) as image:
            image.verify()  # reads every chunk and checks PNG CRCs: catches truncation and bit flips
    except UnidentifiedImageError:
        return f"unreadable image {path}: not an image Pillow recognises"
    except Exception as error:  # Pillow raises many kinds (SyntaxError, OSError, struct.error, ...)
        return f"unreadable image {path}: {error or type(error).__name__}"
    if frames > 1:  # TensorFlow's decoders, which training uses, would read the first frame only
        return f"multi-frame image {path}: it has {frames} frames (animated), training would read only the first"
    return None


def _listing(folder, suffixes, label, problems):
    """`folder_files` of `folder`, its problems (and a folder that cannot be listed) appended."""
    try:
        files, bad = folder_files(folder, suffixes)
    except OSError as error:
        problems.append(f"{label}: cannot list folder {folder} ({error.strerror or error})")
        return {}, {}
    problems += [f"{label}: {problem}" for problem in bad.values()]
    return files, bad


def _check_subset(subset_dir, image_folders, value_folder, label, problems):
    """Appends the subset's problems; returns ([(kind, path, folder name)] to read, complete count).
    An entry that is no readable file is a problem of its own, not also a missing file."""
    if not any(subset_dir.iterdir()):
        problems.append(f"{label}: empty subset ({subset_dir} has nothing in it)")
        return [], 0
    folders, present = {}, {}
    for name in (*image_folders, value_folder):
        folder = subset_dir / name
        if not folder.is_dir():
            problems.append(f"{label}: missing folder {folder}")
            continue
        folders[name], bad = _listing(folder, (".npy",) if name == value_folder else TF_IMAGE_SUFFIXES, label, problems)
        present[name] = folders[name].keys() | bad.keys()
    if not folders:
        return [], 0
    if not any(present.values()):
        problems.append(f"{label}: empty subset ({subset_dir} has no files)")
        return [], 0
    counts = {name: len(stems) for name, stems in present.items()}
    if len(set(counts.values())) > 1:
        problems.append(f"{label}: folder counts differ ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    complete = 0
    for stem in sorted(set().union(*present.values())):
        have = [files[stem] for files in folders.values() if stem in files]
        missing = [name for name in folders if stem not in present[name]]
        image_suffix = next((p.suffix for p in have if p.suffix.lower() != ".npy"), ".png")
        for name in missing:
            suffix = ".npy" if name == value_folder else image_suffix
            counterpart = f" (its counterpart {have[0]} exists)" if have else ""
            problems.append(f"{label}: missing file {subset_dir / name / (stem + suffix)}{counterpart}")
        complete += len(have) == len(image_folders) + 1
    to_read = []
    for name, files in folders.items():
        kind = "value" if name == value_folder else "image"
        to_read += [(kind, path, name) for path in files.values()]
    return to_read, complete


def verify_dataset(root, progress=None):
    """Checks the BAPPS layout under `root` (the folder holding `2afc/` and/or `jnd/`, or its
    parent holding `dataset/`): every split and subset present (hidden folders and `__MACOSX`
    are none) has all its folders, the same files in each, each a regular file (no folder
    named `x.png`, broken link or device), every image opens and passes Pillow's `verify()`
    (PNG CRCs), and every .npy holds one number in [0, 1]. Splits that are absent (e.g. no 2afc/train) are not problems.

    Returns a `VerifyReport`: a list of problems, one line each naming the file or folder
    (empty: the dataset is fine), with `.counts` per subset. `progress(done, total)` is called
    as files are read.
    """
    try:
        base = resolve_root(root)
    except InputError as error:
        return VerifyReport([str(error)], root=pathlib.Path(root))
    problems, counts, to_read = [], {}, []
    found_any = False
    for kind, split, image_folders, value_folder in SPLITS:
        split_dir = base / kind / split
        if not split_dir.is_dir():
            continue
        found_any = True
        subsets = available_subsets(split_dir)
        if not subsets:
            problems.append(f"{kind}/{split}: no subset folders in {split_dir}")
        for subset in subsets:
            label = f"{kind}/{split}/{subset}"
            files, counts[label] = _check_subset(split_dir / subset, image_folders, value_folder, label, problems)
            to_read += [(label, *item) for item in files]
    if not found_any:
        problems.append(f"no 2afc/train, 2afc/val or jnd/val folder in {base}")
    for done, (label, kind, path, name) in enumerate(to_read, 1):
        if kind == "image":
            problem = _check_image(path)
        else:
            try:
                read_fraction(path, name)
                problem = None
            except InputError as error:
                problem = str(error)
        if problem:
            problems.append(f"{label}: {problem}")
        if progress is not None:
            progress(done, len(to_read))
    return VerifyReport(problems, counts, base)
