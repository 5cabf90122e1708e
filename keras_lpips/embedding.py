"""LPIPS through its embedding: distance matrices in blocks, nearest neighbours, diversity.

For an `LPIPS` with non-negative linear weights and images of one size, d(x, y) =
||E(x) - E(y)||^2 with E = `LPIPS.embed` (the identity is written there, once). The
distances between two sets are then ||a||^2 + ||b||^2 - 2 a.b: one matrix multiply per
block of rows, where scoring pairs compares features elementwise, pair after pair.

    vectors = embed_images(metric, images)             # (N, D) float32
    matrix = all_pairs(vectors)                         # (N, N), zero diagonal
    indices, distances = nearest(queries, vectors, k=10)
    stats = pair_statistics(vectors)                    # mean, std, count over all pairs

In float32 that sum cancels: the squared norms are up to 7 (squeeze, cosine), and a float32
product was measured off by up to 1e-4 (vgg, cosine, 96x96), more than the distances of
near-identical images. The vectors are therefore cast to float64 a block of rows at a time,
with their squared norms, and multiplied in float64; the few entries that are tiny beside their norms
(near-duplicates) are summed again as sum((a - b)^2): every entry is within 1e-5 of
`metric([x, y])` (measured: 3e-7), and identical vectors are at exactly 0
(tests/test_embedding.py; an image and its copy embedded at two batch positions can get vectors
that differ in their last bits, about 1e-14 apart). Blocks hold at most `BLOCK_BYTES` of float64 rows, so memory stays
bounded for any number of images. Within one set (`all_pairs`, `pair_statistics`) only the
blocks on and above the diagonal are multiplied, and a block on the diagonal goes
`DIAGONAL_ROWS` rows at a time against its columns from theirs on, so that little of the
square below the diagonal is computed either (256 images: 3/4 of the full product).
"""

import dataclasses

import keras
import numpy as np

from keras_lpips import matrix_products
from keras_lpips.argument_checks import check_integer
from keras_lpips.array_checks import as_numpy, check_image_set
from keras_lpips.errors import InputError

# Bytes of float64 rows one block of a distance computation converts at a time (per side), and
# the most rows a block takes (its distances, rows x rows float64, stay within 32 MiB).
BLOCK_BYTES = 64 * 2**20
MAX_BLOCK_ROWS = 2048
# All pairs of one set: the rows of a block on the diagonal go at most this many at a time
# against the block's columns from theirs on. Smaller products skip more of the square below
# the diagonal but run slower per multiply-add: 64, 86 and 128 measured alike (256 images,
# D = 31,872, benchmarks/embedding.md).
DIAGONAL_ROWS = 128
# Distances below this fraction of ||a||^2 + ||b||^2 are recomputed as sum((a - b)^2).
RECOMPUTE_BELOW = 1e-6


def embed_images(metric, images, batch_size=32, progress=None):
    """`metric.embed` of (N, H, W, 3) same-size images in its input_range, `batch_size` at a
    time (on TensorFlow through one traced function): (N, D) float32 numpy. `progress(k)`
    is called after each batch of k images."""
    metric.check_euclidean()
    images = check_image_set(images, metric.input_range, metric.min_input_size)
    batch_size = check_integer("batch_size", batch_size, 1)
    size = metric.embedding_size(*images.shape[1:3])
    embed = metric.embedding_function()
    vectors = np.empty((len(images), size), np.float32)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        vectors[start : start + len(batch)] = keras.ops.convert_to_numpy(embed(batch))
        if progress:
            progress(len(batch))
    return vectors


# --- distances between embeddings ------------------------------------------------------------


def checked_embeddings(vectors, name):
    """`vectors` (numpy, or tensors of the Keras backend: `LPIPS.embed`'s) as a non-empty (N, D)
    array of finite real numbers, else `InputError`."""
    vectors = as_numpy(vectors)
    if vectors.ndim != 2 or len(vectors) == 0 or vectors.dtype.kind not in "fiu":
        raise InputError(f"{name} must be a non-empty (N, D) array of embeddings. Received shape {vectors.shape}, dtype {vectors.dtype}")
    not_finite = ~np.isfinite(vectors.sum(axis=1, dtype=np.float64))  # NaN and inf survive the sum
    if not_finite.any():
        raise InputError(f"{name} holds NaN or infinite values (row {int(np.argmax(not_finite))}): not embeddings of images")
    return vectors


