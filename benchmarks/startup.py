"""Start-up of the `keras-lpips` command: whole processes, commands alternating, medians.

    python benchmarks/startup.py [--rounds 5]

Prints a markdown table (benchmarks/startup.md holds the last run's)."""

import argparse
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
    ["weights", "list"],
    ["score", "examples/ref.png", "examples/p0.png", "examples/p1.png"],  # weights cached
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    times = {tuple(case): [] for case in CASES}
    for _ in range(rounds):
        for case in CASES:  # alternating, so that a slow moment of the machine hits every command
            start = time.perf_counter()
            subprocess.run([COMMAND, *case], capture_output=True, cwd=ROOT)
            times[tuple(case)].append(time.perf_counter() - start)
    print(f"| command | median of {rounds} (s) |\n|---|---|")
    for case, seconds in times.items():
        print(f"| `keras-lpips {' '.join(case)}` | {statistics.median(seconds):.2f} |")


if __name__ == "__main__":
    main()
