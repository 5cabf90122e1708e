"""Run in a subprocess with KERAS_BACKEND set: the library's API on that backend beyond the
numbers (tests/test_backends.py). Prints one JSON line.

Usage: KERAS_BACKEND=torch python tests/backend_api_check.py

Warnings are errors here, but DeprecationWarning (Keras' torch backend raises one converting to
numpy): under PyTorch the metric's outputs and embeddings require grad (its heads are
trainable), and numpy cannot read them without `keras.ops.convert_to_numpy`.
"""

import json
import os
import tempfile
import warnings

warnings.simplefilter("error")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_lpips  # noqa: E402
from keras_lpips.embedding import all_pairs, nearest, pair_statistics  # noqa: E402
from keras_lpips.ranking import jnd_map, twoafc_score  # noqa: E402

images = np.random.default_rng(0).uniform(0, 1, (3, 40, 40, 3)).astype(np.float32)
pair = [images[:2], images[1:]]
metric = keras_lpips.LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
report = {"backend": keras.backend.backend()}

# A functional model holding the metric, saved, then loaded after clear_session (as in a new process).
inputs = [keras.Input((40, 40, 3)), keras.Input((40, 40, 3))]
model = keras.Model(inputs, metric(inputs))
report["operations"] = [type(operation).__name__ for operation in model.operations]
path = os.path.join(tempfile.mkdtemp(), "wrapped.keras")
model.save(path)
distances = keras.ops.convert_to_numpy(metric(pair))
keras.backend.clear_session()
reloaded = keras.saving.load_model(path).predict(pair, verbose=0)
report["reloaded"] = float(np.abs(keras.ops.convert_to_numpy(reloaded) - distances).max())

# What the metric returns goes straight into the library's numpy functions.
vectors = metric.embed(images)
report["all_pairs"] = float(abs(all_pairs(vectors)[0, 1] - distances[0]))  # d(images[0], images[1])
report["nearest"] = nearest(vectors[:1], vectors, k=1)[0].tolist()
report["pair_mean"] = float(pair_statistics(vectors).mean)
report["twoafc"] = twoafc_score(metric(pair), metric([images[:2], images[:2]]), np.zeros(2))  # d1 = 0: p1 preferred
report["jnd"] = jnd_map(metric(pair), np.ones(2))

# The loss: no grad where none is asked for (its metric is frozen), a gradient w.r.t. y_pred.
loss = keras_lpips.LPIPSLoss(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
report["loss"] = float(loss(*pair))
if keras.backend.backend() == "torch":
    import torch

    y_pred = torch.tensor(pair[1], requires_grad=True)
    loss(pair[0], y_pred).backward()
    gradient = y_pred.grad.numpy()
elif keras.backend.backend() == "jax":
    import jax

    gradient = np.asarray(jax.grad(lambda y: loss(pair[0], y))(pair[1]))
else:
    import tensorflow as tf

    y_pred = tf.Variable(pair[1])
    with tf.GradientTape() as tape:
        value = loss(pair[0], y_pred)
    gradient = tape.gradient(value, y_pred).numpy()
report["gradient"] = float(np.abs(gradient).sum()) if np.isfinite(gradient).all() else None
print(json.dumps(report))
