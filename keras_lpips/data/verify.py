"""Checking a BAPPS-layout folder before training on it: layout, counts, and every file readable."""

import pathlib

from PIL import Image, UnidentifiedImageError

from keras_lpips.data.bapps import (
    JND_IMAGE_FOLDERS,
    TWOAFC_IMAGE_FOLDERS,
    available_subsets,
    pair_subset,
    read_fraction,
    resolve_root,
)
from keras_lpips.errors import InputError
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


def verify_dataset(root, progress=None):
    """Checks the BAPPS layout under `root` (the folder holding `2afc/` and/or `jnd/`, or its
    parent holding `dataset/`): every split and subset present (hidden folders and `__MACOSX`
    are none) has all its folders, the same files in each (`pair_subset`), each a regular file
    (no folder named `x.png`, broken link or device), every image opens and passes Pillow's `verify()`
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
            found = pair_subset(split_dir / subset, image_folders, value_folder, label)
            problems += [f"{label}: {problem}" for problem in found.problems]
            counts[label] = len(found.pairs)
            for name, files in found.files.items():
                to_read += [(label, "value" if name == value_folder else "image", path, name) for path in files.values()]
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
