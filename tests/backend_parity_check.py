"""Run in a subprocess with KERAS_BACKEND set: compares one net with the reference fixture.

Usage: KERAS_BACKEND=jax python tests/backend_parity_check.py NET
Prints {"backend": ..., "worst": largest absolute error over distances and maps, "traced": the
message a `jax.jit`-compiled call on batches of different sizes raised (None elsewhere)}; on JAX also
"traced_values_nan": whether jitted calls on values outside input_range and on NaN gave NaN distances.
"""

import json
import pathlib
import sys
import tempfile

import keras
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
from data_tools.seeded_weights import seeded_state_dict  # noqa: E402
from keras_lpips import LPIPS  # noqa: E402

net = sys.argv[1]
with np.load(pathlib.Path(__file__).parent / "fixtures" / "reference_parity.npz") as data:
    reference = {k: data[k] for k in data.files}
with tempfile.TemporaryDirectory() as tmp:
    weights = pathlib.Path(tmp) / "seeded.npz"
    shapes = dict(json.loads(str(reference[f"{net}/shapes"])))
    np.savez(weights, **seeded_state_dict(shapes, int(reference[f"{net}/seed"])))
    metric = LPIPS(net=net, backbone_weights=str(weights), lin_weights="v0.1")


def error(got, expected):
    """Largest absolute difference; infinite where either holds a NaN or an infinity (which
    `max` would otherwise drop: max(0.0, nan) is 0.0)."""
    difference = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    return float(difference.max()) if np.isfinite(difference).all() else float("inf")


worst = 0.0
for size in ("64", "odd"):
    pair = [reference[f"x{size}_0"], reference[f"x{size}_1"]]
    for method, name in ((metric, "distance"), (metric.spatial_map, "map")):
        got = keras.ops.convert_to_numpy(method(pair))
        worst = max(worst, error(got, reference[f"{net}/v0.1/lpips/{size}/{name}"]))
# In a functional model with the sizes left open (symbolic on JAX while tracing).
inputs = [keras.Input((None, None, 3)), keras.Input((None, None, 3))]
functional = keras.Model(inputs, metric(inputs))
got = keras.ops.convert_to_numpy(functional.predict(pair, verbose=0))
worst = max(worst, error(got, reference[f"{net}/v0.1/lpips/{size}/distance"]))
traced = None
if keras.backend.backend() == "jax":  # under jax.jit shapes are static: the eager shape checks hold
    import jax

    from keras_lpips.errors import InputError

    jitted = jax.jit(lambda a, b: metric([a, b]))
    worst = max(worst, error(jitted(*pair), keras.ops.convert_to_numpy(metric(pair))))
    try:
        jitted(pair[0], np.concatenate([pair[1], pair[1]]))  # one batch larger than the other
    except InputError as error:
        traced = str(error)
    # Values cannot raise under jit: outside input_range (0-255 for (-1, 1)) or NaN, the distances are NaN.
    refused = [jitted(pair[0], pair[1] * 255), jitted(pair[0], np.where(pair[1] > 0.9, np.nan, pair[1]))]
    traced_values = [bool(np.isnan(keras.ops.convert_to_numpy(d)).all()) for d in refused]
    print(json.dumps({"backend": "jax", "worst": worst, "traced": traced, "traced_values_nan": traced_values}))
    sys.exit(0)
print(json.dumps({"backend": keras.backend.backend(), "worst": worst, "traced": traced}))
