"""Distances for many images at once: matched pairs, and all pairs within a set.

`distance_matrix` computes each image's features once and compares them
pairwise, where scoring every pair separately (as the reference's all-pairs
script does) recomputes each image's features n - 1 times.
"""

import numpy as np
from keras import ops

from keras_lpips.errors import InputError
from keras_lpips.inputs import check_values


def paired_distances(metric, images0, images1, batch_size=32, progress=None):
    """d(images0[i], images1[i]) for lists of (H, W, 3) arrays; pairs of one size are batched."""
    if len(images0) != len(images1):
        raise InputError(f"Need as many first as second images. Received {len(images0)} and {len(images1)}")
    distances = np.zeros(len(images0), np.float32)
    by_shape = {}
    for i, (a, b) in enumerate(zip(images0, images1)):
        if a.shape != b.shape:
            raise InputError(f"Pair {i} has images of shapes {a.shape} and {b.shape}")
        by_shape.setdefault(a.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            pair = [np.stack([images0[i] for i in chunk]), np.stack([images1[i] for i in chunk])]
            distances[chunk] = ops.convert_to_numpy(metric(pair))
            if progress:
                progress(len(chunk))
    return distances


def distance_matrix(metric, images, batch_size=32, progress=None):
    """Symmetric (n, n) matrix of distances between n same-size images, zero diagonal."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) < 2:
        raise InputError(f"Need at least two images of one size, shape (n, H, W, 3). Received shape {images.shape}")
    check_values(images, metric.input_range, "images")
    if min(images.shape[1:3]) < metric.min_input_size:
        raise InputError(f"Images of {images.shape[1]}x{images.shape[2]} are too small: need {metric.min_input_size}")
    features = [
        metric.features(images[start : start + batch_size]) for start in range(0, len(images), batch_size)
    ]
    features = [ops.concatenate(per_layer, axis=0) for per_layer in zip(*features)]
    n = len(images)
    matrix = np.zeros((n, n), np.float32)
    for i in range(n - 1):
        others = [f[i + 1 :] for f in features]
        repeated = [ops.repeat(f[i : i + 1], n - 1 - i, axis=0) for f in features]
        maps = metric.compare(repeated, others)
        row = ops.convert_to_numpy(sum(ops.mean(m, axis=(1, 2, 3)) for m in maps))
        matrix[i, i + 1 :] = matrix[i + 1 :, i] = row
        if progress:
            progress(n - 1 - i)
    return matrix
