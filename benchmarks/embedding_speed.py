"""What the embedding (`LPIPS.embed`, keras_lpips.embedding) buys: all-pairs matrices and nearest neighbours.

    .venv/bin/python benchmarks/embedding_speed.py --out benchmarks/embedding.md
    .venv/bin/python benchmarks/embedding_speed.py --quick          # small sizes, a minute

In one process, with an untrained seeded AlexNet (the time does not depend on the weights'
values) and the official v0.1 linear weights, at 64x64:

1. The all-pairs matrix of `--matrix-images` images (default 256: 32,640 pairs), three ways:
   `distance_matrix(method="embedding")` (each image embedded once, then float64 matrix
   products in blocks: what `keras-lpips matrix` runs now); `method="features"` (features
   computed once, pairs compared in chunks: what it ran before); and `metric([a, b])` once per
   pair, batch of one, timed on `--single-pairs` pairs and extrapolated. Each after a warm-up;
   the median of `--repeats`. The three agree within 1e-5 (checked on the pairs timed). Then
   the embedding path's two parts alone, the same way: `embed_images` and `all_pairs`.
2. `nearest` for `--queries` query images against `--index` index images (default 1,000
   against 10,000): embedding time, exact search (`embedding.nearest`), then with FAISS (if
   installed) the flat, HNSW and IVF indexes, with and without a random projection, each
   re-ranked exactly: build and search time, and recall@10 against the exact search.

Images: smooth random fields (4x4 noise, upsampled bilinearly, plus pixel noise), so that
neighbours are nearer than strangers, as in natural image sets; queries are drawn from the
same distribution as the index (not copies of it).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def timed(function, repeats=1, warm_up=True):
    if warm_up:
        function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def smooth_images(rng, n, size=64, batch=1000):
    """n images in [0, 1]: 4x4x3 uniform noise upsampled bilinearly to size, plus N(0, 0.03) pixels."""
    import tensorflow as tf

    out = np.empty((n, size, size, 3), np.float32)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        coarse = rng.random((count, 4, 4, 3), dtype=np.float32)
        fine = tf.image.resize(coarse, (size, size), method="bilinear").numpy()
        out[start : start + count] = np.clip(fine + rng.normal(0, 0.03, fine.shape), 0, 1)
    return out


def matrix_section(metric, args, rng, lines):
    from keras_lpips.embedding import all_pairs, embed_images
    from keras_lpips.pairwise import distance_matrix

    n = args.matrix_images
    pairs = n * (n - 1) // 2
    images = smooth_images(rng, n)
    embedding_s, by_embedding = timed(lambda: distance_matrix(metric, images, method="embedding"), args.repeats)
    features_s, by_features = timed(lambda: distance_matrix(metric, images, method="features"), args.repeats)
    first, second = np.triu_indices(n, k=1)
    chosen = rng.choice(pairs, min(args.single_pairs, pairs), replace=False)

    def singles():
        return [float(np.asarray(metric([images[i : i + 1], images[j : j + 1]]))[0]) for i, j in zip(first[chosen], second[chosen])]

    singles_s, by_singles = timed(singles, 1)
    singles_s *= pairs / len(chosen)
    embed_s, vectors = timed(lambda: embed_images(metric, images), args.repeats)
    all_pairs_s, _ = timed(lambda: all_pairs(vectors), args.repeats)
    np.testing.assert_allclose(by_embedding, by_features, rtol=0, atol=1e-5)
    np.testing.assert_allclose(by_embedding[first[chosen], second[chosen]], by_singles, rtol=0, atol=1e-5)
    lines += [
        f"## All pairs of {n} images at 64x64 ({pairs:,} pairs), alex", "",
        "| path | time (s) | embedding is faster by |", "|---|---|---|",
        f"| embedding (`method=\"embedding\"`, now) | {embedding_s:.2f} | 1.0x |",
        f"| features computed once, pairs compared (`method=\"features\"`, before) | {features_s:.2f} | {features_s / embedding_s:.1f}x |",
        f"| one `metric([a, b])` call per pair ({len(chosen)} timed, extrapolated) | {singles_s:.1f} | {singles_s / embedding_s:.0f}x |",
        "", "The three agree within 1e-5 on every pair compared.", "",
        f"The embedding path alone, in parts: `embed_images` {embed_s:.3f} s, `all_pairs` on the {n} vectors "
        f"(D = {vectors.shape[1]:,}) {all_pairs_s:.3f} s. With no `all_pairs` at all, the embedding path would be "
        f"faster than the features path by at most {features_s / embed_s:.1f}x.", "",
    ]  # fmt: skip


def nearest_section(metric, args, rng, lines):
    from keras_lpips.embedding import embed_images, nearest

    index_images = smooth_images(rng, args.index)
    query_images = smooth_images(rng, args.queries)
    embed_s, (index, queries) = timed(lambda: (embed_images(metric, index_images), embed_images(metric, query_images)), warm_up=False)
    del index_images, query_images
    exact_s, (exact, _) = timed(lambda: nearest(queries, index, k=10), warm_up=False)
    gib = index.nbytes / 2**30
    lines += [
        f"## nearest: {args.queries:,} queries against {args.index:,} index images at 64x64, k = 10", "",
        f"Embedding the {args.queries + args.index:,} images: {embed_s:.1f} s ({1e3 * embed_s / (args.queries + args.index):.2f} ms "
        f"an image); D = {index.shape[1]:,}, the index's vectors {gib:.2f} GiB in float32.", "",
        "| search | build (s) | search (s) | recall@10 | index holds |", "|---|---|---|---|---|",
        f"| exact (`embedding.nearest`, float64 blocks) | - | {exact_s:.1f} | 1.000 | - |",
    ]  # fmt: skip
    try:
        import faiss  # noqa: F401
    except ImportError:
        lines += ["", "FAISS is not installed: the approximate rows were skipped.", ""]
        return
    from keras_lpips.embedding_index import NeighbourIndex, recall_at_k

    for kind, projection in [("flat", None), ("hnsw", None), ("ivf", None), ("flat", 1024), ("hnsw", 256), ("ivf", 256)]:
        build_s, built = timed(lambda: NeighbourIndex(index, kind, projection=projection), warm_up=False)
        search_s, (found, _) = timed(lambda: built.search(queries, k=10), warm_up=False)
        dim = projection or index.shape[1]
        holds = f"{dim:,} numbers a vector ({len(index) * dim * 4 / 2**20:,.0f} MiB)"
        name = f"FAISS {kind}" + (f", projected to {projection}" if projection else "")
        lines.append(f"| {name}, 4k candidates re-ranked | {build_s:.1f} | {search_s:.1f} | {recall_at_k(found, exact):.3f} | {holds} |")
        del built
    lines += [
        "",
        "Every row's distances are exact (candidates re-ranked on the full vectors); recall@10 is the",
        "share of the exact 10 nearest each search returns.",
        "",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix-images", type=int, default=256)
    parser.add_argument("--single-pairs", type=int, default=500, help="single calls timed (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--index", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 images, 100 single pairs, 100 queries against 1,000")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    if args.quick:
        args.matrix_images, args.single_pairs, args.queries, args.index, args.repeats = 64, 100, 100, 1000, 1

    import keras
    import tensorflow as tf

    from keras_lpips import LPIPS
    from keras_lpips.files import atomic_write

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", input_range=(0, 1))
    rng = np.random.default_rng(0)
    lines = [
        "# LPIPS through its embedding: speed and recall", "",
        f"`{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`: TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, NumPy {np.__version__}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the start. Method: the script's docstring.", "",
    ]  # fmt: skip
    matrix_section(metric, args, rng, lines)
    print("\n".join(lines), flush=True)
    start = len(lines)
    nearest_section(metric, args, rng, lines)
    print("\n".join(lines[start:]))
    if args.out:
        atomic_write(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
