"""LPIPS as a squared Euclidean distance (`LPIPS.embed`, keras_lpips.embedding): embeddings, blocked
matrices, nearest neighbours, diversity, FAISS indexes and the embed/nearest/diversity commands,
each against the metric scoring pairs directly (`metric([x, y])`)."""

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_lpips.embedding as embedding
from keras_lpips import DataError, InputError, LPIPS, WeightsError
from keras_lpips.embedding import all_pairs, cross_distances, embed_images, nearest, pair_statistics
from tests.helpers import RANDOM, ROOT, one_error_line, run_cli

ATOL = 1e-5
# Identical vectors are exactly 0 apart; an image and its copy embedded at two batch positions, less
# than COPY_DISTANCE: CPU convolution kernels can round by position (~1e-14 measured with AVX2).
COPY_DISTANCE = 1e-12


def direct(metric, images0, images1):
    """The metric's own distance of every pair (images0[i], images1[j]), one call per row."""
    return np.stack([np.asarray(metric([np.repeat(x[None], len(images1), 0), images1])) for x in images0])


def with_near_duplicates(rng, n, height, width):
    """n images in [0, 1]: random, then an exact copy of the first and a copy moved by 1e-4."""
    images = rng.random((n, height, width, 3), dtype=np.float32)
    images[-2] = images[0]
    images[-1] = np.clip(images[1] + rng.uniform(-1e-4, 1e-4, images[1].shape).astype(np.float32), 0, 1)
    return images


@pytest.fixture(scope="module")
def metric():
    return LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", input_range=(0, 1))


def embedding_matches_the_metric(metric, height, width):
    images = with_near_duplicates(np.random.default_rng(height), 5, height, width)
    vectors = embed_images(metric, images, batch_size=2)
    assert vectors.shape == (5, metric.embedding_size(height, width)) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, np.asarray(metric.embed(images)), rtol=0, atol=1e-6)
    want = direct(metric, images, images)
    np.testing.assert_allclose(cross_distances(vectors, vectors), want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(all_pairs(vectors), want, rtol=0, atol=ATOL)
    assert want[0, 3] == 0 and want[1, 4] < 1e-5  # the near-duplicates are there


@pytest.mark.parametrize("size", [(64, 64), (37, 45)])
def test_embedding_distances_are_the_metric(metric, size):
    assert metric.embedding_size(64, 64) == 31872  # the number for alex
    embedding_matches_the_metric(metric, *size)


@pytest.mark.slow
@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
@pytest.mark.parametrize("version", ["0.1", "0.0"])
@pytest.mark.parametrize("distance", ["lpips", "cosine"])
@pytest.mark.parametrize("size", [(64, 64), (37, 45)])
def test_embedding_distances_are_the_metric_for_every_configuration(net, version, distance, size):
    metric = LPIPS(net=net, version=version, distance=distance, backbone_weights=None, seed=0,
                   lin_weights=f"v{version}", input_range=(0, 1))  # fmt: skip
    embedding_matches_the_metric(metric, *size)


def test_bf16_embedding_is_the_bf16_metric():
    """Under precision="bf16", whose eager kernels round otherwise than traced ones, an eager
    `embed` runs the traced function `embed_images` runs (the same vectors) and its squared
    distances are the metric's (an eager embed was 1.4e-4 off)."""
    metric = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1), precision="bf16")
    images = np.random.default_rng(1).random((4, 64, 64, 3), dtype=np.float32)
    vectors = np.asarray(metric.embed(images))
    np.testing.assert_array_equal(vectors, embed_images(metric, images, batch_size=4))
    want = np.asarray(metric([images[[0, 2, 0]], images[[1, 3, 3]]]))
    np.testing.assert_allclose(all_pairs(vectors)[[0, 2, 0], [1, 3, 3]], want, rtol=0, atol=1e-5)


