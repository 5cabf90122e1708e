"""The matrix products of distances between embeddings (`embedding`, `embedding_index`): TensorFlow's
kernels where TensorFlow can be imported, NumPy's where it cannot.

TensorFlow's, because NumPy's OpenBLAS threads stall on a busy machine (5-10x slower on 2 shared
cores, measured); NumPy's, because the metric runs under Keras' JAX and PyTorch backends without
TensorFlow installed. Both multiply in the dtype of their operands (float64 for distances), so
the results agree to rounding (tests/test_embedding.py).

    rows = operand(values, np.float64)      # cast once, for every product it takes part in
    products = matmul(rows, columns, transpose_b=True)
    norms = squared_norms(rows)
"""

import numpy as np


def _tensorflow():
    """The `tensorflow` module, or None where it cannot be imported."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


def operand(values, dtype):
    """The array `values` cast to `dtype`, as `matmul` and `squared_norms` take it: a TensorFlow
    tensor, or a NumPy array without TensorFlow. Either slices as an array does."""
    tf = _tensorflow()
    return np.asarray(values, dtype) if tf is None else tf.cast(values, dtype)


def matmul(a, b, transpose_b=False):
    """a b, or a b^T with `transpose_b`, of two `operand`s (or NumPy arrays of one dtype): a NumPy array."""
    tf = _tensorflow()
    if tf is None:
        return np.matmul(a, np.transpose(b) if transpose_b else b)
    return tf.linalg.matmul(a, b, transpose_b=transpose_b).numpy()


def squared_norms(a):
    """sum_j a_ij^2 of each row of a 2-D `operand`: a NumPy array."""
    tf = _tensorflow()
    return np.einsum("ij,ij->i", a, a) if tf is None else tf.einsum("ij,ij->i", a, a).numpy()
