"""What the graph-mode input checks cost per call (keras_lpips.graph_checks, issue 12).

    .venv/bin/python benchmarks/graph_checks.py --xla     # alex, batch 8, 64x64: about a minute
    .venv/bin/python benchmarks/graph_checks.py --net vgg --batch 16 --size 128 --out table.md

benchmarks/graph_checks.md records the runs and what they mean.

Inside a `tf.function` (how `LPIPSLoss` and `MeanLPIPS` run under `model.fit`), `LPIPS.__call__`
adds graph assertions for what is unknown at trace time: batch and image sizes, NaN/inf and
the range (min, max and sum per image). This times, in one process, one `tf.function` per variant
traced with batch and size left open, called on the same (N, H, W, 3) float32 pair:

- "checked": `metric([a, b], training=False)`, the checks and the network;
- "unchecked": `keras.Model.__call__(metric, [a, b], training=False)`, the network alone;
- "checks only": `keras_lpips.inputs.check_image_pair` alone (its outputs returned);
- "identity": the pair returned as it is (what calling a `tf.function` costs by itself);

each with `jit_compile` False (the default of `fit` on CPUs, and wherever the assertions
raise) and, with `--xla`, True (XLA drops assertions; a failing pair turns NaN instead).
Calls alternate between the variants, round after round, after a warm-up; the medians of
`--rounds` rounds of `--calls` calls are reported, and the ratio checked / unchecked as the
median (and quartiles) of each round's ratio: paired, so that a machine shared with other work
slows both sides of a ratio alike.
An untrained (seeded) backbone: the time does not depend on the weights' values.
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def build(net, batch, size):
    import keras
    import tensorflow as tf

    from keras_lpips import LPIPS
    from keras_lpips.inputs import check_image_pair

    metric = LPIPS(net=net, backbone_weights=None, seed=0, input_range=(0.0, 1.0))
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    bodies = {
        "checked": lambda a, b: metric([a, b], training=False),
        "unchecked": lambda a, b: keras.Model.__call__(metric, [a, b], training=False),
        "checks only": lambda a, b: check_image_pair([a, b], metric.input_range, metric.min_input_size),
        "identity": lambda a, b: [tf.identity(a), tf.identity(b)],
    }
    rng = np.random.default_rng(0)
    pair = [tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32)) for _ in range(2)]
    return bodies, spec, pair


def measure(bodies, spec, pair, jit, rounds, calls):
    import tensorflow as tf

    functions = {name: tf.function(body, input_signature=[spec, spec], jit_compile=jit) for name, body in bodies.items()}
    for function in functions.values():  # trace, compile, warm up
        for _ in range(3):
            tf.nest.map_structure(lambda t: t.numpy(), function(*pair))
    times = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(calls):
                out = function(*pair)
            tf.nest.map_structure(lambda t: t.numpy(), out)
            times[name].append((time.perf_counter() - start) / calls)
    ratios = [c / u for c, u in zip(times["checked"], times["unchecked"])]
    quartiles = statistics.quantiles(ratios, n=4)
    return {name: statistics.median(values) for name, values in times.items()}, (statistics.median(ratios), quartiles[0], quartiles[2])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="alex")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=101)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--xla", action="store_true", help="also time jit_compile=True")
    parser.add_argument("--out", help="write the table as markdown here too")
    args = parser.parse_args()

    import tensorflow as tf

    bodies, spec, pair = build(args.net, args.batch, args.size)
    lines = [
        f"{args.net}, batch {args.batch}, {args.size}x{args.size}, float32; TensorFlow {tf.__version__}, "
        f"{platform.machine()} {os.cpu_count()} CPUs, GPUs: {len(tf.config.list_physical_devices('GPU'))}; "
        f"median of {args.rounds} rounds x {args.calls} calls",
        "",
        "| jit_compile | unchecked (ms/call) | checked (ms/call) | checked / unchecked, median [quartiles] | checks alone (ms/call) | identity (ms/call) |",
        "|---|---|---|---|---|---|",
    ]
    for jit in (False, True) if args.xla else (False,):
        t, (ratio, low, high) = measure(bodies, spec, pair, jit, args.rounds, args.calls)
        lines.append(
            f"| {jit} | {t['unchecked'] * 1e3:.3f} | {t['checked'] * 1e3:.3f} | {ratio:.3f} [{low:.3f}, {high:.3f}] "
            f"| {t['checks only'] * 1e3:.3f} | {t['identity'] * 1e3:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")


if __name__ == "__main__":
    main()
