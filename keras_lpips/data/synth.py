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
side is at most 256 px), or procedurally generated ones (gradients, value-noise and stripe
textures, antialiased shapes). Distortions come from traditional families: Gaussian noise,
blur, JPEG, colour shift, contrast, saturation, brightness, pixelation, posterisation,
sharpening and small smooth warps, one to three per patch with random strengths.

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
from PIL import Image, ImageDraw, ImageFilter

from keras_lpips import disk_space, files
from keras_lpips.errors import InputError, OutputError
from keras_lpips.images import read_image

PATCH = 64
RATERS_2AFC = 5
RATERS_JND = 3
MAX_SOURCE_SIDE = 256  # images from a folder are downscaled so their shorter side is at most this

TRAIN, VAL, JND = 0, 1, 2  # seed streams
SUBSET = "traditional"

NOTE = """This folder was written by keras-lpips' `synthesize` (keras-lpips data synth).
It has the BAPPS layout, but its judgments are SIMULATED PROXIES, not human ones:
judge = fraction of 5 simulated raters preferring p1, each with probability
sigmoid(4 * (d0 - d1) / ((d0 + d1) / 2 + 0.01)), where d is a multi-scale RMSE from ref;
same = fraction of 3 simulated raters calling the pair identical, each with probability
exp(-(d / 0.03)^2). Use it to exercise code, never to report a result.
"""


# --- source patches ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grid(size):
    """(y, x) coordinate grids of a size x size patch, in pixels (float32)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _two_colours(rng, field):
    """field (H, W) in [0, 1] -> (H, W, 3) blend of two random colours."""
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    return c0 + field[..., None] * (c1 - c0)


def _gradient(rng, size):
    angle = rng.uniform(0, 2 * np.pi)
    y, x = _grid(size)
    t = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
    t -= t.min()
    return _two_colours(rng, t / (t.max() + 1e-6))


def _value_noise(rng, size):
    cells = int(rng.integers(3, 17))
    grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))
    return _two_colours(rng, np.clip(field, 0, 1))


def _stripes(rng, size):
    angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.05, 0.6), rng.uniform(0, 2 * np.pi)
    y, x = _grid(size)
    along = x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))
    wave = 0.5 + 0.5 * np.sin(np.float32(freq) * along + np.float32(phase))
    if rng.random() < 0.5:
        wave = (wave > 0.5).astype(np.float32)
    return _two_colours(rng, wave)


def procedural_patch(rng, size=PATCH):
    """A seeded synthetic patch (uint8, size x size x 3): a gradient, one or two textures
    (value noise, stripes), and up to four shapes drawn at twice the size and box-downscaled."""
    image = _gradient(rng, size)
    for texture in rng.permutation(2)[: int(rng.integers(1, 3))]:
        weight = np.float32(rng.uniform(0.2, 0.8))
        image = (1 - weight) * image + weight * (_value_noise, _stripes)[texture](rng, size)
    shapes = int(rng.integers(0, 5))
    if not shapes:
        return _u8(image)
    big = 2 * size
    canvas = Image.fromarray(_u8(image)).resize((big, big), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for _ in range(shapes):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * big
        w, h = rng.uniform(0.1, 0.6, 2) * big
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            points = rng.uniform(0, big, (int(rng.integers(3, 6)), 2))
            draw.polygon([tuple(p) for p in points], fill=colour)
    return np.asarray(canvas.resize((size, size), Image.BOX))


class _Folder:
    """Random crops of the images in a folder, each image downscaled and decoded once (LRU)."""

    def __init__(self, folder):
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise InputError(f"Image folder {folder} is not a directory")
        self.paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in files.IMAGE_SUFFIXES)
        if not self.paths:
            raise InputError(f"No images ({', '.join(files.IMAGE_SUFFIXES)}) in {folder}")
        self.folder = folder
        self._load = functools.lru_cache(maxsize=256)(self._read)

    def _read(self, index):
        """The image as uint8 RGB, read as every image is (`images.read_image`: 16-bit and other
        pixel formats scaled right); a multi-frame file gives its first frame, a source of crops."""
        image = Image.fromarray(np.round(read_image(self.paths[index], frame=0) * 255).astype(np.uint8))
        short = min(image.size)
        if short > MAX_SOURCE_SIDE:
            scale = MAX_SOURCE_SIDE / short
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.BOX)
        return np.asarray(image)

    def patch(self, rng, size=PATCH):
        for _ in range(len(self.paths) + 10):
            image = self._load(int(rng.integers(len(self.paths))))
            h, w = image.shape[:2]
            if h >= size and w >= size:
                y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
                return image[y : y + size, x : x + size]
        raise InputError(f"No image in {self.folder} is at least {size}x{size} pixels")


# --- distortions (uint8 in, uint8 out; strength s in (0, 1]) ---------------------------------


def _u8(x):
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _noise(x, s, rng):
    return _u8(x + rng.normal(0, 2 + 40 * s, x.shape))


def _blur(x, s, rng):
    return np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(0.3 + 2.7 * s)))


def _jpeg(x, s, rng):
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, format="JPEG", quality=int(round(90 - 85 * s)))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


def _colour_shift(x, s, rng):
    direction = rng.normal(size=3)
    return _u8(x + 50 * s * direction / (np.linalg.norm(direction) + 1e-9))


def _contrast(x, s, rng):
    factor = 1 + 0.6 * s if rng.random() < 0.5 else 1 / (1 + 1.5 * s)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _u8((x - mean) * factor + mean)


def _saturation(x, s, rng):
    factor = 1 + 0.8 * s if rng.random() < 0.5 else 1 - 0.8 * s
    luma = (x.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
    return _u8(luma + factor * (x - luma))


def _brightness(x, s, rng):
    return _u8(x.astype(np.float64) + (50 * s if rng.random() < 0.5 else -50 * s))


def _pixelate(x, s, rng):
    block = 2 + int(round(6 * s))
    small = Image.fromarray(x).resize((max(1, x.shape[1] // block), max(1, x.shape[0] // block)), Image.BOX)
    return np.asarray(small.resize((x.shape[1], x.shape[0]), Image.NEAREST))


def _posterise(x, s, rng):
    levels = max(2, int(round(2 ** (5 - 3.5 * s))))
    step = 255 / (levels - 1)
    return _u8(np.round(x / step) * step)


def _sharpen(x, s, rng):
    blurred = np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float64)
    return _u8(x + (0.5 + 2.5 * s) * (x - blurred))


def _warp(x, s, rng):
    """A smooth random warp: a 5x5 grid of control points moved by up to ~(0.5 + 3 s) px, each
    cell mapped bilinearly (Pillow's MESH transform)."""
    h, w = x.shape[:2]
    cells = 4
    xs, ys = np.linspace(0, w, cells + 1), np.linspace(0, h, cells + 1)
    shift = rng.normal(0, (0.5 + 3.0 * s) / 2, (cells + 1, cells + 1, 2))
    shift[0, :, 1] = shift[-1, :, 1] = 0  # keep the border on the border: no empty corners
    shift[:, 0, 0] = shift[:, -1, 0] = 0
    src = np.stack(np.meshgrid(xs, ys), axis=-1) + shift  # (row, col, (x, y))
    mesh = []
    for r in range(cells):
        for c in range(cells):
            box = (int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))
            quad = (*src[r, c], *src[r + 1, c], *src[r + 1, c + 1], *src[r, c + 1])  # NW, SW, SE, NE
            mesh.append((box, tuple(float(v) for v in quad)))
    return np.asarray(Image.fromarray(x).transform((w, h), Image.Transform.MESH, mesh, Image.BILINEAR))


