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
    if frames > 1:  # refused by `read_image`, hence by the datasets (`pipeline.multi_frame_problem`)
        return f"multi-frame image {path}: it has {frames} frames (an animated or multi-page image); fit and eval read single-frame images only"
    return None


def verify_dataset(root, progress=None):
    """Checks the BAPPS layout under `root` (the folder holding `2afc/` and/or `jnd/`, or its
    parent holding `dataset/`): every split and subset present (hidden folders and `__MACOSX`
    are none) has all its folders, the same files in each (`pair_subset`), each a regular file
    (no folder named `x.png`, broken link or device), every image opens, holds one frame and passes
    Pillow's `verify()` (PNG CRCs), every image is then decoded as `fit` and `eval` decode it
    (`pipeline.unreadable_images`: a file `read_image` refuses, e.g. a 32-bit integer TIFF, is a
    problem, in the words `fit` and `eval` would stop with), and every .npy holds one number in
    [0, 1]. Splits that are absent (e.g. no 2afc/train) are not problems. Decoding loads
    TensorFlow.

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
    images = sum(kind == "image" for _, kind, _, _ in to_read)
    total, found, decodable = len(to_read) + images, [], []
    for done, (label, kind, path, name) in enumerate(to_read, 1):
        if kind == "image":
            problem = _check_image(path)
            if problem is None:
                decodable.append((done, label, path))
        else:
            try:
                read_fraction(path, name)
                problem = None
            except InputError as error:
                problem = str(error)
        if problem:
            found.append((done, f"{label}: {problem}"))
        if progress is not None:
            progress(done, total)
    found += _pipeline_problems(decodable, lambda done: progress and progress(len(to_read) + images - len(decodable) + done, total))
    return VerifyReport(problems + [line for _, line in sorted(found)], counts, base)


def _pipeline_problems(images, progress):
    """[(position, "LABEL: problem")] of the `images` [(position, label, path)] that the datasets
    of `fit` and `eval` cannot read, in their words: decoded as they decode them
    (`pipeline.unreadable_images`, which loads TensorFlow), so that a file `read_image`
    refuses, or one TensorFlow's decoder refuses, is found here first."""
    if not images:
        return []
    from keras_lpips.data.pipeline import unreadable_images

    where = {str(path): (position, label) for position, label, path in images}
    found = unreadable_images([path for _, _, path in images], progress=lambda done, _: progress(done))
    return [(where[path][0], f"{where[path][1]}: {problem}") for path, problem in found]
