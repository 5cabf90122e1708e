"""Per-layer time of the backbone: keras-lpips (TensorFlow) next to the reference (torch).

    .venv/bin/python benchmarks/profile_layers.py --net alex --batch 1 --size 1024 [--precision bf16]

Each backbone layer runs alone on its real input (the previous layer's output),
compiled (`tf.function`) on the TensorFlow side, under `inference_mode` on the torch
side (conv and its ReLU counted together), for the 2 * batch images of one call;
the layers take turns, and each prints its median time and, for convolutions,
GFLOP/s. Then the whole distance call, the backbone alone, and a float32 matmul, to
show where a cell's time goes. Uses benchmarks/reference_worker.py for the torch side.
"""

import argparse
import os
import pathlib
import statistics
import time

from worker_protocol import Worker

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="alex")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--onednn", choices=("on", "off", "tf-default"), default="on")
    parser.add_argument("--inter-op", type=int, default=1)
    parser.add_argument("--reference-python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.onednn != "tf-default":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    import numpy as np
    import tensorflow as tf

    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    import keras

    from keras_lpips import LPIPS

    metric = LPIPS(net=args.net, precision=args.precision)
    images = 2 * args.batch
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (images, args.size, args.size, 3)).astype(np.float32))
    # Stages, as both sides have them: a convolution (TF: with its zero padding; torch: with its
    # ReLU), or a pooling.
    stages, pending = [], []
    for layer in metric.backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        pending.append(layer)
        if not isinstance(layer, keras.layers.ZeroPadding2D):
            stages.append(pending)
            pending = []
    inputs, h = [], metric.scaling(x)
    for stage in stages:
        inputs.append(h)
        for layer in stage:
            h = layer(h)
    inputs.append(h)

    def stage_fn(stage):
        def run(t):
            for layer in stage:
                t = layer(t)
            return t

        return tf.function(run)

    fns = [stage_fn(stage) for stage in stages]

    def tf_stage(k):
        start = time.perf_counter()
        fns[k](inputs[k]).numpy()[:1]  # wait for it (a small copy)
        return time.perf_counter() - start

    ref = None if args.no_reference else Worker([args.reference_python, str(HERE / "reference_worker.py")])

    tf_times = [[] for _ in stages]
    torch_times, torch_names = None, None
    for _ in range(args.rounds + 1):  # the first round warms up
        for k in range(len(stages)):
            tf_times[k].append(tf_stage(k))
        if ref:
            reply = ref.ask(cmd="layers", net=args.net, batch=args.batch, size=args.size)
            if torch_times is None:
                torch_names, torch_times = reply["names"], [[] for _ in reply["names"]]
            for k, t in enumerate(reply["times"]):
                torch_times[k].append(t)
    print(f"{args.net}, {images} images of {args.size}x{args.size} ({args.batch} pairs), precision {args.precision}; "
          f"median of {args.rounds} rounds (the reference runs its two batches of {args.batch} apart, as it does)")
    print(f"{'stage':<24}{'output':>22}{'TF ms':>10}{'GFLOP/s':>9}{'torch ms':>10}{'GFLOP/s':>9}  torch module")
    total_tf = total_torch = 0.0
    for k, stage in enumerate(stages):
        t = statistics.median(tf_times[k][1:])
        total_tf += t
        shape = tuple(inputs[k + 1].shape)
        flops = 0
        if isinstance(stage[-1], keras.layers.Conv2D):
            kh, kw, cin, cout = stage[-1].kernel.shape
            flops = 2 * int(np.prod(shape[:3])) * cout * kh * kw * cin
        rt = statistics.median(torch_times[k][1:]) if torch_times and k < len(torch_times) else None
        total_torch += rt or 0.0
        name = "+".join(layer.name for layer in stage)
        print(f"{name:<24}{str(shape):>22}{t * 1e3:>10.1f}{(flops / t / 1e9):>9.1f}"
              f"{(rt * 1e3 if rt else float('nan')):>10.1f}{(flops / rt / 1e9 if rt else 0):>9.1f}  "
              f"{torch_names[k] if torch_names and k < len(torch_names) else ''}")
    print(f"{'backbone, stage by stage':<46}{total_tf * 1e3:>10.1f}{'':>9}{total_torch * 1e3:>10.1f}")

    x0, x1 = x[: args.batch].numpy(), x[args.batch:].numpy()
    backbone = tf.function(lambda t: metric.backbone(metric.scaling(t)))

    def timed(fn, n=args.rounds):
        fn()
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return statistics.median(out)

    full = timed(lambda: np.asarray(metric([x0, x1])))
    bb = timed(lambda: [f.numpy()[:1] for f in backbone(x)])
    a = tf.random.normal((2048, 2048))
    mm = tf.function(tf.matmul)
    matmul = timed(lambda: mm(a, a).numpy())
    print(f"whole call {full * 1e3:.1f} ms; backbone alone {bb * 1e3:.1f} ms; rest (checks, normalisation, heads) "
          f"{(full - bb) * 1e3:.1f} ms; TF matmul 2048: {2 * 2048**3 / matmul / 1e9:.0f} GFLOP/s")
    if ref:
        ref.close()


if __name__ == "__main__":
    main()
