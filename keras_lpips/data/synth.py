"""A small synthetic dataset in the BAPPS layout, for exercising the training and evaluation
pipeline without the real download.

**The judgments are proxies, not human ones.** Each distorted patch's distance from its
reference is measured with a crude multi-scale RMSE; the probability that a rater prefers p1 is
a logistic function of the relative difference of the two distances, and 5 simulated raters
vote on it (binomially), so `judge` takes the values 0, 0.2, ..., 1 like BAPPS's validation
set. JND pairs are a patch and a mildly distorted copy; 3 simulated raters each call them
identical with probability exp(-(d / 0.03)^2). A metric trained on this set learns this proxy,
not human perception: use it to test code, never to report a result.

Patches are 64 x 64 random crops of the images in a folder (downscaled first so their shorter
side is at most 256 px), or procedurally generated ones (`synth_patches`). Distortions come from
traditional families (`distortions`): Gaussian noise, blur, JPEG, colour shift, contrast,
saturation, brightness, pixelation, posterisation, sharpening and small smooth warps, one to
three per patch with random strengths.

Every patch is drawn from its own generator seeded with (seed, stream, index), so a run is
byte-for-byte reproducible, and the validation set does not depend on the size of the
training set. Only numpy and Pillow are used.
"""

import collections
import concurrent.futures
import contextlib
import functools
import io
import os
import pathlib

import numpy as np
from PIL import Image

from keras_lpips import disk_space, files
from keras_lpips.argument_checks import check_integer
from keras_lpips.data.distortions import FAMILIES, distort, preference_probability, proxy_distance, same_probability
from keras_lpips.data.synth_patches import Folder, procedural_patch
from keras_lpips.errors import InputError

RATERS_2AFC = 5
RATERS_JND = 3

TRAIN, VAL, JND = 0, 1, 2  # seed streams
SUBSET = "traditional"

NOTE = """This folder was written by keras-lpips' `synthesize` (keras-lpips data synth).
It has the BAPPS layout, but its judgments are SIMULATED PROXIES, not human ones:
judge = fraction of 5 simulated raters preferring p1, each with probability
sigmoid(4 * (d0 - d1) / ((d0 + d1) / 2 + 0.01)), where d is a multi-scale RMSE from ref;
same = fraction of 3 simulated raters calling the pair identical, each with probability
exp(-(d / 0.03)^2). Use it to exercise code, never to report a result.
"""


# --- writing ----------------------------------------------------------------------------------


PNG = {"format": "PNG", "compress_level": 1}
NPY_BYTES = 136  # a judge or same file: np.save's 128-byte header and one float64
SAMPLES = 8  # items of each kind encoded up front to estimate the bytes each takes on disk
IN_FLIGHT_PER_WORKER = 4  # items queued per thread: what the writer holds, whatever the count


def _save_png(array, path):
    Image.fromarray(array).save(path, **PNG)


def _save_fraction(value, path):
    with open(path, "wb") as f:
        np.save(f, np.array([value], dtype=np.float64))


def _twoafc_item(source, rng):
    ref = source(rng)
    p0, _ = distort(ref, rng)
    p1, _ = distort(ref, rng)
    p = preference_probability(proxy_distance(ref, p0), proxy_distance(ref, p1))
    return ref, p0, p1, rng.binomial(RATERS_2AFC, p) / RATERS_2AFC


def _jnd_item(source, rng):
    p0 = source(rng)
    family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    p1, _ = distort(p0, rng, families=[family], strength=float(rng.uniform(0, 1) ** 2))
    return p0, p1, rng.binomial(RATERS_JND, same_probability(proxy_distance(p0, p1))) / RATERS_JND


def _write_item(source, seed, stream, index, folder):
    """Generates item `index` of `stream` from its own generator and writes its files into `folder`."""
    rng = np.random.default_rng([seed, stream, index])
    stem = f"{index:06d}"
    if stream == JND:
        p0, p1, same = _jnd_item(source, rng)
        images, value = {"p0": p0, "p1": p1}, ("same", same)
    else:
        ref, p0, p1, judge = _twoafc_item(source, rng)
        images, value = {"ref": ref, "p0": p0, "p1": p1}, ("judge", judge)
    for name, image in images.items():
        _save_png(image, folder / name / f"{stem}.png")
    _save_fraction(value[1], folder / value[0] / f"{stem}.npy")


