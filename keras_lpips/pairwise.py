"""Distances for many images at once: matched pairs, all pairs within a set, all pairs between two sets.

`distance_matrix` and `cross_distance_matrix` choose among three ways (`METHODS`):

- "embedding": each image embedded once (`LPIPS.embed`), then all distances by matrix
  products in blocks (`keras_lpips.embedding`); for an `LPIPS` whose linear weights are all
  non-negative (the default then: every shipped weight file);
- "features": each image's features computed once, then compared pair by pair, in chunks of
  pairs through one traced function (TensorFlow backend); any `LPIPS` (the default for
  negative weights);
- "pairs": each pair scored whole; what an `ExportedMetric`, which has no features, can do.

Scoring every pair separately (as the reference's all-pairs script does) recomputes each
image's features n - 1 times (benchmarks/matrix_speed.py, benchmarks/embedding_speed.py).
"""

import keras
import numpy as np
from keras import ops

from keras_lpips import keras_compat
from keras_lpips.argument_checks import check_integer
from keras_lpips.embedding import all_pairs, cross_distances, embed_images
from keras_lpips.errors import InputError
from keras_lpips.array_checks import check_image_set
from keras_lpips.memory import check_available_memory
from keras_lpips.model import LPIPS


def paired_distances(metric, images0, images1, batch_size=32, progress=None):
    """d(images0[i], images1[i]) for lists of (H, W, 3) arrays; pairs of one size are batched."""
    batch_size = check_integer("batch_size", batch_size, 1)
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
METHODS = ("embedding", "features", "pairs")


def distance_matrix(metric, images, batch_size=32, progress=None, method=None):
    """Symmetric (n, n) matrix of distances between n same-size images, zero diagonal.

    `metric` is an `LPIPS` or an `ExportedMetric`; `images` in its input_range. `method`: one
    of `METHODS` (see the module), or None for the fastest the metric allows. Images are
    embedded or their features computed `batch_size` at a time; an export scores
    `batch_size` / 2 pairs a call. `progress(k)` is called after each chunk of k pairs.
    A matrix too large for the memory available is refused first (`check_matrix_memory`).
    """
    images = check_image_set(images, metric.input_range, metric.min_input_size, "images", minimum=2)
    batch_size = check_integer("batch_size", batch_size, 1)
    method = _method(metric, method)
    check_matrix_memory(len(images), len(images), method)
    if method == "embedding":
        return all_pairs(embed_images(metric, images, batch_size), progress)
    n = len(images)
    first, second = (index.astype("int32") for index in np.triu_indices(n, k=1))
    distances = _pair_distances(metric, images, first, second, method, batch_size, progress)
    matrix = np.zeros((n, n), np.float32)
    matrix[first, second] = matrix[second, first] = distances
    return matrix


def cross_distance_matrix(metric, images0, images1, batch_size=32, progress=None, method=None):
    """(n0, n1) matrix of the distances d(images0[i], images1[j]) between two sets of images of
    one size; arguments as `distance_matrix`'s."""
    images0 = check_image_set(images0, metric.input_range, metric.min_input_size, "images0")
    images1 = check_image_set(images1, metric.input_range, metric.min_input_size, "images1")
    if images0.shape[1:] != images1.shape[1:]:
        raise InputError(f"Both sets need images of one size. Received shapes {images0.shape} and {images1.shape}")
    batch_size = check_integer("batch_size", batch_size, 1)
    method = _method(metric, method)
    check_matrix_memory(len(images0), len(images1), method)
    if method == "embedding":
        return cross_distances(embed_images(metric, images0, batch_size), embed_images(metric, images1, batch_size), progress)
    n0, n1 = len(images0), len(images1)
    first, second = (index.astype("int32").ravel() for index in np.meshgrid(np.arange(n0), n0 + np.arange(n1), indexing="ij"))
    distances = _pair_distances(metric, np.concatenate([images0, images1]), first, second, method, batch_size, progress)
    return distances.reshape(n0, n1)


def matrix_memory_bytes(rows, columns, method="embedding"):
    """Bytes a rows x columns distance matrix takes beyond the images and their features: the
    float32 matrix, and with the "features" and "pairs" methods each pair's two int32 indices
    and float32 distance while it is filled."""
    pairs = int(rows) * int(columns)
    return 4 * pairs + (12 * pairs if method != "embedding" else 0)


def check_matrix_memory(rows, columns, method="embedding"):
    """Raises `InsufficientMemoryError` when a rows x columns distance matrix
    (`matrix_memory_bytes`) needs more memory than is available now."""
    needed = matrix_memory_bytes(rows, columns, method)
    check_available_memory(needed, f"A {rows:,} x {columns:,} distance matrix ({rows * columns:,} distances)")


def _method(metric, method):
    """`method` checked against what `metric` allows, or the fastest it allows when None."""
    if method is None:
        if not isinstance(metric, LPIPS):
            return "pairs"
        return "features" if metric.negative_linear_weights() else "embedding"
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)} or None. Received: method={method!r}")
    if method != "pairs" and not isinstance(metric, LPIPS):
        raise InputError(f"An exported metric has no features to reuse; only method='pairs' applies. Received: method={method!r}")
    return method


def _pair_distances(metric, images, first, second, method, batch_size, progress):
    """d(images[first[i]], images[second[i]]) for each i, by "features" or "pairs"."""
    if method == "features":
        compute_features, compare = _functions(metric)
        n = len(images)
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
    return distances


def _functions(metric):
    """`(features(images), compare(features, first, second))`, the latter giving the distances
    between the images at indices `first` and `second` of per-layer `features`; on the
    TensorFlow backend both traced once per metric (`keras_compat.traced_per_metric`; features for
    any batch and image size)."""

    def make(metric_ref):
        def features(images):
            return metric_ref().features(images, training=False)

        def compare(features, first, second):
            features0 = [ops.take(f, first, axis=0) for f in features]
            features1 = [ops.take(f, second, axis=0) for f in features]
            return metric_ref().total(metric_ref().compare(features0, features1))

        if keras.backend.backend() != "tensorflow":
            return features, compare
        return keras_compat.once_traced(features, [keras_compat.image_batch_spec()]), keras_compat.once_traced(compare)

    return keras_compat.traced_per_metric(metric, "pairs", make)
