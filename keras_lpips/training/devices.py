"""Where training runs: the mixed-precision policy and the `tf.distribute` strategy."""

import json
import os

import tensorflow as tf

from keras_lpips.errors import InputError

PRECISIONS = ("auto", "off", "bf16", "fp16")
STRATEGIES = ("auto", "one-device", "mirrored", "multiworker", "tpu")
POLICIES = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True where the CPU flags include avx512_bf16 or amx_bf16 (Linux; False elsewhere)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def resolve_precision(choice, strategy=None):
    """The Keras dtype policy for a `mixed_precision` choice: "off" float32, "bf16" mixed_bfloat16,
    "fp16" mixed_float16; "auto": fp16 with a GPU, bf16 on a TPU or a CPU with native bf16
    (avx512_bf16 / amx_bf16), else float32."""
    if choice not in PRECISIONS:
        raise InputError(f"mixed_precision must be one of {', '.join(PRECISIONS)}. Received: mixed_precision={choice!r}")
    if choice != "auto":
        return POLICIES[choice]
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_native_bf16() else "float32"


def _tpu_present():
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0"))


def make_strategy(choice="auto"):
    """The `tf.distribute` strategy for a `strategy` choice; returns (strategy, name).

    "auto": a TPU if one is configured (TPU_NAME / COLAB_TPU_ADDR / a TPU VM's /dev/accel0),
    else MultiWorkerMirrored if TF_CONFIG is set (it also uses every local GPU), else Mirrored
    over the GPUs if there are several, else TensorFlow's default strategy. "mirrored" without
    GPUs mirrors over the logical CPU devices. MultiWorkerMirrored must be created before
    TensorFlow runs any op, so call this first.
    """
    if choice not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={choice!r}")
    if choice == "auto":
        if _tpu_present():
            choice = "tpu"
        elif os.environ.get("TF_CONFIG"):
            choice = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            return tf.distribute.get_strategy(), "default"
    if choice == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=os.environ.get("TPU_NAME", "local"))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            reason = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0].rstrip(".")
            raise InputError(f"strategy=tpu: no TPU could be reached ({reason})") from None
        return tf.distribute.TPUStrategy(resolver), "tpu"
    if choice == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), "multiworker"
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if choice == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0"), "one-device"
    if gpus:
        return tf.distribute.MirroredStrategy(gpus), "mirrored"
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()), "mirrored"


def worker_role(strategy_name):
    """(is_chief, worker index) under MultiWorkerMirrored's TF_CONFIG; (True, 0) otherwise."""
    if strategy_name != "multiworker" or not os.environ.get("TF_CONFIG"):
        return True, 0
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return kind == "chief", index
    return kind == "worker" and index == 0, index