def item_bytes(source, seed, stream, block=4096):
    """Bytes one item of `stream` (a triplet, or a JND pair) takes on disk, estimated from the
    first `SAMPLES` items encoded in memory: each PNG and the judgment file rounded up to whole
    blocks of `block` bytes, averaged, plus a quarter for items larger than those sampled."""
    total = 0
    for index in range(SAMPLES):
        rng = np.random.default_rng([seed, stream, index])
        images = _jnd_item(source, rng)[:2] if stream == JND else _twoafc_item(source, rng)[:3]
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, **PNG)
            total += -(-buffer.tell() // block) * block
        total += -(-NPY_BYTES // block) * block
    return int(1.25 * total / SAMPLES)


def _block_size(path):
    """The allocation unit of the file system that holds (or would hold) `path`; 4096 where unknown."""
    for folder in (pathlib.Path(os.path.abspath(path)), *pathlib.Path(os.path.abspath(path)).parents):
        with contextlib.suppress(OSError, AttributeError):
            if folder.is_dir():
                return os.statvfs(folder).f_frsize or 4096
    return 4096


def _write_items(write, count, workers, done):
    """Calls `write(index)` for index in range(count) on `workers` threads and `done()` after each,
    in order, from this thread. At most `IN_FLIGHT_PER_WORKER` items per thread are queued, so
    memory stays bounded whatever `count`; an error or an interrupt cancels the queued items and
    waits for the running ones (no thread writes after this returns or raises)."""
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        try:
            for index in range(count):
                pending.append(pool.submit(write, index))
                if len(pending) >= IN_FLIGHT_PER_WORKER * workers:
                    pending.popleft().result()
                    done()
            while pending:
                pending.popleft().result()
                done()
        finally:
            for future in pending:
                future.cancel()


def synthesize(out, n_train, n_val, images=None, seed=0, n_jnd=None, progress=None, workers=4):
    """Writes a synthetic BAPPS-layout set into `out` and returns `out` (a Path):

        out/2afc/train/traditional/{ref,p0,p1,judge}   n_train triplets
        out/2afc/val/traditional/{ref,p0,p1,judge}     n_val triplets
        out/jnd/val/traditional/{p0,p1,same}           n_jnd pairs (default: n_val)

    Patches are random 64x64 crops of the images in the folder `images`, or procedural ones
    when it is None. The judgments are simulated proxies (see the module docstring), not human
    ones. The same arguments give byte-identical files, whatever `workers` (threads; PNG
    encoding and file writes release the GIL). `progress(done, total)` is called, from the
    calling thread, after each triplet or pair. Each subset is written to a temporary folder
    next to its place and renamed into place when complete (`files.atomic_directory`); existing
    non-empty subset folders are an `InputError`.

    The items stream through a bounded queue (`_write_items`): memory does not grow with the
    counts. Before any is written, the set's size on disk (`item_bytes` per triplet and pair) is
    checked against the free space (`DiskFullError` naming both). A failure or an interrupt
    removes the unfinished subset's temporary folder and the folders this call created that
    are left empty; one killed outright leaves a temporary folder that the next call removes.
    """
    n_train, n_val = check_integer("n_train", n_train, 0), check_integer("n_val", n_val, 0)
    n_jnd = n_val if n_jnd is None else check_integer("n_jnd", n_jnd, 0)
    seed = check_integer("seed", seed, 0)
    workers = max(1, check_integer("workers", workers, 0))
    if n_train + n_val + n_jnd == 0:
        raise InputError(f"Nothing to synthesize: no triplet or pair asked for (n_train={n_train}, n_val={n_val}, n_jnd={n_jnd})")
    out = pathlib.Path(out)
    plan = [
        (TRAIN, n_train, out / "2afc" / "train" / SUBSET, ("ref", "p0", "p1", "judge")),
        (VAL, n_val, out / "2afc" / "val" / SUBSET, ("ref", "p0", "p1", "judge")),
        (JND, n_jnd, out / "jnd" / "val" / SUBSET, ("p0", "p1", "same")),
    ]
    plan = [step for step in plan if step[1] > 0]
    for _, _, target, _ in plan:
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InputError(f"{target} already exists and is not empty; choose another output folder or delete it")
    folder = Folder(images) if images is not None else None
    source = folder.patch if folder is not None else procedural_patch
    block = _block_size(out)
    sizes = {stream: item_bytes(source, seed, TRAIN if stream == VAL else stream, block) for stream, *_ in plan}
    needed = sum(count * sizes[stream] for stream, count, *_ in plan)
    total, finished = sum(step[1] for step in plan), 0
    disk_space.check_disk_space(out, needed, f"A synthetic set of {total:,} triplets and pairs")

    def done():
        nonlocal finished
        finished += 1
        if progress is not None:
            progress(finished, total)

    parents = [out] + [folder for _, _, target, _ in plan for folder in (target.parent, target.parent.parent)]
    created = [path for path in parents if not path.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stream, count, target, names in plan:
            # An empty target folder is replaced; the threads are done before the staging folder is renamed or removed.
            with files.atomic_directory(target, needed=count * sizes[stream]) as staging:
                for name in names:
                    (staging / name).mkdir()
                _write_items(functools.partial(_write_item, source, seed, stream, folder=staging), count, workers, done)
        files.atomic_write(out / "SYNTHETIC_README.txt", NOTE)
    except BaseException as error:
        for path in sorted(set(created), key=lambda p: len(p.parts), reverse=True):  # innermost first
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: completed subsets stay
        if disk_space.disk_full_reason(error):
            raise disk_space.disk_full_error(out, needed, disk_space.disk_full_reason(error)) from None
        if isinstance(error, OSError):  # the source images' errors are InputErrors already: this is the output
            raise files.output_error(out, error) from None
        raise
    return out
