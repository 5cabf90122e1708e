"""What running on Beam costs on one machine: `keras-lpips beam embed` against `keras-lpips embed`.

    python3 -m venv .venv-beam && .venv-beam/bin/pip install -e ".[beam]"
    .venv-beam/bin/python benchmarks/beam_embed.py --out benchmarks/beam.md

In one process, with an untrained seeded AlexNet and the official v0.1 linear weights, on
`--images` 64x64 PNGs (smooth random fields, written once to a scratch folder):

1. `embed_folder` (what `keras-lpips embed DIR --out FILE` runs): the Keras model in-process;
2. `beam_pipelines.embed_images` on DirectRunner (what `keras-lpips beam embed` runs by
   default): the exported SavedModel through RunInference, TFRecord shards out; the export
   itself is not timed (it is made once, as for serving).

Each after a warm-up run of the same kind, the median of `--repeats`; the two give the same
vectors within 1e-6 (checked). Beam's DirectRunner is for testing a pipeline and small jobs:
the point of the pipeline is the runners that spread the images over many machines, which
cannot be measured here.
"""

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def timed(function, repeats):
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_images(folder, n, rng):
    from PIL import Image

    for i in range(n):
        coarse = rng.random((4, 4, 3))
        fine = np.kron(coarse, np.ones((16, 16, 1))) + rng.normal(0, 0.03, (64, 64, 3))
        Image.fromarray((np.clip(fine, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:05d}.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="Write the markdown table here (default: print it).")
    args = parser.parse_args()

    import apache_beam
    import tensorflow as tf

    from keras_lpips import beam_pipelines
    from keras_lpips.embedding_files import read_embeddings
    from keras_lpips.resumable_embedding import embed_folder
    from keras_lpips.export import export_savedmodel
    from keras_lpips.model import LPIPS

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "images"
        folder.mkdir()
        write_images(folder, args.images, rng)
        metric = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0, 1))
        model = export_savedmodel(metric, scratch / "model")
        keras_runs, beam_runs = itertools.count(), itertools.count()

        def in_process():
            embed_folder(metric, folder, scratch / f"embed-{next(keras_runs)}.npz")

        def on_beam():
            beam_pipelines.embed_images(folder, model, scratch / f"beam-{next(beam_runs)}", ["--direct_num_workers", "1"])

        keras_s = timed(in_process, args.repeats)
        beam_s = timed(on_beam, args.repeats)
        local = read_embeddings(scratch / "embed-0.npz")
        names, vectors = beam_pipelines.read_embedding_records(f"{scratch}/beam-0-*.tfrecord")[(64, 64)]
        assert names == local.names
        np.testing.assert_allclose(vectors, local.vectors, rtol=0, atol=1e-6)

    n = args.images
    lines = [
        "# keras-lpips beam embed on one machine (DirectRunner)",
        "",
        f"`benchmarks/beam_embed.py --images {n}`: Apache Beam {apache_beam.__version__}, TensorFlow "
        f"{tf.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Method: the script's docstring.",
        "",
        f"| path ({n} images, 64x64, alex) | time (s) | images/s | relative |",
        "|---|---|---|---|",
        f"| `keras-lpips embed` (Keras, in-process) | {keras_s:.2f} | {n / keras_s:.0f} | 1.00x |",
        f"| `keras-lpips beam embed` (SavedModel, RunInference, DirectRunner) | {beam_s:.2f} | {n / beam_s:.0f} | {beam_s / keras_s:.2f}x |",
        "",
        "The two give the same vectors within 1e-6 (checked).",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
