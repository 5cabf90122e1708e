"""`evaluate_run`'s results as a person reads them (markdown tables) or a program does (JSON), and
`dumps`: the JSON of every result keras-lpips writes or prints (`eval --output`/`--json`, the
study's results.json, each command's `--json`), its floats at the metric's float32 precision.
The files the program reads back (run.json, checkpoints, export metadata) keep exact floats."""

import json
import pathlib

from keras_lpips.files import atomic_write


def results_markdown(results):
    """Markdown tables of `evaluate_run`'s results: 2AFC scores, then JND mAP (each where the
    dataset has that set; a skipped one is said)."""
    columns = results["columns"]
    header = ["subset", "n"] + columns
    lines = [f"Model: {results['model']}  ", f"Data: {results['data']}"]

    def table(section, counts, extra_rows):
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for subset, row in results[section].items():
            n = counts.get(subset, sum(counts.values()) if subset == "all" else "")
            if subset in extra_rows and subset not in counts:
                n = sum(counts.values()) if subset == "all" else ""
            out.append("| " + " | ".join([subset, str(n)] + [f"{row[c]:.4f}" for c in columns]) + " |")
        return out

    if results.get("2afc"):
        lines += ["", "2AFC score (val):", ""] + table("2afc", results["counts"]["2afc"], ("all", "mean"))
    if results.get("jnd"):
        lines += ["", "JND mAP (val):", ""] + table("jnd", results["counts"]["jnd"], ())
    lines += ["", *(f"Skipped: {note}" for note in results["skipped"])] if results.get("skipped") else []
    return "\n".join(lines) + "\n"


def dumps(value):
    """`value` as indented JSON, its floats written at float32 precision (the metric's): the
    shortest decimal that reads back as the same float32, `0.78` rather than `0.7800000019371509`."""
    return json.dumps(float32_values(value), indent=2)


def float32_values(value):
    """`value` with its floats (in dicts and lists too) as the float32 values they are: the
    shortest decimal that reads back as the same float32 (2e-05, 0.78); others as they are."""
    if isinstance(value, float):
        import numpy as np

        return float(str(np.float32(value)))  # numpy's shortest round-trip repr of the float32
    if isinstance(value, dict):
        return {key: float32_values(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [float32_values(v) for v in value]
    return value


def write_results(results, path, overwrite=True):
    """Writes `evaluate_run`'s results as JSON (.json, `dumps`) or markdown (anything else) and
    returns `path`; a missing folder, and without `overwrite` an existing `path` (one that appears
    while writing included), is an `InputError`, a failed write an `OutputError` (`atomic_write`)."""
    path = pathlib.Path(path)
    text = dumps(results) + "\n" if path.suffix == ".json" else results_markdown(results)
    return atomic_write(path, text, as_input_error=True, overwrite=overwrite)
