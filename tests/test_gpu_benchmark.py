"""benchmarks/gpu.py keeps working without a GPU: its CPU run with tiny sizes under the JAX backend
writes the JSON and markdown a GPU run writes, within its time budget; its report computes the
ratios to the reference from made-up records (the reference lpips is not a test dependency)."""

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.py"
REPORT_KEYS = {"schema", "device", "plan", "weights", "started", "budget_seconds", "elapsed_seconds", "environment",
               "distance", "mixed_error", "parity", "train", "memory", "goals", "notes", "records"}  # fmt: skip
RATIOS = ("vs_reference_float32", "vs_reference_same_precision", "vs_float32")


def gpu_benchmark():
    """The script as a module: its driver and report import no framework."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(tmp_path, *args, timeout=300):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras_home"), "KERAS_LPIPS_OFFLINE": "1"}
    env.pop("OUT", None)
    out = tmp_path / "out"
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--backends", "jax", "--no-reference", "--out-dir", str(out), *args],
                            capture_output=True, text=True, env=env, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + (out / "gpu-log.txt").read_text()[-3000:]
    report = json.loads((out / "gpu.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    return report, (out / "gpu.md").read_text(), time.monotonic() - start


def test_cpu_run_writes_the_report(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (the test extra has it)")
    report, md, _ = run_script(tmp_path, "--budget-seconds", "120")
    assert REPORT_KEYS <= set(report) and report["device"] == "cpu"
    env = report["environment"]["keras-jax"]
    assert env["backend"] == "jax" and env["tensorflow_imported"] is False and env["tensorflow_imported_at_end"] is False

    rows = report["distance"]
    assert {(r["impl"], r["net"], r["policy"]) for r in rows} == {("keras-jax", "alex", p) for p in ("float32", "mixed_float16", "mixed_bfloat16")}
    for row in rows:
        assert set(RATIOS) <= set(row)
        assert math.isfinite(row["pairs_per_s"]) and row["pairs_per_s"] > 0 and math.isfinite(row["vs_float32"])
        assert row["vs_reference_float32"] is None and row["vs_reference_same_precision"] is None  # no reference here
    assert [r["vs_float32"] for r in rows if r["policy"] == "float32"] == [1.0]

    errors = {r["policy"]: r for r in report["mixed_error"]}
    assert set(errors) == {"mixed_float16", "mixed_bfloat16"}
    for row in errors.values():
        assert row["dtype"] == "float32" and row["finite"] is True and row["identical_max"] <= 1e-6
        for key in ("examples_max_abs", "random_max_abs", "near_max_abs", "near_max_rel"):
            assert math.isfinite(row[key]) and row[key] < 0.1, (key, row)

    train = {r["policy"]: r for r in report["train"]}
    assert set(train) == {"float32", "mixed_float16"}
    assert all(math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0 and set(RATIOS) <= set(r) for r in train.values())
    records = {r["policy"]: r for r in report["records"] if r["kind"] == "train"}
    assert records["mixed_float16"]["optimizer"] == "LossScaleOptimizer" and all(r["finite"] for r in records.values())

    assert [(r["impl"], r["peak_bytes"]) for r in report["memory"]] == [("keras-jax", None)]
    assert report["goals"] == {"keras-jax": dict.fromkeys(("float32_min_ratio", "float32_met", "mixed_min_ratio", "mixed_met"))}
    assert "reference: not run (--no-reference)" in report["notes"]
    assert report["elapsed_seconds"] <= 120

    assert "Smoke run with tiny sizes on the CPU" in md
    for heading in ("## Metric throughput", "## Mixed precision against float32", "## LPIPS-loss training step", "## Peak device memory"):
        assert heading in md
    assert "| x reference float32 | x reference same precision | x own float32 |" in md
    assert md.count("| keras-jax | mixed_float16 |") == 2  # throughput and training


@pytest.mark.slow
def test_cpu_run_keeps_to_its_budget(tmp_path):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    report, md, wall = run_script(tmp_path, "--budget-seconds", "14")
    assert report["elapsed_seconds"] <= 14 + 1 and wall <= 14 + 10
    assert any("skipped (time budget)" in note or "deadline" in note for note in report["notes"]), report["notes"]
    assert "## Notes" in md


def test_cpu_run_refuses_to_write_benchmarks_folder():
    with pytest.raises(SystemExit, match="GPU numbers only"):
        gpu_benchmark().main(["--cpu", "--out-dir", str(ROOT / "benchmarks")])


def _distance(impl, policy, rate, distances, backbone=None):
    groups = ["ref-p0", "ref-p1", "p0-p1", "identical", "random", "near"]
    record = {"kind": "distance", "impl": impl, "net": "alex", "size": 64, "batch": 6, "policy": policy, "call_s": 6 / rate,
              "pairs_per_s": rate, "distances": distances, "groups": groups, "dtype": "float32", "finite": True}  # fmt: skip
    return {**record, "backbone": backbone} if backbone else record


def test_report_ratios_goals_and_errors():
    gpu = gpu_benchmark()
    base = [0.3, 0.01, 0.29, 0.0, 0.5, 0.002]
    records = [
        {"kind": "info", "impl": "reference", "torch": "2.11", "device_name": "Fake GPU"},
        _distance("reference", "float32", 100.0, [d + 1e-7 for d in base], backbone="shared"),
        _distance("reference", "mixed_float16", 150.0, base, backbone="shared"),
        _distance("keras-jax", "float32", 120.0, base),
        _distance("keras-jax", "mixed_float16", 300.0, [d + 1e-4 for d in base[:3]] + [0.0, 0.5, 0.0021]),
        _distance("keras-jax", "mixed_bfloat16", 160.0, base),
        {"kind": "train", "impl": "reference", "net": "vgg", "size": 128, "batch": 32, "policy": "float32", "call_s": 0.1, "images_per_s": 320.0},
        {"kind": "train", "impl": "keras-jax", "net": "vgg", "size": 128, "batch": 32, "policy": "float32", "call_s": 0.08, "images_per_s": 400.0},
        {"kind": "distance", "impl": "keras-torch", "net": "vgg", "size": 256, "batch": 16, "policy": "float32", "skipped": "time budget"},
    ]
    report = gpu.build_report(records, {"device": "gpu", "plan": dataclasses.asdict(gpu.GPU_PLAN), "weights": {}, "started": "now", "budget_seconds": 420}, [], 1.0)
    rows = {(r["impl"], r["policy"]): r for r in report["distance"]}
    assert rows[("keras-jax", "float32")]["vs_reference_float32"] == pytest.approx(1.2)
    assert rows[("keras-jax", "mixed_float16")]["vs_reference_float32"] == pytest.approx(3.0)
    assert rows[("keras-jax", "mixed_float16")]["vs_reference_same_precision"] == pytest.approx(2.0)
    assert rows[("keras-jax", "mixed_bfloat16")]["vs_reference_same_precision"] is None  # no autocast bfloat16 row
    assert rows[("keras-jax", "mixed_bfloat16")]["vs_float32"] == pytest.approx(160 / 120)
    assert report["goals"]["keras-jax"] == {"float32_min_ratio": pytest.approx(1.2), "float32_met": True,
                                           "mixed_min_ratio": pytest.approx(3.0), "mixed_met": True}  # fmt: skip
    error = next(r for r in report["mixed_error"] if r["impl"] == "keras-jax" and r["policy"] == "mixed_float16")
    assert error["examples_max_abs"] == pytest.approx(1e-4) and error["near_max_rel"] == pytest.approx(0.05)
    assert error["identical_max"] == 0.0 and error["random_max_abs"] == 0.0
    assert report["parity"] == [{"impl": "keras-jax", "net": "alex", "size": 64, "batch": 6, "max_abs": pytest.approx(1e-7)}]
    assert report["train"][1]["vs_reference_float32"] == pytest.approx(1.25)
    assert any("skipped (time budget)" in note for note in report["notes"])
    md = gpu.markdown(report)
    assert "# keras-lpips on the GPU: Fake GPU" in md and "Smoke run" not in md
    assert "| alex | 6 x 64² | keras-jax | mixed_float16 | 300.0 | 20.00 | 3.00x | 2.00x | 2.50x |" in md
    assert "| alex | 6 x 64² | reference | autocast float16 |" in md


def test_report_takes_non_finite_distances():
    """A policy whose distances came back NaN (None in the records) is a row and a note, not a crash."""
    gpu = gpu_benchmark()
    base = [0.3, 0.01, 0.29, 0.0, 0.5, 0.002]
    records = [
        _distance("reference", "float32", 100.0, base, backbone="shared"),
        {**_distance("keras-jax", "float32", 120.0, [None] + base[1:]), "finite": False},
        {**_distance("keras-jax", "mixed_bfloat16", 160.0, [None] * 6), "finite": False},
    ]
    report = gpu.build_report(records, {"device": "gpu", "plan": {"nets": ["alex"]}, "weights": {}, "started": "now", "budget_seconds": 420}, [], 1.0)
    error = report["mixed_error"][0]
    assert error["examples_max_abs"] is None and error["identical_max"] is None and error["finite"] is False
    assert report["parity"] == [{"impl": "keras-jax", "net": "alex", "size": 64, "batch": 6, "max_abs": None}]
    assert sum("non-finite distances" in note for note in report["notes"]) == 2
    json.dumps(report, allow_nan=False)
    assert "| keras-jax | alex | 6 x 64² | — |" in gpu.markdown(report)
