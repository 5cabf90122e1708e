"""`evaluate_run`'s results as a person reads them (markdown tables) or a program does (JSON)."""

import json
import pathlib

from keras_lpips.errors import InputError, OutputError
from keras_lpips.files import atomic_write, exists_message


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


def write_results(results, path, overwrite=True):
    """Writes `evaluate_run`'s results as JSON (.json) or markdown (anything else); without
    `overwrite`, an existing `path` (one that appears while writing included) is an `InputError`."""
    path = pathlib.Path(path)
    text = json.dumps(results, indent=2) + "\n" if path.suffix == ".json" else results_markdown(results)
    if not path.parent.is_dir():
        raise InputError(f"Output folder does not exist: {path.parent}")
    try:
        atomic_write(path, text, overwrite=overwrite)
    except FileExistsError:
        raise InputError(exists_message(path)) from None
    except OSError as error:
        raise OutputError(f"Cannot write {path}: {error.strerror or error}") from None
    return path
