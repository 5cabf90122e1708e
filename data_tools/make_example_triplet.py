"""Writes the example triplet `examples/{ref,p0,p1}.png` (64x64 RGB).

`ref` is a procedural scene (colour gradients, a few soft-edged shapes, mild
texture); `p0` is a strong distortion of it (heavy blur, colour cast, noise) and
`p1` a mild one (slight 4x4 blockiness, faint noise), so `p1` is the closer one.
All pixel work is numpy with a fixed seed, so the PNGs are byte-for-byte
reproducible; Pillow only encodes them.

    python data_tools/make_example_triplet.py [--out-dir examples]
"""

import argparse
import pathlib

import numpy as np
from PIL import Image

SIZE = 64
SEED = 20180111  # LPIPS arXiv submission date


def blur(img, sigma):
    """Separable Gaussian blur of an (H, W, C) image with edge padding."""
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(img, pad, mode="edge")
        img = sum(w * np.take(padded, np.arange(k, k + img.shape[axis]), axis=axis) for k, w in enumerate(taps))
    return img


def soft(signed_distance):
    """Anti-aliased mask from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)[..., None]


def make_ref(rng):
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    u, v = x / SIZE, y / SIZE
    img = np.stack([0.25 + 0.45 * v + 0.1 * np.sin(6 * u),  # warm towards the bottom
                    0.45 + 0.25 * np.cos(3 * u * v + 1.0),
                    0.85 - 0.5 * v + 0.08 * np.cos(5 * u)], axis=-1)
    sun = soft(np.hypot(x - 46, y - 17) - 9)
    img = img * (1 - sun) + sun * np.array([0.98, 0.85, 0.3])
    box = soft(np.maximum(np.abs(x - 20) - 11, np.abs(y - 44) - 8))
    img = img * (1 - box) + box * np.array([0.2, 0.35, 0.15])
    ring = soft(np.abs(np.hypot(x - 40, y - 47) - 7) - 1.5)
    img = img * (1 - ring) + ring * np.array([0.55, 0.1, 0.45])
    texture = blur(rng.normal(0.0, 0.08, (SIZE, SIZE, 1)), 1.0)
    return img + texture


def to_uint8(img):
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent.parent / "examples")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    ref = make_ref(rng)
    p0 = blur(ref, 2.5) * np.array([1.15, 0.92, 0.75]) + 0.04 + rng.normal(0.0, 0.06, ref.shape)
    blocks = ref.reshape(SIZE // 4, 4, SIZE // 4, 4, 3).mean(axis=(1, 3)).repeat(4, axis=0).repeat(4, axis=1)
    p1 = 0.7 * ref + 0.3 * blocks + rng.normal(0.0, 0.012, ref.shape)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, img in (("ref", ref), ("p0", p0), ("p1", p1)):
        Image.fromarray(to_uint8(img), "RGB").save(args.out_dir / f"{name}.png")
        print("wrote", args.out_dir / f"{name}.png")


if __name__ == "__main__":
    main()
