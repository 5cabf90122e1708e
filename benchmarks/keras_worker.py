"""The keras-lpips side of the benchmark, run with `.venv`'s python.

`benchmarks/run.py` starts it as a subprocess (TensorFlow's settings come from its
command line: oneDNN and thread pools are fixed when TensorFlow starts) and speaks
JSON lines over stdin/stdout (benchmarks/worker_protocol.py), as reference_worker.py does:

    {"cmd": "info"}                                         -> versions, oneDNN, threads
    {"cmd": "matmul", "n": 4096, "calls": 3}                -> {"times": [...]}
    {"cmd": "distance", "net": "alex", "precision": "float32", "batch": 64, "size": 64, "calls": 2}
    {"cmd": "train", "net": "alex", "batch": 50, "size": 64, "calls": 2}
    {"cmd": "export_prepare", "net": "alex", "size": 256}   -> builds the SavedModel and TFLite files
    {"cmd": "export", "kind": "savedmodel" | "tflite", "calls": 2}
    {"cmd": "bf16_error"}                                   -> distances under bf16 vs float32
    {"cmd": "quit"}

Each timed call of "distance" is `np.asarray(metric([x0, x1]))` on numpy NHWC arrays
in [-1, 1]: what a user's call costs, the input checks and conversions included.

    .venv/bin/python benchmarks/keras_worker.py --peak-memory vgg 2048 float32
measures, in this fresh process, the peak resident memory of one pair.
"""

import argparse
import os
import pathlib
import platform
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="keras-lpips worker for benchmarks/run.py")
    parser.add_argument("--onednn", choices=("on", "off", "tf-default"), default="on")
    parser.add_argument("--inter-op", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--intra-op", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--peak-memory", nargs=3, metavar=("NET", "SIZE", "PRECISION"))
    return parser.parse_args(argv)


ARGS = parse_args()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if ARGS.onednn != "tf-default":
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if ARGS.onednn == "on" else "0"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from worker_protocol import CellImages, cell_seed, images, resident_peak, serve, timed, write_reply  # noqa: E402

if ARGS.inter_op:
    tf.config.threading.set_inter_op_parallelism_threads(ARGS.inter_op)
if ARGS.intra_op:
    tf.config.threading.set_intra_op_parallelism_threads(ARGS.intra_op)

import keras  # noqa: E402

from keras_lpips import LPIPS  # noqa: E402