DISTORTIONS = {
    "noise": _noise,
    "blur": _blur,
    "jpeg": _jpeg,
    "colour_shift": _colour_shift,
    "contrast": _contrast,
    "saturation": _saturation,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "posterise": _posterise,
    "sharpen": _sharpen,
    "warp": _warp,
}
_FAMILIES = sorted(DISTORTIONS)


def distort(patch, rng, families=None, strength=None):
    """Applies 1-3 random distortion families (or `families`) with random strengths (or `strength`)
    to a uint8 patch; returns (distorted uint8 patch, [(family, strength)])."""
    if families is None:
        families = list(rng.choice(_FAMILIES, size=int(rng.integers(1, 4)), replace=False))
    applied = []
    out = patch
    for family in families:
        s = float(rng.uniform(0.05, 1.0)) if strength is None else float(strength)
        out = DISTORTIONS[family](out, s, rng)
        applied.append((str(family), s))
    return out, applied


def proxy_distance(a, b):
    """The crude perceptual proxy behind the simulated judgments: RMSE in [0, 1] units, averaged
    over three scales (64, 32 and 16 px, box-downsampled)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / 255.0
    total = 0.0
    for _ in range(3):
        total += float(np.sqrt(np.mean(diff**2)))
        h, w = diff.shape[0] // 2 * 2, diff.shape[1] // 2 * 2
        diff = diff[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
    return total / 3


def preference_probability(d0, d1):
    """P(a rater prefers p1) for proxy distances d0, d1 from the reference (Weber-like: relative difference)."""
    relative = (d0 - d1) / ((d0 + d1) / 2 + 0.01)
    return float(1 / (1 + np.exp(-4 * relative)))


def same_probability(d):
    """P(a rater calls a pair identical) for a proxy distance d (0.03 ~ a just noticeable difference)."""
    return float(np.exp(-((d / 0.03) ** 2)))


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
    family = _FAMILIES[int(rng.integers(len(_FAMILIES)))]
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


def _count(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


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
    n_train, n_val = _count("n_train", n_train), _count("n_val", n_val)
    n_jnd = n_val if n_jnd is None else _count("n_jnd", n_jnd)
    seed = _count("seed", seed)
    workers = max(1, _count("workers", workers))
    if n_train + n_val + n_jnd == 0:
        raise InputError("Nothing to synthesize: n_train, n_val and n_jnd are all 0")
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
    folder = _Folder(images) if images is not None else None
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
            raise OutputError(f"Cannot write to {out}: {error.strerror or error}") from None
        raise
    return out
