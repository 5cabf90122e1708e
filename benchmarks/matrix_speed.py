"""How much faster `distance_matrix` (`keras-lpips matrix`) is than scoring every pair alone.

    .venv/bin/python benchmarks/matrix_speed.py                      # 32 images, alex, 64x64 and 256x256
    .venv/bin/python benchmarks/matrix_speed.py --net vgg --sizes 64 --cli

For n images (default 32: 496 pairs) and each size, it times, in one process:

- matrix: `distance_matrix(metric, images, method="features")`: each image's features
  computed once, then compared pairwise (what `keras-lpips matrix` ran before it used the
  embedding: benchmarks/embedding_speed.py compares the two);
- singles: `metric([a, b])` once per pair, batch of one, as a loop of single score calls
  would (each call computes both images' features).

Each is timed `--repeats` times after a warm-up (the first call traces the graphs); the
median is reported, with the ratio singles / matrix. Both give the same matrix (checked).

`--cli` also times the commands end to end: `keras-lpips matrix DIR` once, and
`keras-lpips score A B` `--cli-samples` times, extrapolated to n(n-1)/2 calls (each call
starts Python and TensorFlow and builds the model, which dominates).

Weights: untrained seeded backbone (`--imagenet` for torchvision's, from the cache):
the time does not depend on the weights' values.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def timed(function, repeats):
    function()  # warm-up: traces
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def singles(metric, images):
    n = len(images)
    matrix = np.zeros((n, n), np.float32)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = float(np.asarray(metric([images[i : i + 1], images[j : j + 1]]))[0])
    return matrix


def cli_times(images, net, weights, samples):
    from PIL import Image

    command = str(Path(sys.executable).with_name("keras-lpips"))
    options = ["--net", net, "--backbone-weights", weights]
    with tempfile.TemporaryDirectory() as folder:
        for k, image in enumerate(images):
            Image.fromarray((image * 255).round().astype(np.uint8)).save(Path(folder) / f"{k:02d}.png")
        start = time.perf_counter()
        subprocess.run([command, "matrix", folder, "--out", str(Path(folder) / "m.csv"), *options], check=True, capture_output=True)
        matrix = time.perf_counter() - start
        per_call = []
        for k in range(samples):
            start = time.perf_counter()
            subprocess.run([command, "score", f"{folder}/{k:02d}.png", f"{folder}/{k + 1:02d}.png", *options], check=True, capture_output=True)
            per_call.append(time.perf_counter() - start)
    return matrix, statistics.median(per_call)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="alex")
    parser.add_argument("--n", type=int, default=32, help="images (default: %(default)s, i.e. 496 pairs)")
    parser.add_argument("--sizes", default="64,256", help="square image sides, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--imagenet", action="store_true", help="torchvision's weights instead of seeded random ones")
    parser.add_argument("--cli", action="store_true", help="also time the commands end to end")
    parser.add_argument("--cli-samples", type=int, default=3, help="score calls timed for the extrapolation")
    args = parser.parse_args()

    import tensorflow as tf

    from keras_lpips import LPIPS
    from keras_lpips.pairwise import distance_matrix

    weights = "imagenet" if args.imagenet else None
    metric = LPIPS(net=args.net, backbone_weights=weights, seed=0, input_range=(0, 1))
    pairs = args.n * (args.n - 1) // 2
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    print(f"{args.net}, {args.n} images ({pairs} pairs), TensorFlow {tf.__version__}, {os.cpu_count()} CPUs "
          f"(intra-op threads {threads}), load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rng = np.random.default_rng(0)
    for size in [int(s) for s in args.sizes.split(",")]:
        images = rng.random((args.n, size, size, 3), dtype=np.float32)
        matrix_s, by_matrix = timed(lambda: distance_matrix(metric, images, method="features"), args.repeats)
        singles_s, by_singles = timed(lambda: singles(metric, images), args.repeats)
        np.testing.assert_allclose(by_matrix, by_singles, rtol=0, atol=1e-5)
        print(f"{size}x{size}: matrix {matrix_s:.3f} s, {pairs} single calls {singles_s:.3f} s "
              f"({1e3 * singles_s / pairs:.2f} ms each): matrix is {singles_s / matrix_s:.1f}x faster")  # fmt: skip
        if args.cli:
            matrix_cli, score_cli = cli_times(images, args.net, "imagenet" if args.imagenet else "random", args.cli_samples)
            print(f"  commands: keras-lpips matrix {matrix_cli:.1f} s; keras-lpips score {score_cli:.1f} s a call, "
                  f"x{pairs} = {score_cli * pairs:.0f} s: matrix is {score_cli * pairs / matrix_cli:.0f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
