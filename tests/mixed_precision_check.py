"""LPIPS under the mixed dtype policies against float32, on the backend KERAS_BACKEND names.

Imported by tests/test_mixed_precision.py (in-process, TensorFlow) and run there as a script for the
other backends, each in a fresh interpreter (the backend is fixed per process):

    KERAS_BACKEND=jax python tests/mixed_precision_check.py alex    # prints one JSON line

Seeded backbones (no download), the shipped v0.1 linear weights, eight 64x64 pairs: one identical,
two random, three near (noise sd 0.05), two saturated (+1 against -1; a +-1 checkerboard against +1).
"""

import json
import sys

import numpy as np

POLICIES = ("mixed_float16", "mixed_bfloat16")


def image_pairs():
    rng = np.random.default_rng(7)
    x0 = rng.uniform(-1, 1, (8, 64, 64, 3)).astype(np.float32)
    x1 = rng.uniform(-1, 1, (8, 64, 64, 3)).astype(np.float32)
    x1[0] = x0[0]
    x1[3:6] = np.clip(x0[3:6] + 0.05 * rng.standard_normal(x0[3:6].shape), -1, 1)
    # Saturated: all +1 against all -1, a +-1 checkerboard against a constant +1.
    x0[6], x1[6] = 1.0, -1.0
    x0[7], x1[7] = np.where(np.add.outer(np.arange(64), np.arange(64))[..., None] % 2 == 0, 1.0, -1.0), 1.0
    return x0, x1


def check(net, policies=POLICIES):
    """{"backend", "float32": distances, "policies": {policy: distances and the dtypes seen}}."""
    import keras
    from keras import ops

    from keras_lpips.model import LPIPS

    x0, x1 = image_pairs()
    dtype = keras.backend.standardize_dtype
    result = {"backend": keras.backend.backend(), "policies": {}}
    result["float32"] = ops.convert_to_numpy(LPIPS(net=net, backbone_weights=None, seed=0)([x0, x1])).tolist()
    previous = keras.config.dtype_policy()
    for policy in policies:
        keras.config.set_dtype_policy(policy)
        try:
            metric = LPIPS(net=net, backbone_weights=None, seed=0)
        finally:
            keras.config.set_dtype_policy(previous)
        distances = metric([x0, x1])
        symbolic = keras.KerasTensor((1, 64, 64, 3))  # dtypes without another pass
        result["policies"][policy] = {
            "distances": ops.convert_to_numpy(distances).tolist(),
            "dtype": dtype(distances.dtype),
            "backbone_dtype": dtype(metric.backbone(metric.scaling(symbolic))[0].dtype),
            "feature_dtype": dtype(metric.features(symbolic)[0].dtype),
            "head_dtypes": sorted({head.compute_dtype for head in metric.heads} | {dtype(h.kernel.dtype) for h in metric.heads}),
        }
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    return result


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1] if len(sys.argv) > 1 else "alex")))
