"""Start-up of the `keras-lpips` command: whole processes, commands alternating, medians.

    python benchmarks/startup.py [--rounds 5] [--reference-python /tmp/refvenv/bin/python]

Prints a markdown table (benchmarks/startup.md holds the last run's). With --reference-python
(torch), a second table: `score` of the example triplet through LiteRT (warm cache), through
Keras (KERAS_LPIPS_NO_LITERT=1) and by the reference-style torch script
(benchmarks/startup_reference.py), alternating, with their ratios to the reference."""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = str(Path(sys.executable).parent / "keras-lpips")
CASES = [
    ["--help"],
    ["--version"],
    ["score", "a.png", "b.png", "--jsn"],  # a usage error
    ["pairs", "nodir", "examples"],  # usage errors found by checking paths
    ["fit", "--data", "nodir", "--out", "runx"],
    ["weights", "list"],
    ["score", "examples/ref.png", "examples/p0.png", "examples/p1.png"],  # weights cached
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reference-python", help="a python with torch, for the side-by-side table")
    args = parser.parse_args()
    rounds = args.rounds
    times = {tuple(case): [] for case in CASES}
    for _ in range(rounds):
        for case in CASES:  # alternating, so that a slow moment of the machine hits every command
            start = time.perf_counter()
            subprocess.run([COMMAND, *case], capture_output=True, cwd=ROOT)
            times[tuple(case)].append(time.perf_counter() - start)
    print(f"| command | median of {rounds} (s) |\n|---|---|")
    for case, seconds in times.items():
        print(f"| `keras-lpips {' '.join(case)}` | {statistics.median(seconds):.2f} |")
    if args.reference_python:
        side_by_side(rounds, args.reference_python)


def side_by_side(rounds, reference_python):
    triplet = ["examples/ref.png", "examples/p0.png", "examples/p1.png"]
    runs = {
        "`keras-lpips score` (LiteRT, warm cache)": ([COMMAND, "score", *triplet], {}),
        "`keras-lpips score` (Keras, KERAS_LPIPS_NO_LITERT=1)": ([COMMAND, "score", *triplet], {"KERAS_LPIPS_NO_LITERT": "1"}),
        "reference lpips 0.1.4 script": ([reference_python, "benchmarks/startup_reference.py", *triplet], {}),
    }
    subprocess.run(runs["`keras-lpips score` (LiteRT, warm cache)"][0], capture_output=True, cwd=ROOT, check=True)  # converts once
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (command, env) in runs.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, cwd=ROOT, check=True, env={**os.environ, **env})
            times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["reference lpips 0.1.4 script"])
    print(f"\n| score of the example triplet | median of {rounds} (s) | / reference |\n|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds):.2f} | {statistics.median(seconds) / reference:.2f} |")


if __name__ == "__main__":
    main()
