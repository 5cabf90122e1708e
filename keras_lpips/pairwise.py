"""Distances for many images at once: matched pairs, and all pairs within a set.

`distance_matrix` computes each image's features once and compares them
pairwise, where scoring every pair separately (as the reference's all-pairs
script does) recomputes each image's features n - 1 times. The comparisons run
in chunks of pairs through one traced function (TensorFlow backend), so that
32 images take a few dozen calls, not 496 (benchmarks/matrix_speed.py).
"""

import weakref

import keras
import numpy as np
from keras import ops

from keras_lpips.errors import InputError
from keras_lpips.inputs import check_values
from keras_lpips.model import LPIPS


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


# Bytes of per-layer feature differences one chunk of pair comparisons may hold (each pair
# holds its two features' difference, squared, weighted: about 3 copies of one image's features).
CHUNK_BYTES = 256 * 2**20
MAX_CHUNK = 512
_FUNCTIONS = weakref.WeakKeyDictionary()


def distance_matrix(metric, images, batch_size=32, progress=None):
    """Symmetric (n, n) matrix of distances between n same-size images, zero diagonal.

    `metric` is an `LPIPS` or an `ExportedMetric`; `images` in its input_range. An `LPIPS`
    computes each image's features once, `batch_size` images at a time, then compares the
    n(n-1)/2 pairs in chunks sized to `CHUNK_BYTES`; an export, which has no features to
    reuse, scores the pairs whole, `batch_size` / 2 at a time. `progress(k)` is called after
    each chunk of k pairs.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) < 2:
        raise InputError(f"Need at least two images of one size, shape (n, H, W, 3). Received shape {images.shape}")
    check_values(images, metric.input_range, "images")
    if min(images.shape[1:3]) < metric.min_input_size:
        size = metric.min_input_size
        raise InputError(
            f"Images of {images.shape[1]}x{images.shape[2]} are too small for this network: it needs at least "
            f"{size}x{size}. Received shape {images.shape}"
        )
    n = len(images)
    first, second = (index.astype("int32") for index in np.triu_indices(n, k=1))
    if isinstance(metric, LPIPS):
        compute_features, compare = _functions(metric)
        features = [compute_features(images[start : start + batch_size]) for start in range(0, n, batch_size)]
        features = [ops.concatenate(per_layer, axis=0) for per_layer in zip(*features)]
        per_pair = 3 * 4 * sum(int(np.prod(f.shape[1:])) for f in features)
        chunk = int(min(MAX_CHUNK, max(1, CHUNK_BYTES // per_pair)))

        def score(pairs):
            return compare(features, first[pairs], second[pairs])

    else:
        chunk = max(1, batch_size // 2)

        def score(pairs):
            return metric([images[first[pairs]], images[second[pairs]]])

    distances = np.zeros(len(first), np.float32)
    for start in range(0, len(first), chunk):
        pairs = slice(start, start + chunk)
        distances[pairs] = ops.convert_to_numpy(score(pairs))
        if progress:
            progress(len(distances[pairs]))
    matrix = np.zeros((n, n), np.float32)
    matrix[first, second] = matrix[second, first] = distances
    return matrix


def _functions(metric):
    """`(features(images), compare(features, first, second))`, the latter giving the distances
    between the images at indices `first` and `second` of per-layer `features`; on the
    TensorFlow backend both traced once per metric (for any batch and image size)."""

    def features(images):
        return metric.features(images, training=False)

    def compare(features, first, second):
        features0 = [ops.take(f, first, axis=0) for f in features]
        features1 = [ops.take(f, second, axis=0) for f in features]
        return metric.total(metric.compare(features0, features1))

    if keras.backend.backend() != "tensorflow":
        return features, compare
    if metric not in _FUNCTIONS:
        import tensorflow as tf

        image = tf.TensorSpec([None, None, None, 3], tf.float32)
        _FUNCTIONS[metric] = (tf.function(features, input_signature=[image]), tf.function(compare, reduce_retracing=True))
    return _FUNCTIONS[metric]
