"""A tiny BAPPS-layout dataset for tests, written in a few milliseconds with numpy and Pillow.

`make_tiny_bapps(root, ...)` writes::

    root/2afc/train/traditional/{ref,p0,p1,judge}   n_train triplets
    root/2afc/val/traditional/{ref,p0,p1,judge}     n_val triplets
    root/jnd/val/traditional/{p0,p1,same}           n_jnd pairs

Each reference is a smooth random 64x64 image; p0 and p1 add Gaussian noise of two different
strengths, and the judge (fraction of 5 "raters" preferring p1) favours the less noisy one, so
there is a learnable signal. JND pairs are a reference and a copy with weak or strong noise,
`same` high for weak noise. Judges and `same` values are multiples of 0.2 and 1/3.
"""

import pathlib

import numpy as np
from PIL import Image


def _smooth_image(rng, size):
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))


def _noisy(image, sigma, rng):
    return np.clip(np.round(image + rng.normal(0, sigma, image.shape)), 0, 255).astype(np.uint8)


def _png(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _npy(value, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array([value], dtype=np.float64))


def _twoafc(folder, count, rng, size):
    for i in range(count):
        stem = f"{i:06d}"
        ref = _smooth_image(rng, size)
        sigma0, sigma1 = rng.uniform(2, 40, 2)
        _png(ref, folder / "ref" / f"{stem}.png")
        _png(_noisy(ref, sigma0, rng), folder / "p0" / f"{stem}.png")
        _png(_noisy(ref, sigma1, rng), folder / "p1" / f"{stem}.png")
        p1_preferred = 1 / (1 + np.exp(-(sigma0 - sigma1) / 4))
        _npy(rng.binomial(5, p1_preferred) / 5, folder / "judge" / f"{stem}.npy")


def _jnd(folder, count, rng, size):
    for i in range(count):
        stem = f"{i:06d}"
        ref = _smooth_image(rng, size)
        sigma = rng.uniform(0.5, 3) if i % 2 == 0 else rng.uniform(20, 40)
        _png(ref, folder / "p0" / f"{stem}.png")
        _png(_noisy(ref, sigma, rng), folder / "p1" / f"{stem}.png")
        _npy(rng.binomial(3, np.exp(-((sigma / 5) ** 2))) / 3, folder / "same" / f"{stem}.npy")


def make_tiny_bapps(root, n_train=6, n_val=4, n_jnd=4, seed=0, size=64):
    """Writes a tiny BAPPS-layout dataset under `root` (subset "traditional" everywhere; a count of
    0 skips that split) and returns `root` as a Path. Deterministic for a seed."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    if n_train:
        _twoafc(root / "2afc" / "train" / "traditional", n_train, rng, size)
    if n_val:
        _twoafc(root / "2afc" / "val" / "traditional", n_val, rng, size)
    if n_jnd:
        _jnd(root / "jnd" / "val" / "traditional", n_jnd, rng, size)
    return root
