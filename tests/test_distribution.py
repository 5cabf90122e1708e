"""`LPIPSLoss` and `MeanLPIPS` in a user's model under `tf.distribute.MirroredStrategy`, when a
short last batch leaves a replica nothing (17 pairs in batches of 8 over 2 replicas: the last
batch's one pair goes to replica 0, replica 1 gets an empty share): `fit` runs and `evaluate`
gives the single-device numbers (the metric was refusing the empty share, "y_true is empty").

In a subprocess with 2 logical CPUs and TensorFlow's oneDNN convolutions off: those fail on an
empty batch on a CPU ("input depth must be evenly divisible by filter depth"), in any model's
convolution, not only the metric's; GPUs run other kernels.
"""

import json
import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import json
import numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_lpips import LPIPS, LPIPSLoss, MeanLPIPS

rng = np.random.default_rng(0)
x = rng.uniform(0, 1, (17, 32, 32, 3)).astype("float32")
y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype("float32")
args = dict(net="alex", layers=2, backbone_weights=None, seed=0, input_range=(0, 1))

def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(32 * 32 * 3, activation="sigmoid"), keras.layers.Reshape((32, 32, 3))])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LPIPSLoss(**args), metrics=[MeanLPIPS(**args)], jit_compile=False)
    mean = float(np.mean(np.asarray(LPIPS(**args)([y, np.asarray(model(x))]))))
    evaluated = model.evaluate(x, y, batch_size=8, verbose=0)
    fitted = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return {"evaluate": evaluated, "mean": mean, "fit_loss": fitted["loss"][0], "replicas": strategy.num_replicas_in_sync}

single = tf.distribute.OneDeviceStrategy("/cpu:0")
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
print(json.dumps({"single": run(single), "mirrored": run(mirrored)}))
"""


def test_a_replica_with_an_empty_share_adds_nothing(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    single, mirrored = report["single"], report["mirrored"]
    assert mirrored["replicas"] == 2 and single["mean"] == mirrored["mean"] > 0
    for run in (single, mirrored):  # the loss and MeanLPIPS: the mean over the 17 pairs
        assert abs(run["evaluate"][0] - run["mean"]) < 1e-6 and abs(run["evaluate"][1] - run["mean"]) < 1e-6, run
    assert abs(mirrored["fit_loss"] - single["fit_loss"]) < 1e-6