def nhwc(x):
    """The protocol's NCHW images in keras-lpips' layout."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


cached_images = CellImages(nhwc)

_METRICS = {}


def metric(net, precision="float32"):
    if (net, precision) not in _METRICS:
        _METRICS[(net, precision)] = LPIPS(net=net, precision=precision)
    return _METRICS[(net, precision)]


_TRAINERS = {}
_MATMUL = tf.function(tf.matmul)
_OPERANDS = {}


def matmul_operands(n):
    if n not in _OPERANDS:
        _OPERANDS[n] = (tf.random.normal((n, n)), tf.random.normal((n, n)))
    return _OPERANDS[n]


def trainer(net):
    if net not in _TRAINERS:
        from keras_lpips import training

        model = training.LPIPSTrainer(LPIPS(net=net, lin_weights=None, dropout=0.5), train_backbone=False)
        adam = getattr(training, "reference_adam", None)
        model.compile(optimizer=adam(1e-4, 0.5) if adam else keras.optimizers.Adam(1e-4, beta_1=0.5, epsilon=1e-8))
        _TRAINERS[net] = model
    return _TRAINERS[net]


_EXPORT = {}


def export_prepare(net, size):
    from keras_lpips.export import export_savedmodel, export_tflite

    remove_exports()
    tmp = tempfile.mkdtemp(prefix="keras-lpips-bench-")
    m = metric(net)
    saved = export_savedmodel(m, pathlib.Path(tmp) / "savedmodel")
    lite = export_tflite(m, pathlib.Path(tmp) / "model.tflite")
    x0, x1 = images(1, size, cell_seed(1, size), layout=nhwc)  # the reference's batch-1 distance pair
    u0, u1 = (x0 + 1) / 2, (x1 + 1) / 2  # the exported signatures take [0, 1]
    signature = tf.saved_model.load(str(saved)).signatures["serving_default"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(lite), num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner("serving_default")
    t0, t1 = tf.constant(u0), tf.constant(u1)
    _EXPORT.update(
        savedmodel=lambda: float(signature(img0=t0, img1=t1)["distance"].numpy()[0]),
        tflite=lambda: float(runner(img0=u0, img1=u1)["distance"][0]),
        keras=lambda: float(np.asarray(m([x0, x1]))[0]),
        dir=tmp,
    )
    return {"savedmodel_bytes": sum(f.stat().st_size for f in pathlib.Path(saved).rglob("*") if f.is_file()),
            "tflite_bytes": pathlib.Path(lite).stat().st_size}


def bf16_error(nets, quick):
    """Distances under precision="bf16" against float32, on examples/ and random images."""
    from keras_lpips.images import read_image

    examples = [read_image(ROOT / "examples" / f"{n}.png") * 2 - 1 for n in ("ref", "p0", "p1")]
    sets = {"examples/ ref-p0, ref-p1, p0-p1 (64x64)": (np.stack([examples[0], examples[0], examples[1]]),
                                                        np.stack([examples[1], examples[2], examples[2]]))}
    rng = np.random.default_rng(2024)
    for n, size in ((4, 64),) if quick else ((32, 64), (8, 256)):
        sets[f"random uniform, {n} pairs {size}x{size}"] = tuple(
            rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32) for _ in range(2))
        base = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
        near = np.clip(base + rng.normal(0, 0.05, base.shape).astype(np.float32), -1, 1)
        sets[f"random near pairs (noise sd 0.05), {n} pairs {size}x{size}"] = (base, near)
    out = []
    for net in nets:
        for name, (a, b) in sets.items():
            d32 = np.asarray(metric(net, "float32")([a, b]), np.float64)
            d16 = np.asarray(metric(net, "bf16")([a, b]), np.float64)
            err = np.abs(d16 - d32)
            out.append({"net": net, "images": name, "n": len(a), "max_abs_error": float(err.max()),
                        "max_rel_error": float((err / np.abs(d32)).max()), "mean_distance": float(d32.mean()),
                        "min_distance": float(d32.min())})
    return out


def handle(request):
    cmd = request["cmd"]
    calls = int(request.get("calls", 1))
    if cmd == "info":
        from tensorflow.python.util import _pywrap_util_port

        return {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "onednn": bool(_pywrap_util_port.IsMklEnabled()),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "python": platform.python_version(),
        }
    if cmd == "matmul":
        a, b = matmul_operands(int(request["n"]))
        # Eager CPU execution is synchronous: the call returns with the product computed.
        return {"times": timed(lambda: _MATMUL(a, b), calls)}
    if cmd == "distance":
        m = metric(request["net"], request.get("precision", "float32"))
        x0, x1 = cached_images(int(request["batch"]), int(request["size"]), 2)
        result = {}

        def step():
            result["d"] = np.asarray(m([x0, x1]))

        return {"times": timed(step, calls), "value": float(result["d"].mean())}
    if cmd == "train":
        t = trainer(request["net"])
        batch, size = int(request["batch"]), int(request["size"])
        ref, p0, p1 = cached_images(batch, size, 3)
        judge = np.random.default_rng(size).random(batch).astype(np.float32)
        data = {"ref": ref, "p0": p0, "p1": p1, "judge": judge}
        result = {}

        def step():
            result["logs"] = t.train_on_batch(data, return_dict=True)

        times = timed(step, calls)
        return {"times": times, "loss": float(result["logs"]["loss"])}
    if cmd == "export_prepare":
        return export_prepare(request["net"], int(request["size"]))
    if cmd == "export":
        fn = _EXPORT[request["kind"]]
        result = {}
        times = timed(lambda: result.update(value=fn()), calls)
        return {"times": times, "value": result["value"]}
    if cmd == "flops":
        from keras_lpips.memory import conv_macs

        return {"conv_macs_per_image": conv_macs(metric(request["net"]), int(request["size"]), int(request["size"]))}
    if cmd == "bf16_error":
        return {"rows": bf16_error(request["nets"], bool(request.get("quick")))}
    raise ValueError(f"unknown command {cmd!r}")


def remove_exports():
    import shutil

    if _EXPORT.get("dir"):
        shutil.rmtree(_EXPORT["dir"], ignore_errors=True)
    _EXPORT.clear()


def peak_memory(net, size, precision):
    """Peak resident memory (bytes) of this process after one pair of `size`x`size` images."""
    from keras_lpips.memory import estimate_memory_bytes

    m = metric(net, precision)
    x0, x1 = images(1, size, seed=size, layout=nhwc)
    np.asarray(m(images(1, 64, seed=0, layout=nhwc)))  # trace on a small pair first: the peak is the big pair's
    return {**resident_peak(lambda: float(np.asarray(m([x0, x1]))[0])), "estimate_bytes": estimate_memory_bytes(m, size, size, 1)}


def main():
    if ARGS.peak_memory:
        net, size, precision = ARGS.peak_memory
        write_reply(peak_memory(net, int(size), precision))
        return
    try:
        serve(handle)
    finally:
        remove_exports()


if __name__ == "__main__":
    main()
