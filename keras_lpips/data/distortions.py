"""The synthetic set's distortions and its proxy for human judgments (`keras_lpips.data.synth`).

Distortions come from traditional families: Gaussian noise, blur, JPEG, colour shift, contrast,
saturation, brightness, pixelation, posterisation, sharpening and small smooth warps; each takes a
uint8 patch and a strength s in (0, 1] and returns a uint8 patch. The proxy distance behind the
simulated judgments is a crude multi-scale RMSE, not a perceptual measure."""

import io

import numpy as np
from PIL import Image, ImageFilter

from keras_lpips.data.synth_patches import to_uint8


def _noise(x, s, rng):
    return to_uint8(x + rng.normal(0, 2 + 40 * s, x.shape))


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
    return to_uint8(x + 50 * s * direction / (np.linalg.norm(direction) + 1e-9))


def _contrast(x, s, rng):
    factor = 1 + 0.6 * s if rng.random() < 0.5 else 1 / (1 + 1.5 * s)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return to_uint8((x - mean) * factor + mean)


def _saturation(x, s, rng):
    factor = 1 + 0.8 * s if rng.random() < 0.5 else 1 - 0.8 * s
    luma = (x.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
    return to_uint8(luma + factor * (x - luma))


def _brightness(x, s, rng):
    return to_uint8(x.astype(np.float64) + (50 * s if rng.random() < 0.5 else -50 * s))


def _pixelate(x, s, rng):
    block = 2 + int(round(6 * s))
    small = Image.fromarray(x).resize((max(1, x.shape[1] // block), max(1, x.shape[0] // block)), Image.BOX)
    return np.asarray(small.resize((x.shape[1], x.shape[0]), Image.NEAREST))


def _posterise(x, s, rng):
    levels = max(2, int(round(2 ** (5 - 3.5 * s))))
    step = 255 / (levels - 1)
    return to_uint8(np.round(x / step) * step)


def _sharpen(x, s, rng):
    blurred = np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float64)
    return to_uint8(x + (0.5 + 2.5 * s) * (x - blurred))


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
FAMILIES = sorted(DISTORTIONS)


def distort(patch, rng, families=None, strength=None):
    """Applies 1-3 random distortion families (or `families`) with random strengths (or `strength`)
    to a uint8 patch; returns (distorted uint8 patch, [(family, strength)])."""
    if families is None:
        families = list(rng.choice(FAMILIES, size=int(rng.integers(1, 4)), replace=False))
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
