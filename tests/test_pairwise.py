"""Distances over sets of images: all pairs (`distance_matrix`) and matched pairs, against single calls."""

import numpy as np
import pytest

from keras_lpips import InputError, LPIPS
from keras_lpips.pairwise import cross_distance_matrix, distance_matrix, paired_distances


@pytest.fixture(scope="module")
def metric():
    return LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))


# The embedding path (the default), then the features path in one chunk and one pair per chunk.
@pytest.mark.parametrize("n,method,chunk_bytes", [(5, None, None), (5, "features", None), (7, "features", 1)])
def test_distance_matrix_equals_single_calls(metric, monkeypatch, n, method, chunk_bytes):
    import keras_lpips.pairwise as pairwise

    if chunk_bytes is not None:
        monkeypatch.setattr(pairwise, "CHUNK_BYTES", chunk_bytes)
    images = np.random.default_rng(n).random((n, 40, 52, 3), dtype=np.float32)
    done = []
    matrix = distance_matrix(metric, images, batch_size=3, progress=done.append, method=method)
    assert sum(done) == n * (n - 1) // 2 and (len(done) == 1) == (chunk_bytes is None)
    for i in range(n):
        assert matrix[i, i] == 0
        for j in range(i + 1, n):
            single = float(np.asarray(metric([images[i : i + 1], images[j : j + 1]]))[0])
            assert matrix[i, j] == matrix[j, i]
            np.testing.assert_allclose(matrix[i, j], single, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        paired_distances(metric, list(images[:-1]), list(images[1:])), np.diagonal(matrix, 1), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("method", [None, "features", "pairs"])
def test_cross_distance_matrix_equals_single_calls(metric, method):
    rng = np.random.default_rng(3)
    images0, images1 = rng.random((3, 40, 44, 3), dtype=np.float32), rng.random((4, 40, 44, 3), dtype=np.float32)
    images1[0] = images0[1]
    matrix = cross_distance_matrix(metric, images0, images1, batch_size=2, method=method)
    # A copy: exactly 0 where its pair is scored in one call (pairs), else within the last bits of
    # features computed at two batch positions (docs/embedding.md).
    assert matrix.shape == (3, 4) and (matrix[1, 0] == 0 if method == "pairs" else matrix[1, 0] < 1e-12)
    for i in range(3):
        for j in range(4):
            single = float(np.asarray(metric([images0[i : i + 1], images1[j : j + 1]]))[0])
            np.testing.assert_allclose(matrix[i, j], single, rtol=0, atol=1e-6)


def test_methods_are_checked(metric):
    images = np.zeros((2, 40, 40, 3), np.float32)
    with pytest.raises(InputError, match="method must be one of"):
        distance_matrix(metric, images, method="fast")
    with pytest.raises(InputError, match="of one size"):
        cross_distance_matrix(metric, images, np.zeros((2, 44, 40, 3), np.float32))


def test_distance_matrix_refuses_bad_sets(metric):
    with pytest.raises(InputError, match="at least two images"):
        distance_matrix(metric, np.zeros((1, 40, 40, 3), np.float32))
    with pytest.raises(InputError, match="too small"):
        distance_matrix(metric, np.zeros((2, 20, 20, 3), np.float32))
    with pytest.raises(InputError, match="outside input_range"):
        distance_matrix(metric, np.full((2, 40, 40, 3), 3.0, np.float32))