def _rows_per_block(dim):
    return int(min(MAX_BLOCK_ROWS, max(1, BLOCK_BYTES // (8 * dim))))


def _even_parts(n, most):
    """(start, stop) of the fewest parts of range(n), of at most `most` and about equal sizes."""
    parts = -(-n // most)
    bounds = [n * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclasses.dataclass(frozen=True)
class _Rows:
    """One side of distance blocks: float32 rows, the same in float64 (a `matrix_products.operand`,
    cast once for all the blocks it takes part in), and their squared norms (float64)."""

    values: np.ndarray
    values64: object
    norms: np.ndarray

    @classmethod
    def of(cls, values):
        values = np.asarray(values, np.float32)
        values64 = matrix_products.operand(values, np.float64)
        return cls(values, values64, matrix_products.squared_norms(values64))

    def part(self, start, stop=None):
        return _Rows(self.values[start:stop], self.values64[start:stop], self.norms[start:stop])


def _distance_block(rows, columns, diagonal=False):
    """||a_i - b_j||^2 (float64) of two `_Rows` (`diagonal`: b's first rows are a's; their square
    gets 0 on its diagonal and, below it, the entries above it: exactly symmetric):
    ||a||^2 + ||b||^2 - 2 a b^T in float64 (`matrix_products`: TensorFlow's kernels, NumPy's
    without TensorFlow). The entries below `RECOMPUTE_BELOW` of their squared norms
    (near-duplicates) are summed again as sum((a_i - b_j)^2): identical rows give exactly 0."""
    scale = rows.norms[:, None] + columns.norms[None, :]
    block = scale - 2.0 * matrix_products.matmul(rows.values64, columns.values64, transpose_b=True)
    close = block < RECOMPUTE_BELOW * scale
    if diagonal:
        close[np.tril_indices(len(block))] = False
    close_rows, close_columns = np.nonzero(close)
    step = _rows_per_block(rows.values.shape[1])
    for start in range(0, len(close_rows), step):
        i, j = close_rows[start : start + step], close_columns[start : start + step]
        block[i, j] = np.square(np.asarray(rows.values[i], np.float64) - columns.values[j]).sum(axis=1)
    if diagonal:
        below = np.tril_indices(len(block), -1)
        block[below] = block.T[below]
        np.fill_diagonal(block, 0.0)
    return np.maximum(block, 0.0, out=block)


def _same_length(a, b):
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"Embeddings of different lengths (other images sizes or metrics) cannot be compared. "
            f"Received lengths {a.shape[1]} and {b.shape[1]}"
        )


def _blocks(a, b):
    """Yields `((row start, stop), (column start, stop), float64 distances)` covering all of
    a x b, row block by row block."""
    _same_length(a, b)
    step = _rows_per_block(a.shape[1])
    for r0 in range(0, len(a), step):
        rows = _Rows.of(a[r0 : r0 + step])
        for c0 in range(0, len(b), step):
            columns = _Rows.of(b[c0 : c0 + step])
            yield (r0, r0 + len(rows.values)), (c0, c0 + len(columns.values)), _distance_block(rows, columns)


def _upper_blocks(vectors):
    """Yields `((row start, stop), (column start, stop), float64 distances)` covering every pair
    i < j of one set, column block by column block (each cast to float64 once): the rows of the
    earlier blocks against it, then its own rows, in parts of at most `DIAGONAL_ROWS`, each
    against the block's columns from its own on. Those start on the diagonal (row start =
    column start; `_distance_block`'s `diagonal`): of a column block's square, p parts compute
    (1 + 1/p) / 2."""
    step = _rows_per_block(vectors.shape[1])
    for c0 in range(0, len(vectors), step):
        columns = _Rows.of(vectors[c0 : c0 + step])
        c1 = c0 + len(columns.values)
        for r0 in range(0, c0, step):
            yield (r0, r0 + step), (c0, c1), _distance_block(_Rows.of(vectors[r0 : r0 + step]), columns)
        for start, stop in _even_parts(c1 - c0, DIAGONAL_ROWS):
            block = _distance_block(columns.part(start, stop), columns.part(start), diagonal=True)
            yield (c0 + start, c0 + stop), (c0 + start, c1), block


def cross_distances(a, b, progress=None):
    """(len(a), len(b)) float32 matrix of ||a_i - b_j||^2: LPIPS between two sets' embeddings.
    `progress(k)` is called after each block of k pairs."""
    a, b = checked_embeddings(a, "a"), checked_embeddings(b, "b")
    matrix = np.empty((len(a), len(b)), np.float32)
    for (r0, r1), (c0, c1), block in _blocks(a, b):
        matrix[r0:r1, c0:c1] = block
        if progress:
            progress(block.size)
    return matrix


def all_pairs(vectors, progress=None):
    """Symmetric (N, N) float32 matrix of ||v_i - v_j||^2, zero diagonal: LPIPS between all
    pairs of one set's embeddings. `progress(k)` is called after each block of k pairs."""
    vectors = checked_embeddings(vectors, "vectors")
    n = len(vectors)
    matrix = np.empty((n, n), np.float32)
    for (r0, r1), (c0, c1), block in _upper_blocks(vectors):
        matrix[r0:r1, c0:c1] = block
        matrix[c0:c1, r0:r1] = block.T
        if progress:
            progress(block.size - (r1 - r0) * (r1 - r0 + 1) // 2 if r0 == c0 else block.size)
    return matrix


def nearest(queries, index, k):
    """The `k` rows of `index` nearest to each row of `queries` by squared Euclidean distance
    (exact LPIPS between embeddings): `(indices, distances)`, each (len(queries), k), nearest
    first, equal distances in index order. `k` is capped at len(index)."""
    queries, index = checked_embeddings(queries, "queries"), checked_embeddings(index, "index")
    k = min(check_integer("k", k, 1), len(index))
    indices = np.empty((len(queries), k), np.int64)
    distances = np.empty((len(queries), k), np.float32)
    for (r0, r1), (c0, c1), block in _blocks(queries, index):
        if c0 == 0:  # a new block of queries
            best_d, best_i = np.empty((r1 - r0, 0)), np.empty((r1 - r0, 0), np.int64)
        # The best so far come first and have lower indices: a stable sort keeps ties in index order.
        candidates_d = np.concatenate([best_d, block], axis=1)
        candidates_i = np.concatenate([best_i, np.broadcast_to(np.arange(c0, c1), block.shape)], axis=1)
        order = np.argsort(candidates_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(candidates_d, order, axis=1)
        best_i = np.take_along_axis(candidates_i, order, axis=1)
        if c1 == len(index):
            indices[r0:r1], distances[r0:r1] = best_i, best_d
    return indices, distances


@dataclasses.dataclass(frozen=True)
class PairStatistics:
    """Count, sum and sum of squares of pairwise distances; `a + b` pools two sets of pairs."""

    count: int = 0
    total: float = 0.0
    total_of_squares: float = 0.0

    def __add__(self, other):
        return PairStatistics(
            self.count + other.count, self.total + other.total, self.total_of_squares + other.total_of_squares
        )

    @property
    def mean(self):
        return self.total / self.count if self.count else float("nan")

    @property
    def std(self):
        """The standard deviation of the distances (of the pairs themselves: ddof 0)."""
        if not self.count:
            return float("nan")
        return float(np.sqrt(max(self.total_of_squares / self.count - self.mean**2, 0.0)))


def pair_statistics(vectors):
    """`PairStatistics` of the distances between all pairs i < j of one set's embeddings
    (the "diversity" of a set of samples), streamed block by block: no N x N matrix is held."""
    vectors = checked_embeddings(vectors, "vectors")
    count, total, squares = 0, 0.0, 0.0
    for (r0, r1), (c0, c1), block in _upper_blocks(vectors):
        if r0 == c0:
            block = block[np.triu_indices(r1 - r0, k=1, m=c1 - c0)]
        count += block.size
        total += float(block.sum())
        squares += float(np.square(block).sum())
    return PairStatistics(count, total, squares)