def test_blocked_matrices_equal_per_pair_scoring(metric, monkeypatch):
    """Blocks of 2 rows (so off-diagonal, diagonal and ragged blocks), near-duplicates included."""
    images = with_near_duplicates(np.random.default_rng(1), 7, 40, 44)
    vectors = embed_images(metric, images)
    monkeypatch.setattr(embedding, "BLOCK_BYTES", 2 * 8 * vectors.shape[1])
    want = direct(metric, images, images)
    done = []
    matrix = all_pairs(vectors, progress=done.append)
    assert sum(done) == 21 and len(done) == 10  # 4 x 5 / 2 blocks, 21 pairs
    np.testing.assert_allclose(matrix, want, rtol=0, atol=ATOL)
    assert (matrix == matrix.T).all() and (np.diag(matrix) == 0).all() and matrix[0, 5] < COPY_DISTANCE
    np.testing.assert_allclose(cross_distances(vectors[:3], vectors[2:]), want[:3, 2:], rtol=0, atol=ATOL)
    stats = pair_statistics(vectors)
    upper = want[np.triu_indices(7, k=1)]
    assert stats.count == 21
    np.testing.assert_allclose([stats.mean, stats.std], [upper.mean(), upper.std()], rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def set_with_copies(metric):
    """11 images (odd: no block size below divides it) with exact copies 2 = 3 and 0 = 9 and
    copies moved by 1e-4, 4 ~ 7 and 1 ~ 10; their embeddings, and the metric's own matrix."""
    rng = np.random.default_rng(7)
    images = with_near_duplicates(rng, 11, 40, 44)
    images[3] = images[2]
    images[7] = np.clip(images[4] + rng.uniform(-1e-4, 1e-4, images[4].shape).astype(np.float32), 0, 1)
    return embed_images(metric, images), direct(metric, images, images)


@pytest.mark.parametrize("block_rows, diagonal_rows", [(11, 2), (4, 3), (5, 5)])
def test_diagonal_blocks_in_parts_equal_one_block(set_with_copies, monkeypatch, block_rows, diagonal_rows):
    """all_pairs and pair_statistics with the blocks on the diagonal split into parts of rows
    (each against the block's columns from its own on), over one block or several, ragged: the
    one-block result, the metric's, symmetric, and exact copies at exactly 0."""
    vectors, want = set_with_copies
    whole = all_pairs(vectors)
    monkeypatch.setattr(embedding, "BLOCK_BYTES", block_rows * 8 * vectors.shape[1])
    monkeypatch.setattr(embedding, "DIAGONAL_ROWS", diagonal_rows)
    done = []
    matrix = all_pairs(vectors, progress=done.append)
    assert sum(done) == 55
    np.testing.assert_allclose(matrix, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(matrix, want, rtol=0, atol=ATOL)
    assert (matrix == matrix.T).all() and (np.diag(matrix) == 0).all()
    assert matrix[2, 3] < COPY_DISTANCE and matrix[0, 9] < COPY_DISTANCE and 0 < matrix[4, 7] < 1e-5 and 0 < matrix[1, 10] < 1e-5
    stats = pair_statistics(vectors)
    upper = want[np.triu_indices(11, k=1)]
    assert stats.count == 55
    np.testing.assert_allclose([stats.mean, stats.std], [upper.mean(), upper.std()], rtol=0, atol=ATOL)


def test_nearest_equals_brute_force_per_pair_search(metric, monkeypatch):
    rng = np.random.default_rng(2)
    index = with_near_duplicates(rng, 9, 40, 40)
    queries = np.concatenate([index[:2], rng.random((3, 40, 40, 3), dtype=np.float32)])
    vectors = embed_images(metric, index)
    # The first two queries are index rows: identical vectors, exactly 0 from themselves.
    query_vectors = np.concatenate([vectors[:2], embed_images(metric, queries[2:])])
    monkeypatch.setattr(embedding, "BLOCK_BYTES", 3 * 8 * vectors.shape[1])  # blocks of 3 rows
    found, distances = nearest(query_vectors, vectors, k=4)
    scores = direct(metric, queries, index)
    brute = np.lexsort((np.broadcast_to(np.arange(9), scores.shape), scores), axis=1)[:, :4]  # ties: lower index
    np.testing.assert_array_equal(found, brute)
    np.testing.assert_allclose(distances, np.take_along_axis(scores, brute, axis=1), rtol=0, atol=ATOL)
    assert found[0, :2].tolist() == [0, 7] and distances[0, 0] == 0 and distances[0, 1] < COPY_DISTANCE  # itself, then its copy
    assert nearest(query_vectors, vectors, k=50)[0].shape == (5, 9)
    with pytest.raises(InputError, match="k must be an integer >= 1. Received: k=0"):
        nearest(query_vectors, vectors, k=0)
    with pytest.raises(InputError, match="different lengths"):
        nearest(query_vectors[:, :10], vectors, k=1)


def test_negative_weights_are_refused_in_one_line(rng):
    from keras_lpips.pairwise import distance_matrix

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", input_range=(0, 1))
    kernel = np.asarray(metric.heads[2].kernel).copy()
    kernel[3] = -0.5
    metric.heads[2].kernel.assign(kernel)
    images = rng.random((3, 40, 40, 3), dtype=np.float32)
    import tensorflow as tf

    traced = tf.function(metric.embed, input_signature=[tf.TensorSpec([None, None, None, 3])])  # weights read eagerly
    for call in (lambda: metric.embed(images), lambda: embed_images(metric, images), lambda: traced(images)):
        with pytest.raises(WeightsError, match=r"layer\(s\) \[2\] have negative entries") as error:
            call()
        assert "\n" not in str(error.value) and "Received: lin_weights='v0.1'" in str(error.value)
    assert metric.negative_linear_weights() == [2]
    matrix = distance_matrix(metric, images)  # falls back to comparing features pair by pair
    np.testing.assert_allclose(matrix, direct(metric, images, images), rtol=0, atol=ATOL)


def test_embed_in_a_tensorflow_function_is_the_eager_embed(metric, rng):
    import tensorflow as tf

    images = rng.random((2, 40, 40, 3), dtype=np.float32)
    traced = tf.function(lambda x: metric.embed(x), input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_array_equal(traced(images).numpy(), np.asarray(metric.embed(images)))


def test_embedding_size_and_bad_inputs(metric):
    assert metric.embedding_size(37, 45) == embed_images(metric, np.zeros((1, 37, 45, 3), np.float32)).shape[1]
    with pytest.raises(InputError, match="too small"):
        metric.embedding_size(20, 40)
    with pytest.raises(InputError, match="outside input_range"):
        embed_images(metric, np.full((1, 40, 40, 3), 2.0, np.float32))
    with pytest.raises(InputError, match="shape"):
        embed_images(metric, np.zeros((40, 40, 3), np.float32))
    with pytest.raises(InputError, match=r"^images contains NaN"):  # named as embed's argument, not img0
        metric.embed(np.full((1, 40, 40, 3), np.nan, np.float32))
    with pytest.raises(InputError, match=r"one size.*Received images of shapes \(30, 40, 3\) and \(40, 40, 3\)"):
        embed_images(metric, [np.zeros((40, 40, 3), np.float32), np.zeros((30, 40, 3), np.float32)])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_refused(bad):
    vectors = np.ones((4, 6), np.float32)
    vectors[2, 3] = bad
    for call in (lambda: all_pairs(vectors), lambda: nearest(vectors[:1] * 0, vectors, 2), lambda: pair_statistics(vectors)):
        with pytest.raises(InputError, match=r"holds NaN or infinite values \(row 2\)"):
            call()


# --- without TensorFlow: NumPy's products ----------------------------------------------------


def vectors_with_copies(rng, n=9, dim=300):
    """n random embeddings: row 5 an exact copy of row 0, row 6 row 1 moved by up to 1e-4 (its
    distance, ~1e-6, is recomputed as sum((a - b)^2))."""
    vectors = rng.random((n, dim), dtype=np.float32)
    vectors[5] = vectors[0]
    vectors[6] = vectors[1] + rng.uniform(-1e-4, 1e-4, dim).astype(np.float32)
    return vectors


def distances_of(vectors):
    return {
        "all_pairs": all_pairs(vectors),
        "cross": cross_distances(vectors[:4], vectors),
        "nearest": nearest(vectors[:4], vectors, k=3),
        "statistics": pair_statistics(vectors),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_products_without_tensorflow_equal_tensorflows(seed, monkeypatch):
    """Where TensorFlow cannot be imported (Keras on JAX or PyTorch without it), the distances are
    NumPy's float64 products: those of TensorFlow's path, exact copies at exactly 0 and the
    near-duplicates recomputed alike; in blocks of 2 rows, and in one."""
    import tensorflow as tf

    from keras_lpips import matrix_products

    vectors = vectors_with_copies(np.random.default_rng(seed))
    projection = np.random.default_rng(seed).standard_normal((300, 16)).astype(np.float32)
    for block_rows in (2, None):
        if block_rows:
            monkeypatch.setattr(embedding, "BLOCK_BYTES", block_rows * 8 * vectors.shape[1])
        with monkeypatch.context() as without:
            without.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` fails
            assert type(matrix_products.operand(vectors, np.float64)) is np.ndarray
            fallback, projected = distances_of(vectors), matrix_products.matmul(vectors, projection)
        assert tf.is_tensor(matrix_products.operand(vectors, np.float64))
        want = distances_of(vectors)
        for name in ("all_pairs", "cross"):
            np.testing.assert_allclose(fallback[name], want[name], rtol=1e-6, atol=0, err_msg=name)
        assert fallback["all_pairs"][0, 5] == 0 and fallback["all_pairs"][1, 6] == want["all_pairs"][1, 6] > 0
        assert (np.diag(fallback["all_pairs"]) == 0).all() and (fallback["all_pairs"] == fallback["all_pairs"].T).all()
        np.testing.assert_array_equal(fallback["nearest"][0], want["nearest"][0])
        np.testing.assert_allclose(fallback["nearest"][1], want["nearest"][1], rtol=1e-6, atol=0)
        assert fallback["nearest"][0][0, :2].tolist() == [0, 5] and fallback["nearest"][1][0, 1] == 0
        statistics, expected = fallback["statistics"], want["statistics"]
        assert statistics.count == expected.count == 36
        np.testing.assert_allclose([statistics.mean, statistics.std], [expected.mean, expected.std], rtol=1e-12)
        np.testing.assert_allclose(projected, tf.linalg.matmul(vectors, projection).numpy(), rtol=1e-5, atol=1e-5)


def test_distances_on_jax_without_tensorflow():
    """all_pairs, nearest, pair_statistics and a projected FAISS index on Keras' JAX backend in a
    fresh interpreter where `import tensorflow` fails: the brute-force distances, TensorFlow never imported."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    script = """
import importlib.util, json, sys
sys.modules["tensorflow"] = None
import numpy as np
from keras_lpips.embedding import all_pairs, nearest, pair_statistics
vectors = np.random.default_rng(0).random((7, 50), dtype=np.float32)
vectors[4] = vectors[0]
brute = np.square(vectors[:, None].astype(np.float64) - vectors[None]).sum(axis=2)
found, distances = nearest(vectors[:2], vectors, k=2)
report = {
    "worst": float(np.abs(all_pairs(vectors) - brute).max()),
    "copy": float(all_pairs(vectors)[0, 4]),
    "nearest": found.tolist(),
    "brute": np.argsort(brute[:2], axis=1, kind="stable")[:, :2].tolist(),
    "mean": abs(pair_statistics(vectors).mean - brute[np.triu_indices(7, 1)].mean()),
}
if importlib.util.find_spec("faiss") is not None:
    from keras_lpips.embedding_index import NeighbourIndex
    report["faiss"] = NeighbourIndex(vectors, "flat", projection=8, candidates=7).search(vectors[:2], 2)[0].tolist()
import keras
print(json.dumps({**report, "backend": keras.backend.backend(), "tensorflow": sys.modules["tensorflow"] is not None}))
"""
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["tensorflow"] is False
    assert report["worst"] < 1e-5 and report["copy"] == 0 and report["mean"] < 1e-6
    assert report["nearest"] == report["brute"] and report["nearest"][0] == [0, 4]
    assert report.get("faiss", report["nearest"]) == report["nearest"]


# --- FAISS -----------------------------------------------------------------------------------


def low_dimensional(dim=600, latent=12):
    """Vectors near a 12-dimensional subspace (as embeddings of natural images lie near a manifold)."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((latent, dim)).astype(np.float32)
    return lambda n: (rng.standard_normal((n, latent)) @ basis + 0.1 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_candidates_reranked_exactly(kind):
    pytest.importorskip("faiss", reason="faiss-cpu is optional: pip install 'keras-lpips[faiss]'")
    from keras_lpips.embedding_index import NeighbourIndex, recall_at_k

    draw = low_dimensional()
    vectors, queries = draw(2000), draw(50)
    exact_i, exact_d = nearest(queries, vectors, k=10)
    found_i, found_d = NeighbourIndex(vectors, kind).search(queries, k=10)
    assert recall_at_k(found_i, exact_i) >= (1.0 if kind == "flat" else 0.9)
    hit = found_i == exact_i
    np.testing.assert_allclose(found_d[hit], exact_d[hit], rtol=1e-6, atol=1e-6)  # exact distances
    projected_i, _ = NeighbourIndex(vectors, kind, projection=64, candidates=10).search(queries, k=10)
    assert recall_at_k(projected_i, exact_i) >= 0.5


@pytest.mark.parametrize("options, message", [
    (dict(hnsw_neighbours=1), r"hnsw_neighbours must be an integer >= 2"),  # FAISS aborted the process
    (dict(kind="ivf", ivf_cells=8), r"ivf_cells must be an integer from 1 to 7 or None \(one per vector at most\)"),
    (dict(kind="ivf", nprobe=0), r"nprobe must be an integer >= 1"),
    (dict(candidates=0), r"candidates must be an integer >= 1"),
    (dict(hnsw_search=2.5), r"hnsw_search must be an integer >= 1"),
])  # fmt: skip
def test_faiss_index_arguments_are_checked_first(options, message):
    """In one line (InputError), where FAISS aborted the process or raised its own C++ errors."""
    from keras_lpips.embedding_index import NeighbourIndex

    vectors = np.random.default_rng(0).random((7, 16), dtype=np.float32)
    with pytest.raises(InputError, match=rf"^{message}. Received: "):
        NeighbourIndex(vectors, **{"kind": "hnsw", **options})


def test_faiss_ivf_on_a_small_set_prints_nothing(capfd):
    """Fewer vectors than FAISS advises for a cell: exact results, and no FAISS warning on stderr."""
    from keras_lpips.embedding_index import NeighbourIndex

    vectors = np.random.default_rng(0).random((7, 16), dtype=np.float32)
    capfd.readouterr()
    indices, _ = NeighbourIndex(vectors, "ivf").search(vectors, 3)
    assert indices[:, 0].tolist() == list(range(7)) and capfd.readouterr().err == ""


def test_faiss_index_takes_what_embed_returns():
    """`metric.embed` returns a backend tensor: the index and its search take it as they take
    numpy (docs/embedding.md's snippet), and refuse NaN rows as the exact functions do."""
    pytest.importorskip("faiss", reason="faiss-cpu is optional: pip install 'keras-lpips[faiss]'")
    import keras

    from keras_lpips.embedding_index import NeighbourIndex

    vectors = low_dimensional()(300)
    index = NeighbourIndex(keras.ops.convert_to_tensor(vectors), "flat")
    found_i, _ = index.search(keras.ops.convert_to_tensor(vectors[:5]), k=1)
    np.testing.assert_array_equal(found_i[:, 0], np.arange(5))
    vectors[3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        NeighbourIndex(vectors, "flat")


# --- the commands ----------------------------------------------------------------------------


def write_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{k:02d}.png")


def read_folder(folder):
    from keras_lpips.images import read_image

    return np.stack([read_image(path) for path in sorted(folder.glob("*.png"))])


def test_embed_resumes_and_nearest_matches_the_metric(tmp_path, fake_imagenet_home, monkeypatch):
    """embed writes chunks and continues after an interruption; nearest from the file gives the
    metric's own distances (the fake ImageNet cache: every run loads the same weights)."""
    from keras_lpips.embedding_files import read_embeddings
    from keras_lpips.resumable_embedding import EmbedCounts, embed_folder, parts_folder

    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    rng = np.random.default_rng(3)
    write_images(tmp_path / "train", rng.random((7, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "train" / "sub", rng.random((1, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "samples", rng.random((2, 40, 40, 3), dtype=np.float32))
    metric = LPIPS(net="alex", backbone_weights="imagenet", lin_weights="v0.1", input_range=(0, 1))
    out = tmp_path / "train.npz"

    def interrupt_in_the_second_chunk(done, total):
        assert total == 8
        if done > 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_folder(metric, tmp_path / "train", out, chunk=3, batch_size=2, progress=interrupt_in_the_second_chunk)
    assert not out.exists() and len(list(parts_folder(out).glob("part-*.npz"))) == 1  # the first chunk, whole
    assert embed_folder(metric, tmp_path / "train", out, chunk=3) == EmbedCounts(5, 0, 8)
    result = run_cli("embed", tmp_path / "train", "--out", out, "--chunk", "3")
    assert result.returncode == 0 and result.stdout == f"embedded 0 new or changed image(s); {out} holds 8\n", result.stderr
    (tmp_path / "train" / "06.png").unlink()
    write_images(tmp_path / "train" / "new", rng.random((1, 40, 40, 3), dtype=np.float32))
    result = run_cli("embed", tmp_path / "train", "--out", out, "--chunk", "3")
    want = f"embedded 1 new or changed image(s), dropped 1 no longer in {tmp_path / 'train'}; {out} holds 8\n"
    assert result.returncode == 0 and result.stdout == want and not parts_folder(out).exists(), result.stderr
    stored = read_embeddings(out)
    assert stored.names == [f"{k:02d}.png" for k in range(6)] + ["new/00.png", "sub/00.png"]
    assert stored.image_size == (40, 40) and stored.metric["net"] == "alex"

    result = run_cli("nearest", tmp_path / "samples", out, "-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    index_images = np.stack([read_folder(tmp_path / "train")[k] for k in range(6)] + [
        read_folder(tmp_path / "train" / "new")[0], read_folder(tmp_path / "train" / "sub")[0]])  # fmt: skip
    scores = direct(metric, read_folder(tmp_path / "samples"), index_images)
    for query, row in zip(report["queries"], scores):
        best = np.argsort(row, kind="stable")[:3]
        assert [n["name"] for n in query["nearest"]] == [stored.names[i] for i in best]
        np.testing.assert_allclose([n["distance"] for n in query["nearest"]], row[best], rtol=0, atol=ATOL)


def test_nearest_and_diversity_commands(tmp_path):
    rng = np.random.default_rng(4)
    samples = rng.random((3, 40, 40, 3), dtype=np.float32)
    write_images(tmp_path / "query", samples[:1])
    write_images(tmp_path / "index", samples)
    result = run_cli("nearest", tmp_path / "query", tmp_path / "index", "-k", "2", *RANDOM)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "00.png" and lines[1] == "    1. 0.000000  00.png" and len(lines) == 3
    if importlib.util.find_spec("faiss") is not None:  # FAISS is optional
        args = ("nearest", tmp_path / "query", tmp_path / "index", "-k", "2", "--search", "flat", "--projection", "8")
        approximate = run_cli(*args, *RANDOM)
        assert approximate.returncode == 0 and approximate.stdout.splitlines()[1] == lines[1], approximate.stderr

    write_images(tmp_path / "sets" / "input1", samples)
    write_images(tmp_path / "sets" / "input2", samples[:2])
    result = run_cli("diversity", tmp_path / "sets", "--json", *RANDOM)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 4 and [s["count"] for s in report["sets"]] == [3, 1]
    assert report["mean"] == pytest.approx((3 * report["sets"][0]["mean"] + report["sets"][1]["mean"]) / 4)
    result = run_cli("diversity", tmp_path / "index", *RANDOM)
    assert result.returncode == 0 and "over all pairs" in result.stdout and "3 pairs" in result.stdout


def test_nearest_between_embed_files_needs_no_model(tmp_path):
    """Two embed files are read, not embedded: the metric's function is never called."""
    from keras_lpips.embedding_files import Embeddings, write_embeddings
    from keras_lpips.embedding_queries import nearest_images

    vectors = vectors_with_copies(np.random.default_rng(8))
    names = [f"{k}.png" for k in range(len(vectors))]
    a, b, big = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "big.npz"
    for path, size in ((a, (40, 40)), (b, (40, 40)), (big, (48, 48))):
        write_embeddings(path, Embeddings(names, vectors, size, {"net": "alex"}, "one metric"))

    def no_model():
        raise AssertionError("two embed files need no model")

    seen = []
    found = nearest_images(a, b, 2, no_model, progress=lambda done, total: seen.append((done, total)))
    assert found.queries.names == found.index.names == names and not seen
    assert found.indices[0].tolist() == [0, 5] and found.distances[0].tolist() == [0, 0]
    np.testing.assert_array_equal(found.indices, nearest(vectors, vectors, 2)[0])
    for kwargs, message in [
        ({"projection": 8}, "projection= applies to a FAISS index"),
        ({"search": "annoy"}, "search must be 'exact' or one of flat, hnsw, ivf"),
    ]:
        with pytest.raises(InputError, match=message):
            nearest_images(a, b, 2, no_model, **kwargs)
    with pytest.raises(InputError, match="different sizes"):
        nearest_images(a, big, 2, no_model)
    for kwargs, received in (({"resize": True}, "resize=True"), ({"frame": 0}, "frame=0")):  # no folder: nothing to apply them to
        with pytest.raises(InputError, match=f"resize and frame apply to folders of images; .* Received: {received}$"):
            nearest_images(a, b, 2, no_model, **kwargs)


def test_nearest_between_embed_files_refuses_another_metric_asked_for(tmp_path, metric):
    """Two embed files and a metric asked for (an `LPIPS`; on the command line, a metric option):
    files of another metric are refused, not searched with theirs (`--net vgg` was ignored)."""
    from keras_lpips.embedding_files import Embeddings, describe_metric, write_embeddings
    from keras_lpips.embedding_queries import nearest_images

    images = np.random.default_rng(9).random((3, 40, 40, 3), dtype=np.float32)
    files = [tmp_path / "a.npz", tmp_path / "b.npz"]
    for path in files:
        write_embeddings(path, Embeddings(["0.png", "1.png", "2.png"], np.asarray(metric.embed(images)), (40, 40), *describe_metric(metric)))
    assert nearest_images(*files, 1, metric).indices[:, 0].tolist() == [0, 1, 2]
    other = LPIPS(net="alex", backbone_weights=None, seed=1, lin_weights="v0.1", input_range=(0, 1))
    with pytest.raises(InputError, match="The embed files and the metric asked for belong to one configuration with different"):
        nearest_images(*files, 1, other)
    assert run_cli("nearest", *files, "-k", "1").returncode == 0  # no option: the files' metric
    result = run_cli("nearest", *files, "-k", "1", "--net", "vgg", *RANDOM)
    assert result.returncode == 2 and one_error_line(result).startswith("error: The embed files and the metric asked for belong to different")
    assert "--net 'vgg'" in result.stderr


def test_folder_diversity_and_nearest_images_follow_their_progress(tmp_path, metric):
    """The library functions behind `diversity` and `nearest`: the metric's own distances, and
    `progress(done, total)` over every image embedded, from (0, total) on."""
    from keras_lpips.embedding_files import describe_metric
    from keras_lpips.embedding_queries import folder_diversity, nearest_images

    rng = np.random.default_rng(9)
    write_images(tmp_path / "sets" / "a", rng.random((3, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "sets" / "b", rng.random((2, 40, 40, 3), dtype=np.float32))
    seen = []
    result = folder_diversity(metric, tmp_path / "sets", progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)
    assert list(result.sets) == ["a", "b"] and result.pooled.count == 4 and result.metric == describe_metric(metric)[0]
    images = read_folder(tmp_path / "sets" / "a")
    want = direct(metric, images, images)[np.triu_indices(3, 1)]
    np.testing.assert_allclose([result.sets["a"].mean, result.sets["a"].std], [want.mean(), want.std()], atol=ATOL)
    seen.clear()
    found = nearest_images(tmp_path / "sets" / "b", tmp_path / "sets" / "a", 1, lambda: metric,
                           progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert seen[0] == (0, 5) and seen[-1] == (5, 5) and found.index.names == ["00.png", "01.png", "02.png"]
    scores = direct(metric, read_folder(tmp_path / "sets" / "b"), images)
    np.testing.assert_array_equal(found.indices[:, 0], scores.argmin(axis=1))
    np.testing.assert_allclose(found.distances[:, 0], scores.min(axis=1), rtol=0, atol=ATOL)
    with pytest.raises(InputError, match=r"at least two images in each set.*Received one in .*one"):
        write_images(tmp_path / "sets" / "one", images[:1])
        folder_diversity(lambda: pytest.fail("the folder is refused before the model is made"), tmp_path / "sets")


def test_command_errors_are_one_line(tmp_path):
    rng = np.random.default_rng(5)
    write_images(tmp_path / "a", rng.random((2, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "mixed", rng.random((2, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "mixed" / "set", rng.random((2, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "big", rng.random((1, 48, 48, 3), dtype=np.float32))
    assert run_cli("embed", tmp_path / "a", "--out", tmp_path / "a.npz", *RANDOM).returncode == 0
    cases = [
        (["nearest", tmp_path / "a", tmp_path / "a.npz"], "different weights"),  # random: drawn anew per run
        (["nearest", tmp_path / "big", tmp_path / "a.npz"], "pass --resize"),
        (["diversity", tmp_path / "mixed"], "both images and subfolders"),
        (["diversity", tmp_path / "big"], "at least two images"),
        (["nearest", tmp_path / "a.npz", tmp_path / "nowhere"], "Not a folder"),
        (["embed", tmp_path / "a", "--out", tmp_path / "no" / "x.npz"], "Output folder does not exist"),
        (["nearest", tmp_path / "a", tmp_path / "a", "--projection", "8"], "--projection applies to a FAISS index"),
    ]
    for args, message in cases:
        result = run_cli(*args, *RANDOM)
        assert result.returncode == 2 and message in one_error_line(result), (args, result.stderr)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    result = run_cli("nearest", tmp_path / "bad.npz", tmp_path / "a.npz")
    assert result.returncode == 1 and "Cannot read embed file" in one_error_line(result)  # a bad file: a run-time failure


def test_matrix_against_a_second_folder(tmp_path, metric):
    rng = np.random.default_rng(6)
    write_images(tmp_path / "a", rng.random((2, 40, 40, 3), dtype=np.float32))
    write_images(tmp_path / "b", rng.random((3, 40, 40, 3), dtype=np.float32))
    result = run_cli("matrix", tmp_path / "a", "--against", tmp_path / "b", *RANDOM)
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()]
    assert rows[0] == ["", "00.png", "01.png", "02.png"] and [r[0] for r in rows[1:]] == ["00.png", "01.png"]
    assert all(float(value) > 0 for row in rows[1:] for value in row[1:])


def test_embed_files_are_npz_and_other_files_are_named_as_such(tmp_path):
    from keras_lpips.errors import InputError
    from keras_lpips.resumable_embedding import embed_folder

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    result = run_cli("embed", tmp_path / "imgs", "--out", tmp_path / "e.png", *RANDOM, "--lin-weights", "none")
    assert result.returncode == 2 and one_error_line(result) == f"error: --out must name an .npz file (an embed file). Received: --out {tmp_path / 'e.png'}"
    with pytest.raises(InputError, match=r"^out must name an .npz file \(an embed file\)\. Received: out=.*e\.bin$"):
        embed_folder(None, tmp_path / "imgs", tmp_path / "e.bin")  # the library's rule, before anything is read
    result = run_cli("nearest", tmp_path / "imgs", tmp_path / "imgs" / "a.png", *RANDOM, "--lin-weights", "none")
    line = one_error_line(result)
    assert result.returncode == 1 and "not the .npz keras-lpips embed writes" in line and "pickle" not in line, line


def test_read_embeddings_refuses_a_file_that_is_not_one_row_per_image(tmp_path):
    """A damaged embed file (names, vectors and digests of different counts) or another .npz is
    one `DataError` line, not an error later in `nearest`."""
    from keras_lpips.embedding_files import Embeddings, read_embeddings, write_embeddings

    path = tmp_path / "e.npz"
    write_embeddings(path, Embeddings(["a.png", "b.png"], np.zeros((2, 4)), (40, 40), {}, "f", sha256=["0" * 64]))
    with pytest.raises(DataError, match=r"e.npz: it is damaged \(one row per image expected; names: 2, vectors: 2, sha256: 1\)$"):
        read_embeddings(path)
    np.savez(path, names=np.asarray(["a.png"]))
    with pytest.raises(DataError, match=r"^\S*e.npz is not an embed file \(from keras-lpips embed\): it lacks vectors, "):
        read_embeddings(path)

def _npy_declaring(shape):
    """A .npy member's bytes whose header declares a float32 array of `shape`, holding 64 bytes."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return header.getvalue() + bytes(64)


HOSTILE_EMBED_FILES = {  # key: (value written over a good file's, what the one line says)
    "a huge declared shape": ("vectors", None, r"'vectors' has shape \(274877906944, 5760\) .* arrays of at most "),
    "deflated zeros": ("vectors", None, r"member 'vectors.npy' inflates to 4,423,808 bytes; members of at most [0-9,]+ are read"),
    "0-d names": ("names", np.asarray("a.png"), r"its names must be a list of strings\. Received: an array of shape \(\) "),
    "0-d image_size": ("image_size", np.asarray(40), r"its image_size must be \(height, width\)\. Received: an array of shape \(\) "),
    "0-d sha256": ("sha256", np.asarray("0" * 64), r"its sha256 must be a list of strings\. Received: an array of shape \(\) "),
    "two frames": ("frame", np.asarray([1, 2]), r"its frame must be an integer\. Received: an array of shape \(2,\) "),
    "a negative frame": ("frame", np.asarray(-1), r"its frame must be >= 0\. Received: -1$"),
    "a JSON list as metric": ("metric", np.asarray("[]"), r"its metric is not a JSON object\. Received: \[\]$"),
    "integer vectors": ("vectors", np.zeros((3, 4), np.int8), r"its vectors must be a matrix of floats\. Received: .* dtype int8$"),
    "object names": ("names", np.asarray(["a", 1, None], dtype=object), r"'names' has dtype object, not numeric or text$"),
    "negative and huge sides": ("image_size", np.asarray([-5, 10**18]), r"its image_size must be \(height, width\), two sides >= 1 of at most "),
    "too many pixels": ("image_size", np.asarray([30000, 30000]), r"its image_size must be .* of at most [\d,]+ pixels\. Received: \(30000, 30000\)$"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE_EMBED_FILES)
def test_read_embeddings_refuses_hostile_files_in_one_line_naming_file_and_key(tmp_path, monkeypatch, case):
    """Every key of an embed file is checked (type, shape, dtype, range) and the file is read
    within a weight file's bounds (`npz_file.read_npz_stream`): a crafted file is one `DataError`
    naming it and the key, never a traceback (TypeError, AttributeError, OverflowError), an
    allocation of petabytes or gigabytes inflated from a few bytes, or queries resized to it."""
    import zipfile

    from keras_lpips.embedding_files import Embeddings, read_embeddings, write_embeddings
    from keras_lpips.weights import untrusted

    good = tmp_path / "good.npz"
    write_embeddings(good, Embeddings(["a.png", "b.png", "c.png"], np.zeros((3, 4)), (40, 40), {"net": "alex"}, "f", 0, ["0" * 64] * 3))
    key, value, message = HOSTILE_EMBED_FILES[case]
    arrays = {name: array for name, array in np.load(good).items() if name != key}
    path = tmp_path / "e.npz"
    np.savez(path, **arrays, **({} if value is None else {key: value}))
    if case == "a huge declared shape":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("vectors.npy", _npy_declaring((2**38, 5760)))
    if case == "deflated zeros":  # 4 MiB of deflated zeros, in a file of a few KB
        with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("vectors.npy", _npy_declaring((192, 5760))[:-64] + bytes(192 * 5760 * 4))
    with pytest.raises(DataError, match=rf"^Cannot read embed file {re.escape(str(path))}: {message}"):
        read_embeddings(path)


def test_an_embed_file_larger_than_any_weight_file_reads(tmp_path, monkeypatch):
    """An embed file is bounded by its own size, not by a weight file's limit (1 GiB: 50,000
    images of 32x32 for alex pass it)."""
    from keras_lpips.embedding_files import Embeddings, read_embeddings, write_embeddings
    from keras_lpips.weights import untrusted

    path = tmp_path / "big.npz"
    vectors = np.random.default_rng(0).random((64, 1024), dtype=np.float32)
    write_embeddings(path, Embeddings([f"{k}.png" for k in range(64)], vectors, (40, 40), {"net": "alex"}, "f"))
    monkeypatch.setattr(untrusted, "MAX_BYTES", 1 << 16)  # a quarter of the vectors
    np.testing.assert_array_equal(read_embeddings(path).vectors, vectors)


def test_cli_nearest_with_a_hostile_embed_file_is_one_line(tmp_path):
    from keras_lpips.embedding_files import Embeddings, write_embeddings

    good = tmp_path / "good.npz"
    write_embeddings(good, Embeddings(["a.png"], np.zeros((1, 4)), (40, 40), {"net": "alex"}, "f"))
    np.savez(tmp_path / "e.npz", **{**dict(np.load(good)), "names": np.asarray("a.png")})
    result = run_cli("nearest", tmp_path / "e.npz", good, "-k", "1")
    line = one_error_line(result)
    assert result.returncode == 1 and line == f"error: Cannot read embed file {tmp_path / 'e.npz'}: its names must be a list of strings. " \
        "Received: an array of shape () and dtype <U5", line


def test_embed_folder_embeds_changed_images_again_and_drops_removed_ones(tmp_path, metric):
    """A rerun makes the file describe the folder as it is now: an image whose bytes changed is
    embedded again (under its old name, with its size and modification time kept, or in another
    folder with the same names), one no longer there is dropped, an unchanged one is kept."""
    from keras_lpips.embedding_files import read_embeddings
    from keras_lpips.resumable_embedding import EmbedCounts, embed_folder

    rng = np.random.default_rng(13)
    folder, out = tmp_path / "a", tmp_path / "a.npz"
    write_images(folder, rng.random((2, 40, 40, 3), dtype=np.float32))
    assert embed_folder(metric, folder, out) == EmbedCounts(2, 0, 2)
    (folder / "01.png").write_bytes((folder / "00.png").read_bytes())  # 01.png is now 00.png
    assert embed_folder(metric, folder, out) == EmbedCounts(1, 0, 2)
    np.testing.assert_allclose(read_embeddings(out).vectors[1], read_embeddings(out).vectors[0], rtol=0, atol=1e-6)
    assert embed_folder(metric, folder, out) == EmbedCounts(0, 0, 2)

    for k, image in enumerate(rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)):  # BMPs of one size: equal sizes
        Image.fromarray(image).save(folder / f"{k}.bmp")
    assert embed_folder(metric, folder, out) == EmbedCounts(2, 0, 4)
    times = os.stat(folder / "0.bmp")
    (folder / "0.bmp").write_bytes((folder / "1.bmp").read_bytes())
    os.utime(folder / "0.bmp", ns=(times.st_atime_ns, times.st_mtime_ns))  # as `cp -p` or `rsync -t` would
    assert embed_folder(metric, folder, out) == EmbedCounts(1, 0, 4)
    stored = read_embeddings(out)
    assert stored.names == ["0.bmp", "00.png", "01.png", "1.bmp"]
    np.testing.assert_allclose(stored.vectors[0], stored.vectors[3], rtol=0, atol=1e-6)

    other = tmp_path / "b"  # the same names, one of the same bytes
    write_images(other, rng.random((3, 40, 40, 3), dtype=np.float32))
    (other / "00.png").write_bytes((folder / "00.png").read_bytes())
    assert embed_folder(metric, other, out) == EmbedCounts(2, 2, 3)  # 01.png, 02.png; 0.bmp, 1.bmp dropped
    stored = read_embeddings(out)
    assert stored.names == ["00.png", "01.png", "02.png"]
    np.testing.assert_allclose(stored.vectors, embed_images(metric, read_folder(other), 2), rtol=0, atol=1e-6)


def test_embed_folder_embeds_again_the_images_of_a_file_that_records_no_contents(tmp_path, metric):
    """A file of an older version (no `sha256`) cannot tell which images its vectors are of: a
    rerun embeds them all again, with a note, and records them; `nearest` still reads it."""
    from keras_lpips.embedding_files import read_embeddings, write_embeddings
    from keras_lpips.embedding_queries import nearest_images
    from keras_lpips.resumable_embedding import EmbedCounts, embed_folder
    from keras_lpips.errors import KerasLPIPSNote

    folder, out = tmp_path / "a", tmp_path / "a.npz"
    write_images(folder, np.random.default_rng(14).random((2, 40, 40, 3), dtype=np.float32))
    embed_folder(metric, folder, out)
    fresh = read_embeddings(out)
    write_embeddings(out, dataclasses.replace(fresh, vectors=fresh.vectors + 1, sha256=None))  # stale, unrecorded
    assert nearest_images(out, out, 1, None).indices.tolist() == [[0], [1]]
    with pytest.warns(KerasLPIPSNote, match=r"a.npz does not record which image contents .*: embedding its images again$"):
        assert embed_folder(metric, folder, out) == EmbedCounts(2, 0, 2)
    stored = read_embeddings(out)
    np.testing.assert_array_equal(stored.vectors, fresh.vectors)
    assert stored.sha256 == fresh.sha256 and len(stored.sha256[0]) == 64
    # One of another metric is refused as a new one is, not replaced.
    other = {**fresh.metric, "net": "vgg"}
    write_embeddings(out, dataclasses.replace(fresh, metric=other, fingerprint="another", sha256=None))
    with pytest.raises(InputError, match="belong to different metrics.*overwrite=True to embed the folder anew"):
        embed_folder(metric, folder, out)
    assert read_embeddings(out).fingerprint == "another"


def test_embed_says_how_to_go_on_from_a_file_it_cannot_complete(tmp_path):
    """A damaged part or embed file, one of another metric: one line naming what to delete or
    --overwrite, which starts over (the parts an earlier run left deleted)."""
    from keras_lpips.resumable_embedding import parts_folder

    folder, out = tmp_path / "a", tmp_path / "a.npz"
    write_images(folder, np.random.default_rng(15).random((2, 40, 40, 3), dtype=np.float32))
    part = parts_folder(out) / "part-000001.npz"
    part.parent.mkdir()
    part.write_bytes(b"damaged")
    result = run_cli("embed", folder, "--out", out, *RANDOM)
    assert result.returncode == 1 and one_error_line(result) == (
        f"error: Cannot read embed file {part}: not the .npz keras-lpips embed writes; "
        "delete it (its images are embedded again), or pass --overwrite to embed the folder anew"
    )
    result = run_cli("embed", folder, "--out", out, "--overwrite", *RANDOM)
    assert result.returncode == 0 and result.stdout == f"embedded 2 new or changed image(s); {out} holds 2\n", result.stderr
    assert not part.parent.exists()
    result = run_cli("embed", folder, "--out", out, *RANDOM)  # an untrained backbone is drawn anew: another metric
    line = one_error_line(result)
    assert result.returncode == 2 and "different weights" in line and "mean nothing; pass --overwrite to embed the folder anew. Received: " in line
    out.write_bytes(b"damaged")
    result = run_cli("embed", folder, "--out", out, *RANDOM)
    assert result.returncode == 1 and one_error_line(result).endswith("; pass --overwrite to embed the folder anew, replacing it")
    assert run_cli("embed", folder, "--out", out, "--overwrite", *RANDOM).returncode == 0


def test_embed_folder_keeps_the_parts_a_rerun_did_not_delete(tmp_path, metric):
    """After a damaged part is deleted (as the refusal says), new parts take free names: none
    replaces a finished one. An image of another size than the file's: resize it, or start over."""
    from keras_lpips.resumable_embedding import EmbedCounts, embed_folder, parts_folder

    rng = np.random.default_rng(16)
    folder, out = tmp_path / "a", tmp_path / "a.npz"
    write_images(folder, rng.random((4, 40, 40, 3), dtype=np.float32))

    def interrupt_after(count):
        def progress(done, total):
            if done > count:
                raise KeyboardInterrupt

        return progress

    with pytest.raises(KeyboardInterrupt):
        embed_folder(metric, folder, out, chunk=1, progress=interrupt_after(2))
    parts = sorted(path.name for path in parts_folder(out).iterdir())
    assert parts == ["part-000000.npz", "part-000001.npz"]
    (parts_folder(out) / parts[0]).unlink()
    with pytest.raises(KeyboardInterrupt):
        embed_folder(metric, folder, out, chunk=1, progress=interrupt_after(1))
    assert len(list(parts_folder(out).iterdir())) == 2  # part-000001.npz kept, part-000000.npz anew
    assert embed_folder(metric, folder, out, chunk=1) == EmbedCounts(2, 0, 4)
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(folder / "big.png")
    with pytest.raises(InputError, match=r"big.png is 48x48 but .*a.npz holds images of 40x40; pass resize=True to resize it, "
                                         r"or overwrite=True to embed the folder anew$"):  # fmt: skip
        embed_folder(metric, folder, out)
    assert embed_folder(metric, folder, out, resize=True) == EmbedCounts(1, 0, 5)


def test_a_failed_embed_leaves_nothing_new_and_says_what_it_cannot_write(tmp_path, metric):
    """A run stopped before a chunk is finished leaves no parts folder; an output folder that
    takes no new files is "Cannot write PATH: reason" in one line, as for every command."""
    from keras_lpips.resumable_embedding import embed_folder
    from keras_lpips.errors import OutputError

    folder = tmp_path / "a"
    write_images(folder, np.random.default_rng(17).random((2, 40, 40, 3), dtype=np.float32))

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_folder(metric, folder, tmp_path / "a.npz", progress=interrupt)
    assert os.listdir(tmp_path) == ["a"]
    unwritable = "/proc/keras-lpips-test.npz"  # /proc takes no new files, even for root
    with pytest.raises(OutputError, match=r"^Cannot write /proc/keras-lpips-test\.npz: No such file or directory$"):
        embed_folder(metric, folder, unwritable)
    result = run_cli("embed", folder, "--out", unwritable, *RANDOM)
    assert result.returncode == 1 and one_error_line(result).startswith("error: Cannot write /proc/keras-lpips-test.npz: ")


# --- multi-frame images: one frame, chosen with frame= / --frame --------------------------------


def animated_folder(folder, rng):
    """A folder of a still PNG (0.png), a 3-frame animated GIF (anim.gif) and its frame 1 saved
    as a PNG by Pillow (still.png), all 40x40."""
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "0.png")
    first, *others = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    first.save(folder / "anim.gif", save_all=True, append_images=others)
    with Image.open(folder / "anim.gif") as gif:
        gif.seek(1)
        gif.convert("RGB").save(folder / "still.png")
    return folder


def test_embed_nearest_and_diversity_read_the_frame_asked_of_an_animated_image(tmp_path):
    from keras_lpips.embedding_files import read_embeddings

    folder = animated_folder(tmp_path / "clips", np.random.default_rng(10))
    refused = f"error: {folder / 'anim.gif'} has 3 frames (an animated or multi-page image); choose one with --frame K, K from 0 to 2"
    out = tmp_path / "clips.npz"
    for args in (["embed", folder, "--out", out], ["nearest", folder, folder], ["diversity", folder]):
        result = run_cli(*args, *RANDOM)
        assert result.returncode == 2 and one_error_line(result) == refused, (args, result.stderr)

    result = run_cli("embed", folder, "--out", out, "--frame", "1", *RANDOM)
    assert result.returncode == 0, result.stderr
    stored = read_embeddings(out)
    assert stored.names == ["0.png", "anim.gif", "still.png"] and stored.frame == 1
    np.testing.assert_allclose(stored.vectors[1], stored.vectors[2], rtol=0, atol=1e-6)  # frame 1 is still.png
    assert np.abs(stored.vectors[0] - stored.vectors[1]).max() > 1e-3

    result = run_cli("nearest", folder, folder, "-k", "3", "--frame", "1", "--json", *RANDOM)
    assert result.returncode == 0, result.stderr
    found = {query["query"]: {n["name"]: n["distance"] for n in query["nearest"]} for query in json.loads(result.stdout)["queries"]}
    assert found["anim.gif"]["still.png"] <= 1e-6 and found["anim.gif"]["0.png"] > 1e-3
    (folder / "0.png").unlink()
    result = run_cli("diversity", folder, "--frame", "1", "--json", *RANDOM)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 1 and report["mean"] <= 1e-6


def test_embed_folder_completes_with_the_frame_it_was_written_with(tmp_path, metric):
    """A run refused at a multi-frame image leaves what it embedded: it holds no multi-frame
    image, so a rerun with a frame completes it; that frame is then the only one that does."""
    from keras_lpips.embedding_files import read_embeddings
    from keras_lpips.resumable_embedding import EmbedCounts, embed_folder, parts_folder

    folder = animated_folder(tmp_path / "clips", np.random.default_rng(11))
    out = tmp_path / "clips.npz"
    with pytest.raises(InputError, match=r"anim.gif has 3 frames .*choose one with frame=K, K from 0 to 2$"):
        embed_folder(metric, folder, out, chunk=1)
    assert len(list(parts_folder(out).glob("part-*.npz"))) == 1  # 0.png
    assert embed_folder(metric, folder, out, chunk=1, frame=1) == EmbedCounts(2, 0, 3)
    stored = read_embeddings(out)
    assert stored.frame == 1
    np.testing.assert_allclose(stored.vectors[1], stored.vectors[2], rtol=0, atol=1e-6)
    (folder / "new.png").write_bytes((folder / "0.png").read_bytes())
    for frame, received in [(0, "frame=0"), (None, "no frame")]:
        with pytest.raises(InputError, match=rf"holds frame 1 of its multi-frame images: complete it with frame=1, .*Received: {received}$"):
            embed_folder(metric, folder, out, frame=frame)
    assert embed_folder(metric, folder, out, frame=1) == EmbedCounts(1, 0, 4)
    with pytest.raises(InputError, match=r"Received: frame=-1"):
        embed_folder(metric, folder, out, frame=-1)


def test_embed_folder_records_a_frame_only_where_a_multi_frame_image_was_read(tmp_path, metric):
    """Images of one frame ignore `frame`: a file of them records none, so a rerun without a
    frame (or with another) completes it; the first multi-frame image read records it."""
    from keras_lpips.embedding_files import read_embeddings
    from keras_lpips.resumable_embedding import EmbedCounts, embed_folder

    folder = animated_folder(tmp_path / "clips", np.random.default_rng(12))
    (folder / "anim.gif").rename(tmp_path / "anim.gif")
    out = tmp_path / "clips.npz"
    assert embed_folder(metric, folder, out, frame=2) == EmbedCounts(2, 0, 2)
    assert read_embeddings(out).frame is None
    (folder / "new.png").write_bytes((folder / "0.png").read_bytes())
    assert embed_folder(metric, folder, out) == EmbedCounts(1, 0, 3)
    (tmp_path / "anim.gif").rename(folder / "anim.gif")
    assert embed_folder(metric, folder, out, frame=2) == EmbedCounts(1, 0, 4)
    assert read_embeddings(out).frame == 2
    (folder / "newer.png").write_bytes((folder / "0.png").read_bytes())
    with pytest.raises(InputError, match=r"holds frame 2 of its multi-frame images"):
        embed_folder(metric, folder, out)
