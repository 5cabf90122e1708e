"""Nearest neighbours in large index sets: a FAISS index proposes candidates, exact LPIPS ranks them.

`keras_lpips.embedding.nearest` is exact; its time grows as queries x index x D. For index
sets where that is too slow, or where a copy of the (N, D) vectors does not fit in memory:

    index = NeighbourIndex(vectors, kind="hnsw", projection=256)
    indices, distances = index.search(queries, k=10)       # exact distances, nearest first

- `kind`: the FAISS index that proposes `candidates` per query: "flat" (`IndexFlatL2`, every
  vector compared: exact up to float32 rounding), "hnsw" (`IndexHNSWFlat`, a graph searched
  in sublinear time) or "ivf" (`IndexIVFFlat`: k-means cells, `nprobe` of them searched).
- `projection`: the index holds each vector multiplied by a seeded Gaussian matrix, (D, d)
  scaled by 1 / sqrt(d), so d numbers instead of D; squared distances are kept in
  expectation (Johnson-Lindenstrauss), not exactly, which costs recall.

Every candidate is re-ranked by its exact distance, sum((q - v)^2) in float64 on the full
vectors, which may be a `np.memmap` (a `.npy` opened with mmap_mode="r"): only the candidates'
rows are read. What approximation and projection cost is recall, `recall_at_k` against
`embedding.nearest`, measured in benchmarks/embedding.md. FAISS is optional:
`pip install keras-lpips[faiss]` (faiss-cpu).
"""

import numpy as np

from keras_lpips import matrix_products
from keras_lpips.argument_checks import check_integer
from keras_lpips.embedding import BLOCK_BYTES, checked_embeddings
from keras_lpips.errors import InputError

KINDS = ("flat", "hnsw", "ivf")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("Approximate search needs FAISS: pip install 'keras-lpips[faiss]' (faiss-cpu)") from None
    return faiss


def random_projection(dim, target, seed=0):
    """A (dim, target) float32 Gaussian matrix scaled by 1 / sqrt(target): ||x P||^2 estimates ||x||^2."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim, target), dtype=np.float32) / np.sqrt(target)).astype(np.float32)


class NeighbourIndex:
    """Candidates from a FAISS index over (projected) `vectors`, re-ranked exactly (see the module).

    Args:
        vectors: (N, D) embeddings (`LPIPS.embed`); kept by reference for the re-ranking.
        kind: "flat", "hnsw" or "ivf".
        projection: None, or the dimension d of a random projection for the index.
        candidates: candidates per query re-ranked, as a multiple of k (at least k).
        hnsw_neighbours, hnsw_search: HNSW's M (graph degree) and efSearch.
        ivf_cells, nprobe: IVF's number of cells (default: 4 sqrt(N)) and of cells searched.
        seed: seed of the projection and of IVF's k-means.
    """

    def __init__(self, vectors, kind="hnsw", projection=None, candidates=4, hnsw_neighbours=32, hnsw_search=128,
                 ivf_cells=None, nprobe=16, seed=0):  # fmt: skip
        faiss = _faiss()
        if kind not in KINDS:
            raise InputError(f"kind must be one of {', '.join(KINDS)}. Received: kind={kind!r}")
        vectors = checked_embeddings(vectors, "vectors")
        if projection is not None and not 1 <= projection <= vectors.shape[1]:
            raise InputError(f"projection must be from 1 to D = {vectors.shape[1]}. Received: projection={projection!r}")
        # Checked here: FAISS aborts the process on some (an HNSW degree of 1) and raises its own
        # C++ errors on others (more IVF cells than vectors, no cell searched).
        candidates = check_integer("candidates", candidates, 1)
        hnsw_neighbours = check_integer("hnsw_neighbours", hnsw_neighbours, 2)
        hnsw_search = check_integer("hnsw_search", hnsw_search, 1)
        ivf_cells = check_integer("ivf_cells", ivf_cells, 1, len(vectors), allow_none=True, note="(one per vector at most)")
        nprobe, seed = check_integer("nprobe", nprobe, 1), check_integer("seed", seed, 0, 2**31 - 1, note="(FAISS's C int)")
        self.vectors, self.candidates = vectors, candidates
        self.matrix = None if projection is None else random_projection(vectors.shape[1], projection, seed)
        dim = vectors.shape[1] if projection is None else projection
        if kind == "flat":
            self.index = faiss.IndexFlatL2(dim)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_neighbours)
            self.index.hnsw.efSearch = hnsw_search
        else:
            cells = ivf_cells or max(1, min(len(vectors) // 39, int(4 * np.sqrt(len(vectors)))))
            self.quantizer = faiss.IndexFlatL2(dim)  # the IVF index does not own it: kept alive here
            self.index = faiss.IndexIVFFlat(self.quantizer, dim, cells)
            self.index.cp.seed = seed
            self.index.cp.min_points_per_centroid = 1  # not FAISS's advice (39 a cell) on stderr for small sets
            self.index.nprobe = min(nprobe, cells)
        rows = _rows(dim)
        if not self.index.is_trained:
            sample = np.random.default_rng(seed).choice(len(vectors), min(len(vectors), 256 * cells), replace=False)
            self.index.train(self._stored(vectors[np.sort(sample)]))
        for start in range(0, len(vectors), rows):
            self.index.add(self._stored(vectors[start : start + rows]))

    def _stored(self, vectors):
        """Rows as the index holds them: float32, projected if asked (`matrix_products.matmul`, as
        `embedding` multiplies)."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        return vectors if self.matrix is None else np.ascontiguousarray(matrix_products.matmul(vectors, self.matrix))

    def search(self, queries, k):
        """`(indices, distances)`, (len(queries), k) each, nearest first by exact distance among
        each query's candidates; -1 and inf where fewer than k were found."""
        queries = checked_embeddings(queries, "queries")
        if queries.shape[1] != self.vectors.shape[1]:
            raise InputError(f"queries must be (M, {self.vectors.shape[1]}) embeddings. Received shape {queries.shape}")
        k = min(int(k), len(self.vectors))
        _, candidates = self.index.search(self._stored(queries), min(len(self.vectors), self.candidates * k))
        return rerank(queries, self.vectors, candidates, k)


def _rows(dim):
    return max(1, BLOCK_BYTES // (8 * dim))


def rerank(queries, vectors, candidates, k):
    """The k of each query's `candidates` (row indices into `vectors`, -1 for none) nearest by
    exact distance sum((q - v)^2) in float64: `(indices, distances)`, ties in index order."""
    indices = np.full((len(queries), k), -1, np.int64)
    distances = np.full((len(queries), k), np.inf, np.float32)
    for row, (query, found) in enumerate(zip(queries, candidates)):
        found = np.unique(found[found >= 0])  # sorted: a stable sort below keeps ties in index order
        exact = np.empty(len(found))
        for start in range(0, len(found), _rows(len(query))):
            part = found[start : start + _rows(len(query))]
            exact[start : start + len(part)] = np.square(np.asarray(vectors[part], np.float64) - query).sum(axis=1)
        order = np.argsort(exact, kind="stable")[:k]
        indices[row, : len(order)], distances[row, : len(order)] = found[order], exact[order]
    return indices, distances


def recall_at_k(found, exact):
    """The fraction of the exact k nearest (`exact`, (M, k) indices) that `found` holds too."""
    hits = sum(len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, exact))
    return hits / exact.size
