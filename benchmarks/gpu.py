"""keras-lpips on a GPU, beside the reference `lpips` 0.1.4 on PyTorch CUDA, in one run.

Measures, under Keras' JAX and PyTorch backends (no TensorFlow: the lent GPU machine has none),
in float32, `mixed_float16` and `mixed_bfloat16`:
  - pairs/s of the metric, alex and vgg, 64 pairs of 64x64 and 16 pairs of 256x256, as ratios to
    the reference's float32 (and its `torch.autocast` of the same precision) measured in this run;
  - the error of each mixed policy against float32 on the same pairs: the shipped example triplet
    (examples/ref.png, p0.png, p1.png), an identical pair, random and near (noise sd 0.05) pairs;
  - an LPIPS-loss training step of a small convolutional image model (images/s), next to the
    reference's equivalent in PyTorch (the same model, `lpips.LPIPS` as the loss, Adam);
  - peak GPU memory of one 2048x2048 vgg pair (float32).

GPU: on a lent `device` machine (JAX and PyTorch with CUDA, no TensorFlow, no network). Once,
here, fetch what it lacks as wheels into `.whl/` (ignored by git):

    echo /.whl/ >> .git/info/exclude
    .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 -d .whl \\
        keras==3.15.1 namex==0.1.0 optree==0.20.0 lpips==0.1.4    # keras: .venv's version

(optionally also `cp ~/.keras/keras_lpips/alex-imagenet-features.npz .whl/` and `--imagenet-dir .whl`
below, for ImageNet alex weights; vgg's 59 MB file does not fit the 64 MiB a call carries), then one `device` run with carry [".whl"] and timeout_s 480 (the script keeps to 420 s):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --budget-seconds 420

It writes $OUT/gpu.json, $OUT/gpu.md and $OUT/gpu-log.txt; commit gpu.md and gpu.json as
benchmarks/gpu.{md,json}. Only a GPU run writes there: a CPU run refuses benchmarks/ as --out-dir.

Without a GPU (or with --cpu) it runs on the CPU with tiny sizes, as the test suite does:

    .venv/bin/python benchmarks/gpu.py --cpu --backends jax --out-dir /tmp/gpu-smoke

How it measures. This process only schedules and reports: each implementation runs in its own
subprocess of this file (`--worker`), since KERAS_BACKEND is fixed per process, one after the
other on the same GPU (keras-jax, the reference, keras-torch), each with a share of the time
budget; a worker starts no cell with less than a compile's time left and is killed at its
deadline. A cell warms up (the first call compiles), then times rounds of back-to-back calls
ended by a device synchronisation, for `cell_seconds`; the number is the median round.
  - keras-jax: the metric jitted (`jax.jit` of `LPIPS.stateless_call`, as `fit`/`predict` run
    it) on device arrays; eager JAX calls dispatch op by op and are not timed.
  - keras-torch: `metric([x0, x1])` under `torch.no_grad()` on CUDA tensors: a user's call,
    with its input checks (which read the images back to the host once).
  - reference: `lpips.LPIPS(net, pnet_rand=True)(x0, x1)` on NCHW CUDA tensors under
    `torch.inference_mode()`, mixed precision by `torch.autocast`.
All sides share the backbone weights (seeded He-normal, written once by the first Keras worker
in torchvision layout, or --imagenet-dir's files) and the shipped v0.1 linear weights, and see
the same images, so float32 distances can be compared across implementations too.
"""

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import json
import math
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
IMPLEMENTATIONS = ("keras-jax", "reference", "keras-torch")  # the order they run in
BACKENDS = {"keras-jax": "jax", "keras-torch": "torch"}
SHARES = {"keras-jax": 0.5, "reference": 0.2, "keras-torch": 0.3}  # of the time left when each starts
GRACE_S = 10.0  # a worker still running this long after its deadline is killed (less for small budgets)
REPORT_S = 5.0  # kept back for writing the report
SEED = 0


@dataclasses.dataclass(frozen=True)
class Plan:
    nets: tuple = ("alex", "vgg")
    cells: tuple = ((64, 64), (16, 256))  # (pairs per call, image side)
    policies: tuple = POLICIES
    train: tuple = ("vgg", 32, 128)  # loss net, images per step, image side
    train_policies: tuple = POLICIES
    memory: tuple = ("vgg", 2048)  # net, side of the one pair
    warmup: int = 2  # calls before timing (the first compiles)
    cell_seconds: float = 1.5  # timed part of a cell
    min_cell_seconds: float = 8.0  # no cell starts with less time left (a compile fits)


GPU_PLAN = Plan()
TINY_PLAN = Plan(
    nets=("alex",), cells=((8, 64),), train=("alex", 2, 32), train_policies=("float32", "mixed_float16"), memory=("alex", 64),
    warmup=1, cell_seconds=0.2, min_cell_seconds=1.0,
)  # fmt: skip


# --- the driver --------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=420.0, help="whole run, report included (default 420)")
    parser.add_argument("--out-dir", help="where gpu.json, gpu.md and gpu-log.txt go (default: $OUT)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run; the default without a GPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (implies --tiny), GPU or not")
    parser.add_argument("--backends", default="jax,torch", help="Keras backends to measure (default jax,torch)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference lpips")
    parser.add_argument("--reference-python", default=sys.executable, help="python that imports torch and lpips")
    parser.add_argument("--imagenet-dir", help="folder of {net}-imagenet-features.npz to use instead of seeded weights")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    return drive(args)


def drive(args):
    started = time.time()
    end = started + args.budget_seconds
    gpu = not args.cpu and gpu_present()
    plan = TINY_PLAN if args.cpu or args.tiny or not gpu else GPU_PLAN
    out_dir = output_folder(args.out_dir, gpu and plan == GPU_PLAN)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS.values())
    if unknown:
        raise SystemExit(f"--backends takes jax and/or torch. Received: --backends {args.backends}")
    impls = [i for i in IMPLEMENTATIONS if BACKENDS.get(i) in backends or (i == "reference" and not args.no_reference)]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="keras-lpips-gpu-"))
    config = {
        "device": "gpu" if gpu else "cpu",
        "plan": dataclasses.asdict(plan),
        "weights": backbone_files(plan, args.imagenet_dir, workdir),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "budget_seconds": args.budget_seconds,
    }
    (workdir / "config.json").write_text(json.dumps(config))
    print(f"device {config['device']}, {'GPU' if plan == GPU_PLAN else 'tiny'} plan, {', '.join(impls)}; budget {args.budget_seconds:.0f} s", flush=True)
    notes = ["reference: not run (--no-reference)"] if args.no_reference else []
    try:
        with open(out_dir / "gpu-log.txt", "w") as log:
            records = run_workers(impls, args, plan, workdir, end, log, notes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        report = build_report(records, config, notes, time.time() - started)
        page = markdown(report)
    except Exception:  # a bug in the report loses no measurement: the raw records, then the traceback
        (out_dir / "gpu.json").write_text(json.dumps({"config": config, "notes": notes, "records": records}, indent=1) + "\n")
        raise
    (out_dir / "gpu.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (out_dir / "gpu.md").write_text(page)
    print(f"wrote {out_dir / 'gpu.md'} and gpu.json ({report['elapsed_seconds']:.0f} s)")
    for note in report["notes"]:  # in the device's output too
        print(f"note: {note}")
    return 0


def gpu_present():
    """Whether an NVIDIA GPU answers (without importing a framework into this process)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def output_folder(out_dir, full_gpu_run):
    out_dir = out_dir or os.environ.get("OUT")
    if not out_dir:
        raise SystemExit("Pass --out-dir, or set OUT (the device machine sets it). Received: neither")
    out_dir = pathlib.Path(out_dir)
    if not full_gpu_run and out_dir.resolve() == (ROOT / "benchmarks").resolve():
        raise SystemExit(f"benchmarks/gpu.md holds GPU numbers only: write a CPU or --tiny run elsewhere. Received: --out-dir {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def backbone_files(plan, imagenet_dir, workdir):
    """{net: {"path", "source"}}: ImageNet files where --imagenet-dir has them, else seeded
    weights that the first Keras worker writes (torchvision layout) for every side to read."""
    nets = sorted(set(plan.nets) | {plan.train[0], plan.memory[0]})
    files = {}
    for net in nets:
        imagenet = pathlib.Path(imagenet_dir or "/nonexistent") / f"{net}-imagenet-features.npz"
        if imagenet.is_file():
            files[net] = {"path": str(imagenet.resolve()), "source": "imagenet"}
        else:
            files[net] = {"path": str(workdir / f"{net}-seeded-{SEED}.npz"), "source": f"seeded He-normal (seed {SEED})"}
    return files


def run_workers(impls, args, plan, workdir, end, log, notes):
    """Runs the implementations one after the other, each given its share of the time left."""
    grace = min(GRACE_S, max(2.0, 0.05 * args.budget_seconds))
    records = []
    for k, impl in enumerate(impls):
        left = end - REPORT_S - time.time()
        deadline = time.time() + left * SHARES[impl] / sum(SHARES[i] for i in impls[k:]) - grace
        if deadline - time.time() < plan.min_cell_seconds:
            notes.append(f"{impl}: not run, the time budget was spent")
            continue
        records += run_worker_process(impl, args, workdir, deadline, grace, log, notes)
    return records


def run_worker_process(impl, args, workdir, deadline, grace, log, notes):
    records_path = workdir / f"{impl}.jsonl"
    python = args.reference_python if impl == "reference" else sys.executable
    command = [python, str(pathlib.Path(__file__).resolve()), "--worker", impl, "--config", str(workdir / "config.json"),
               "--records", str(records_path), "--deadline", repr(deadline)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if impl in BACKENDS:
        env["KERAS_BACKEND"] = BACKENDS[impl]
    if args.cpu:
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    log.write(f"=== {impl}: {' '.join(command)}\n")
    log.flush()
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    except OSError as error:
        notes.append(f"{impl}: could not start {python}: {error}")
        return []
    try:
        status = process.wait(timeout=max(1.0, deadline + grace - time.time()))
        if status:
            notes.append(f"{impl}: the worker exited with status {status} (see gpu-log.txt)")
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        notes.append(f"{impl}: stopped at its deadline (time budget); later cells not run")
    if not records_path.is_file():
        return []
    records = []
    for line in records_path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a worker killed while writing it
            pass
    return records


# --- the report --------------------------------------------------------------------------------


def _ratio(record, other, key):
    if not record or not other or not record.get(key) or not other.get(key):
        return None
    return record[key] / other[key]


def _abs_diff(a, b):
    """|a - b| of two distances, inf where either was not finite (None in the records)."""
    return math.inf if a is None or b is None else abs(a - b)


def _timed(records, kind):
    return [r for r in records if r.get("kind") == kind and r.get("call_s")]


def build_report(records, config, notes, elapsed):
    """The JSON report: rows per section with the ratios, the goals, notes, and the raw records."""
    distance = _timed(records, "distance")
    train = _timed(records, "train")
    report = {
        "schema": 1,
        "device": config["device"],
        "plan": json.loads(json.dumps(config["plan"])),  # tuples as lists, as gpu.json holds it
        "weights": {net: w["source"] for net, w in config["weights"].items()},
        "started": config["started"],
        "budget_seconds": config["budget_seconds"],
        "elapsed_seconds": round(elapsed, 1),
        "environment": environment(records),
        "distance": throughput_rows(distance, "pairs_per_s", ("net", "size", "batch")),
        "mixed_error": error_rows(distance),
        "parity": parity_rows(distance),
        "train": throughput_rows(train, "images_per_s", ("net", "size", "batch")),
        "memory": memory_rows(records),
        "notes": list(notes) + record_notes(records),
    }
    report["goals"] = goals(report["distance"])
    report["records"] = records
    return _finite_or_none(report)


def environment(records):
    """{impl: what its worker said about itself}, its info records merged."""
    out = {}
    for r in records:
        if r.get("kind") == "info":
            out.setdefault(r["impl"], {}).update({k: v for k, v in r.items() if k not in ("kind", "impl")})
    return out


def throughput_rows(records, rate, key_fields):
    """One row per record with its rate and three ratios: to the reference's float32, to the
    reference in the same precision (torch.autocast), and to the same implementation's float32."""
    index = {(r["impl"], *(r[f] for f in key_fields), r["policy"]): r for r in records}
    rows = []
    for r in records:
        key = tuple(r[f] for f in key_fields)
        rows.append({
            "impl": r["impl"], **{f: r[f] for f in key_fields}, "policy": r["policy"],
            rate: r[rate], "call_ms": 1e3 * r["call_s"], "first_call_s": r.get("first_call_s"), "rounds": r.get("rounds"),
            "vs_reference_float32": _ratio(r, index.get(("reference", *key, "float32")), rate),
            "vs_reference_same_precision": _ratio(r, index.get(("reference", *key, r["policy"])), rate),
            "vs_float32": _ratio(r, index.get((r["impl"], *key, "float32")), rate),
        })  # fmt: skip
    return rows


def error_rows(records):
    """Each mixed-policy distance against the same implementation's float32 one, on the same pairs."""
    float32 = {(r["impl"], r["net"], r["size"], r["batch"]): r for r in records if r["policy"] == "float32"}
    rows = []
    for r in records:
        base = float32.get((r["impl"], r["net"], r["size"], r["batch"]))
        if r["policy"] == "float32" or base is None or "distances" not in r:
            continue
        groups = r["groups"]
        d, d32 = r["distances"], base["distances"]
        err = [_abs_diff(a, b) for a, b in zip(d, d32)]

        def worst(values, names):
            picked = [v for v, g in zip(values, groups) if g in names]
            return max(picked) if picked else None

        rel = [math.inf if not math.isfinite(e) else e / b if b > 1e-6 else 0.0 for e, b in zip(err, d32)]
        rows.append({
            "impl": r["impl"], "net": r["net"], "size": r["size"], "batch": r["batch"], "policy": r["policy"],
            "dtype": r.get("dtype"), "finite": r.get("finite"),
            "examples_max_abs": worst(err, EXAMPLE_GROUPS), "examples_max_rel": worst(rel, EXAMPLE_GROUPS),
            "random_max_abs": worst(err, ("random",)), "random_max_rel": worst(rel, ("random",)),
            "near_max_abs": worst(err, ("near",)), "near_max_rel": worst(rel, ("near",)),
            "identical_max": worst([_abs_diff(v, 0.0) for v in d], ("identical",)),
        })  # fmt: skip
    return rows


def parity_rows(records):
    """Float32 distances of each Keras backend against the reference's, where both read the same weights."""
    reference = {(r["net"], r["size"], r["batch"]): r for r in records if r["impl"] == "reference" and r["policy"] == "float32"}
    rows = []
    for r in records:
        ref = reference.get((r["net"], r["size"], r["batch"]))
        if r["impl"] == "reference" or r["policy"] != "float32" or not ref or ref.get("backbone") != "shared":
            continue
        diff = [_abs_diff(a, b) for a, b in zip(r["distances"], ref["distances"])]
        rows.append({"impl": r["impl"], "net": r["net"], "size": r["size"], "batch": r["batch"], "max_abs": max(diff)})
    return rows


def memory_rows(records):
    rows = []
    for r in records:
        if r.get("kind") == "memory" and "skipped" not in r and "error" not in r:
            rows.append({k: r.get(k) for k in ("impl", "net", "size", "policy", "peak_bytes", "above_base_bytes", "xla_temp_bytes", "note")})
    return rows


def record_notes(records):
    notes = []
    for r in records:
        what = f"{r.get('impl')} {r.get('kind')} {r.get('net', '')} {r.get('batch', '')}x{r.get('size', '')} {r.get('policy', '')}".strip()
        if "skipped" in r:
            notes.append(f"{what}: skipped ({r['skipped']})")
        elif "error" in r:
            notes.append(f"{what}: {r['error']}")
        elif r.get("finite") is False:
            notes.append(f"{what}: non-finite {'losses' if r.get('kind') == 'train' else 'distances'}")
        elif r.get("kind") == "info" and r.get("available") is False:
            notes.append(f"{r['impl']}: not available ({r.get('note')}); its rows and ratios are left out")
    return notes


def goals(rows):
    """The issue's goals per Keras backend: float32 at least the reference's float32 pairs/s in every
    cell, and the better mixed policy at least 1.5x it. None where no reference row exists."""
    out = {}
    for impl in sorted({r["impl"] for r in rows} - {"reference"}):
        cells = {}
        for r in rows:
            if r["impl"] == impl and r["vs_reference_float32"] is not None:
                cells.setdefault((r["net"], r["size"], r["batch"]), {})[r["policy"]] = r["vs_reference_float32"]
        float32 = [c["float32"] for c in cells.values() if "float32" in c]
        mixed = [max(v for p, v in c.items() if p != "float32") for c in cells.values() if len(c) > ("float32" in c)]
        out[impl] = {
            "float32_min_ratio": min(float32) if float32 else None,
            "float32_met": min(float32) >= 1.0 if float32 else None,
            "mixed_min_ratio": min(mixed) if mixed else None,
            "mixed_met": min(mixed) >= 1.5 if mixed else None,
        }
    return out


def _finite_or_none(value):
    """NaN and inf as None, so that the JSON is strict (the markdown shows them as such)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def _fmt(value, spec="{:.3g}", suffix=""):
    return "—" if value is None else spec.format(value) + suffix


def _gib(value):
    return _fmt(None if value is None else value / 2**30, "{:.2f}", " GiB")


POLICY_LABELS = {"float32": "float32", "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}
REFERENCE_LABELS = {"float32": "float32", "mixed_float16": "autocast float16", "mixed_bfloat16": "autocast bfloat16"}


def _label(row):
    return (REFERENCE_LABELS if row["impl"] == "reference" else POLICY_LABELS)[row["policy"]]


def _table(header, align, rows):
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


RATIOS = ("vs_reference_float32", "vs_reference_same_precision", "vs_float32")
RATIO_HEADER = ["x reference float32", "x reference same precision", "x own float32"]


def _throughput_table(rows, what, rate, unit):
    order = sorted(rows, key=lambda r: (r["net"], r["size"], IMPLEMENTATIONS.index(r["impl"]), POLICIES.index(r["policy"])))
    cells = [[r["net"], f"{r['batch']} x {r['size']}²", r["impl"], _label(r), _fmt(r[rate], "{:.1f}"), _fmt(r["call_ms"], "{:.2f}")]
             + [_fmt(r[k], "{:.2f}", "x") for k in RATIOS] for r in order]  # fmt: skip
    header = [what, f"{'pairs' if rate == 'pairs_per_s' else 'images'} x side", "implementation", "precision", unit, "ms/call"]
    return _table(header + RATIO_HEADER, ["---"] * 4 + ["---:"] * 5, cells)



def markdown(report):
    """The report as the page committed to benchmarks/gpu.md."""
    env = report["environment"]
    device = next((e.get("device_name") for e in env.values() if e.get("device_name")), report["device"])
    lines = [f"# keras-lpips on {'the GPU' if report['device'] == 'gpu' else 'the CPU'}: {device}", ""]
    if report["device"] != "gpu" or report["plan"]["nets"] != list(GPU_PLAN.nets):
        where = " on the CPU" if report["device"] != "gpu" else ""
        lines += [f"**Smoke run with tiny sizes{where}: these numbers say nothing about GPU speed.**", ""]
    weights = ", ".join(f"{net} {source}" for net, source in report["weights"].items())
    lines += [f"`benchmarks/gpu.py`, one run started {report['started']}, {report['elapsed_seconds']:.0f} s of a "
              f"{report['budget_seconds']:.0f} s budget. Backbones: {weights}; linear weights: the shipped v0.1 ones. "
              "Each implementation ran in its own process, one after the other; ratios divide rates measured in "
              "this run (see the script's docstring for how each side is timed).", ""]  # fmt: skip
    keys = ("keras", "backend", "jax", "torch", "cuda", "cudnn", "lpips", "torchvision", "precision_note")
    versions = [[impl, ", ".join(f"{k} {info[k]}" for k in keys if info.get(k)) or info.get("note", "")] for impl, info in env.items()]
    lines += _table(["implementation", "versions"], ["---", "---"], versions)
    lines += ["", "## Metric throughput (pairs/s)", ""] + _throughput_table(report["distance"], "net", "pairs_per_s", "pairs/s")
    lines += ["", "Goals (per Keras backend, worst cell): float32 >= 1x the reference's float32 pairs/s; the better "
              "mixed policy >= 1.5x it.", ""]  # fmt: skip
    goal_rows = [[impl, _fmt(g["float32_min_ratio"], "{:.2f}", "x"), _fmt(g["float32_met"], "{}"),
                  _fmt(g["mixed_min_ratio"], "{:.2f}", "x"), _fmt(g["mixed_met"], "{}")] for impl, g in report["goals"].items()]  # fmt: skip
    lines += _table(["backend", "float32 worst ratio", "met", "mixed worst ratio", "met"], ["---", "---:", "---", "---:", "---"], goal_rows)
    lines += ["", "## Mixed precision against float32 (same implementation, same pairs)", "",
              "Largest difference of each mixed policy's distances from float32's: on the example triplet "
              "(ref-p0, ref-p1, p0-p1, at 64²), random uniform pairs, near pairs (noise sd 0.05; also relative, "
              "the distances being small), and an identical pair (0 expected).", ""]  # fmt: skip
    errors = [[r["impl"], r["net"], f"{r['batch']} x {r['size']}²", _label(r), str(r["dtype"]), str(r["finite"])]
              + [_fmt(r[k], "{:.1e}") for k in ("examples_max_abs", "random_max_abs", "near_max_abs", "near_max_rel", "identical_max")]
              for r in report["mixed_error"]]  # fmt: skip
    header = ["implementation", "net", "pairs x side", "precision", "dtype", "finite", "examples abs", "random abs", "near abs",
              "near rel", "identical"]  # fmt: skip
    lines += _table(header, ["---"] * 6 + ["---:"] * 5, errors)
    if report["parity"]:
        lines += ["", "## Float32 against the reference (same weights, same pairs)", ""]
        parity = [[r["impl"], r["net"], f"{r['batch']} x {r['size']}²", _fmt(r["max_abs"], "{:.1e}")] for r in report["parity"]]
        lines += _table(["implementation", "net", "pairs x side", "max abs difference"], ["---"] * 3 + ["---:"], parity)
    lines += ["", "## LPIPS-loss training step (images/s)", "",
              "A 3-layer convolutional image model (32 channels, tanh output in float32) trained through the LPIPS "
              "loss with Adam(1e-3): Keras `train_on_batch` with `LPIPSLoss` (under mixed_float16 Keras wraps the "
              "optimiser in a LossScaleOptimizer), against the same model in PyTorch with `lpips.LPIPS` as the loss "
              "(torch.autocast, and a GradScaler for float16).", ""]  # fmt: skip
    lines += _throughput_table(report["train"], "loss net", "images_per_s", "images/s")
    lines += ["", "## Peak device memory, one pair (float32)", ""]
    memory = [[r["impl"], r["net"], f"{r['size']}²", _gib(r["peak_bytes"]), _gib(r["above_base_bytes"]), _gib(r["xla_temp_bytes"]),
               r.get("note") or ""] for r in report["memory"]]  # fmt: skip
    header = ["implementation", "net", "side", "peak", "above weights and inputs", "XLA temporaries", "note"]
    lines += _table(header, ["---"] * 3 + ["---:"] * 3 + ["---"], memory)
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


# --- the workers -------------------------------------------------------------------------------

EXAMPLE_GROUPS = ("ref-p0", "ref-p1", "p0-p1")


def image_pairs(batch, size):
    """The same (x0, x1, group names) for every implementation, NHWC float32 in [-1, 1]: at 64x64 the
    example triplet's three pairs and (ref, ref) first, else one identical pair; then random uniform
    pairs, then near pairs (x, x + noise sd 0.05)."""
    import numpy as np

    rng = np.random.default_rng([SEED, batch, size])
    x0 = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    x1 = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    groups = ["random"] * batch
    first = 0
    if size == 64 and batch >= 5:
        ref, p0, p1 = (example_image(name) for name in ("ref", "p0", "p1"))
        for i, (a, b, name) in enumerate(((ref, p0, "ref-p0"), (ref, p1, "ref-p1"), (p0, p1, "p0-p1"))):
            x0[i], x1[i], groups[i] = a, b, name
        first = 3
    x1[first], groups[first] = x0[first], "identical"
    rest = range(first + 1, batch)
    for i in rest[len(rest) // 2 :]:
        x1[i] = np.clip(x0[i] + 0.05 * rng.standard_normal(x0[i].shape), -1, 1)
        groups[i] = "near"
    return x0, x1, groups


def example_image(name):
    import numpy as np
    from PIL import Image

    with Image.open(EXAMPLES / f"{name}.png") as image:
        return np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1.0


def training_batch(batch, size):
    """(noisy input, clean target), NHWC float32 in [-1, 1]."""
    import numpy as np

    rng = np.random.default_rng([SEED, 7, batch, size])
    target = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    noisy = np.clip(target + 0.2 * rng.standard_normal(target.shape), -1, 1).astype(np.float32)
    return noisy, target


def time_calls(step, sync, plan, deadline):
    """Warm-up calls (the first compiles), then rounds of back-to-back calls each ended by `sync`,
    for `plan.cell_seconds` (at least 3 rounds, never past the deadline). Returns the median
    seconds per call, and the last output."""
    start = time.perf_counter()
    out = step()
    sync(out)
    first = time.perf_counter() - start
    for _ in range(plan.warmup - 1):
        out = step()
        sync(out)
    start = time.perf_counter()
    out = step()
    sync(out)
    one = max(time.perf_counter() - start, 1e-6)
    per_round = max(1, min(100, int(plan.cell_seconds / 10 / one)))
    stop = min(time.perf_counter() + plan.cell_seconds, time.perf_counter() + deadline - time.time() - 1.0)
    rounds = []
    while len(rounds) < 3 or (time.perf_counter() < stop and len(rounds) < 200):
        start = time.perf_counter()
        for _ in range(per_round):
            out = step()
        sync(out)
        rounds.append((time.perf_counter() - start) / per_round)
        if time.time() > deadline:
            break
    return {"call_s": statistics.median(rounds), "first_call_s": first, "rounds": len(rounds), "calls_per_round": per_round}, out


class Recorder:
    """Appends one JSON line per record, flushed, so that a worker killed at its deadline keeps what it did."""

    def __init__(self, path, deadline):
        self.path, self.deadline = pathlib.Path(path), deadline

    def write(self, record):
        with open(self.path, "a") as f:
            f.write(json.dumps(_finite_or_none(record)) + "\n")

    def left(self):
        return self.deadline - time.time()


def _tuples(value):
    """JSON's lists back as the plan's tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def run_worker(args):
    config = json.loads(pathlib.Path(args.config).read_text())
    plan = Plan(**{k: _tuples(v) for k, v in config["plan"].items()})
    recorder = Recorder(args.records, args.deadline)
    try:
        worker = ReferenceWorker(config) if args.worker == "reference" else KerasWorker(args.worker, config)
    except Unavailable as missing:
        recorder.write({"kind": "info", "impl": args.worker, "available": False, "note": str(missing)})
        return 0
    except Exception as error:  # e.g. a framework that sees no GPU: a note in the report, the traceback in the log
        recorder.write({"kind": "info", "impl": args.worker, "available": False, "note": f"{type(error).__name__}: {error}"})
        raise
    recorder.write({"kind": "info", "impl": args.worker, **worker.info()})
    cells = [("memory", plan.memory[0], 1, plan.memory[1], "float32")]  # first: JAX's peak counter cannot be reset
    cells += [("distance", net, batch, size, policy) for net in plan.nets for batch, size in plan.cells for policy in plan.policies]
    cells += [("train", plan.train[0], plan.train[1], plan.train[2], policy) for policy in plan.train_policies]
    for kind, net, batch, size, policy in cells:
        record = {"kind": kind, "impl": args.worker, "net": net, "batch": batch, "size": size, "policy": policy}
        if recorder.left() < plan.min_cell_seconds:
            recorder.write({**record, "skipped": "time budget"})
            continue
        try:
            record.update(getattr(worker, kind)(net, batch, size, policy, plan, recorder.deadline))
        except Exception as error:  # one cell's failure (e.g. a dtype a device lacks) is a note, not the end
            record["error"] = f"{type(error).__name__}: {str(error)[:400]}"
        recorder.write(record)
        worker.release()
    if args.worker in BACKENDS:
        recorder.write({"kind": "info", "impl": args.worker, "tensorflow_imported_at_end": "tensorflow" in sys.modules})
    return 0


def import_project():
    """keras_lpips from this checkout; `saved_models/` (the shipped linear weights) is the package
    `keras_lpips.saved_models` once installed, and is made so here when it is not."""
    sys.path.insert(0, str(ROOT))
    try:
        importlib.import_module("keras_lpips.saved_models")
    except ModuleNotFoundError:
        sys.modules["keras_lpips.saved_models"] = importlib.import_module("saved_models")


class KerasWorker:
    """keras-lpips under the backend KERAS_BACKEND names (set by the driver for this process)."""

    def __init__(self, impl, config):
        try:
            import keras

            importlib.import_module(BACKENDS[impl])
        except ImportError as missing:
            raise Unavailable(f"cannot import keras or {BACKENDS[impl]}: {missing}") from None
        import_project()
        self.impl, self.config, self.keras = impl, config, keras
        self.backend = keras.backend.backend()
        if self.backend != BACKENDS[impl]:
            raise RuntimeError(f"{impl} needs KERAS_BACKEND={BACKENDS[impl]}. Received: {self.backend}")
        if self.backend == "jax":
            import jax

            self.jax = jax
            self.on_gpu = jax.devices()[0].platform == "gpu"
        else:
            import torch

            self.torch = torch
            self.on_gpu = torch.cuda.is_available()
        if config["device"] == "gpu" and not self.on_gpu:
            raise RuntimeError(f"{impl}: the run is on a GPU but {self.backend} sees none")
        self.weights = {net: w["path"] for net, w in config["weights"].items()}
        self._write_seeded_weights()

    def info(self):
        import keras_lpips

        info = {"keras": self.keras.__version__, "backend": self.backend, "keras_lpips": keras_lpips.__version__}
        if self.backend == "jax":
            device = self.jax.devices()[0]
            info.update(jax=self.jax.__version__, device_name=device.device_kind, platform=device.platform,
                        precision_note=f"jax_default_matmul_precision={self.jax.config.jax_default_matmul_precision}")  # fmt: skip
        else:
            torch = self.torch
            info.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
            if self.on_gpu:
                info.update(device_name=torch.cuda.get_device_name(), precision_note=_torch_tf32_note(torch))
        info["tensorflow_imported"] = "tensorflow" in sys.modules
        return info

    def _write_seeded_weights(self):
        """The first Keras worker writes each seeded backbone in torchvision layout, for all sides."""
        import numpy as np

        from keras_lpips.model import LPIPS

        for net, path in self.weights.items():
            path = pathlib.Path(path)
            if path.exists():
                continue
            metric = LPIPS(net=net, backbone_weights=None, lin_weights=None, seed=SEED)
            state = {}
            for layer_name, prefix in metric.spec.torchvision_names.items():
                kernel, bias = metric.backbone.get_layer(layer_name).get_weights()
                state[f"{prefix}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
                state[f"{prefix}.bias"] = bias
            partial = path.with_suffix(".partial.npz")
            np.savez(partial, **state)
            os.replace(partial, path)
        self.release()

    def metric(self, net, policy):
        from keras_lpips.model import LPIPS

        self.keras.config.set_dtype_policy(policy)
        try:
            return LPIPS(net=net, backbone_weights=self.weights[net], lin_weights="v0.1")
        finally:
            self.keras.config.set_dtype_policy("float32")

    def sync(self, out):
        if self.backend == "jax":
            self.jax.block_until_ready(out)
        elif self.on_gpu:
            self.torch.cuda.synchronize()

    def distance_step(self, metric, x0, x1):
        ops = self.keras.ops
        a, b = ops.convert_to_tensor(x0), ops.convert_to_tensor(x1)
        if self.backend == "jax":
            trainable = [v.value for v in metric.trainable_variables]
            frozen = [v.value for v in metric.non_trainable_variables]
            jitted = self.jax.jit(lambda t, n, a, b: metric.stateless_call(t, n, [a, b], training=False)[0])
            return lambda: jitted(trainable, frozen, a, b), jitted, (trainable, frozen, a, b)

        def step():
            with self.torch.no_grad():
                return metric([a, b], training=False)

        return step, None, None

    def distance(self, net, batch, size, policy, plan, deadline):
        import numpy as np

        x0, x1, groups = image_pairs(batch, size)
        metric = self.metric(net, policy)
        step, _, _ = self.distance_step(metric, x0, x1)
        timing, out = time_calls(step, self.sync, plan, deadline)
        distances = np.asarray(self.keras.ops.convert_to_numpy(out), np.float64).reshape(-1)
        return {**timing, "pairs_per_s": batch / timing["call_s"], "dtype": self.keras.backend.standardize_dtype(out.dtype),
                "finite": bool(np.isfinite(distances).all()), "distances": distances.tolist(), "groups": groups}  # fmt: skip

    def memory(self, net, batch, size, policy, plan, deadline):
        x0, x1, _ = image_pairs(batch, size)
        if not self.on_gpu:
            return {"peak_bytes": None, "note": "no GPU: device memory not measured"}
        metric = self.metric(net, policy)
        step, jitted, call_args = self.distance_step(metric, x0, x1)
        if self.backend == "jax":
            device = self.jax.devices()[0]
            compiled = jitted.lower(*call_args).compile()
            analysis = compiled.memory_analysis()
            base = device.memory_stats()["bytes_in_use"]
            self.jax.block_until_ready(compiled(*call_args))
            peak = device.memory_stats()["peak_bytes_in_use"]
            temp = getattr(analysis, "temp_size_in_bytes", None)
            note = "JAX: the process's peak (compilation's autotuning included), taken first in the process"
            return {"peak_bytes": peak, "above_base_bytes": peak - base, "xla_temp_bytes": temp, "note": note}
        return _torch_peak(self.torch, step, "keras-torch: torch.cuda.max_memory_allocated")

    def train(self, net, batch, size, policy, plan, deadline):
        import numpy as np

        from keras_lpips.losses import LPIPSLoss

        keras = self.keras
        keras.config.set_dtype_policy(policy)
        try:
            model = keras_image_model(keras, size)
            loss = LPIPSLoss(net=net, backbone_weights=self.weights[net], lin_weights="v0.1")
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        finally:
            keras.config.set_dtype_policy("float32")
        noisy, target = (keras.ops.convert_to_tensor(x) for x in training_batch(batch, size))
        losses = []

        def step():
            losses.append(float(np.asarray(model.train_on_batch(noisy, target))))  # the loss read back: a sync

        timing, _ = time_calls(step, lambda out: None, plan, deadline)
        return {**timing, "images_per_s": batch / timing["call_s"], "loss_first": losses[0], "loss_last": losses[-1],
                "finite": bool(np.isfinite(losses).all()), "optimizer": type(model.optimizer).__name__}  # fmt: skip

    def release(self):
        self.keras.backend.clear_session()
        gc.collect()
        if self.backend == "torch" and self.on_gpu:
            self.torch.cuda.empty_cache()


def keras_image_model(keras, size):
    """The small image model trained through the LPIPS loss (same layers as `torch_image_model`)."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=keras.initializers.HeNormal(1))(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=keras.initializers.HeNormal(2))(x)
    x = layers.Conv2D(3, 3, padding="same", kernel_initializer=keras.initializers.HeNormal(3))(x)
    return keras.Model(inputs, layers.Activation("tanh", dtype="float32")(x))


def torch_image_model(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 3, 3, padding=1), nn.Tanh())  # fmt: skip


def _torch_tf32_note(torch):
    return f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}"


def _torch_peak(torch, step, note):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_bytes": peak, "above_base_bytes": peak - base, "note": note}


class Unavailable(Exception):
    """An implementation this machine cannot run (a package missing): its rows are left out, with a note."""


class ReferenceWorker:
    """The reference `lpips` 0.1.4 on PyTorch (CUDA when the run is on a GPU)."""

    AUTOCAST = {"float32": None, "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}

    def __init__(self, config):
        try:
            import torch

            sys.path.insert(0, str(ROOT))
            with contextlib.redirect_stdout(sys.stderr):
                from data_tools.make_parity_fixtures import import_lpips  # torchvision's C-ops workaround on CPU torch

                self.lpips = import_lpips()
        except ImportError as missing:
            raise Unavailable(f"cannot import the reference: {missing}") from None
        self.torch = torch
        self.on_gpu = config["device"] == "gpu"
        if self.on_gpu and not torch.cuda.is_available():
            raise RuntimeError("the run is on a GPU but torch sees none")
        self.device = torch.device("cuda" if self.on_gpu else "cpu")
        self.weights = {net: w["path"] for net, w in config["weights"].items()}

    def info(self):
        from importlib import metadata

        torch = self.torch
        info = {"torch": torch.__version__, "lpips": metadata.version("lpips"), "torchvision": metadata.version("torchvision")}
        if self.on_gpu:
            info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), device_name=torch.cuda.get_device_name(),
                        precision_note=_torch_tf32_note(torch))  # fmt: skip
        return info

    def model(self, net):
        """lpips.LPIPS with the shipped v0.1 linear weights and the shared backbone file (when written)."""
        import re

        import numpy as np

        torch = self.torch
        with contextlib.redirect_stdout(sys.stderr):
            model = self.lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        shared = pathlib.Path(self.weights[net]).is_file()
        if shared:
            with np.load(self.weights[net]) as data:
                state = {k: data[k] for k in data.files}
            with torch.no_grad():
                for name, param in model.net.named_parameters():
                    param.copy_(torch.from_numpy(np.ascontiguousarray(state[re.sub(r"^slice\d+\.", "features.", name)])))
        model.requires_grad_(False)
        return model.to(self.device).eval(), "shared" if shared else "own random"

    def autocast(self, policy):
        dtype = self.AUTOCAST[policy]
        if dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=getattr(self.torch, dtype))

    def nchw(self, x):
        return self.torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(self.device)

    def sync(self, out):
        if self.on_gpu:
            self.torch.cuda.synchronize()

    def distance_step(self, net, policy, x0, x1):
        model, backbone = self.model(net)
        a, b = self.nchw(x0), self.nchw(x1)

        def step():
            with self.torch.inference_mode(), self.autocast(policy):
                return model(a, b)

        return step, backbone

    def distance(self, net, batch, size, policy, plan, deadline):
        import numpy as np

        x0, x1, groups = image_pairs(batch, size)
        step, backbone = self.distance_step(net, policy, x0, x1)
        timing, out = time_calls(step, self.sync, plan, deadline)
        distances = out.float().reshape(-1).cpu().numpy().astype(np.float64)
        return {**timing, "pairs_per_s": batch / timing["call_s"], "dtype": str(out.dtype).replace("torch.", ""),
                "finite": bool(np.isfinite(distances).all()), "distances": distances.tolist(), "groups": groups,
                "backbone": backbone}  # fmt: skip

    def memory(self, net, batch, size, policy, plan, deadline):
        if not self.on_gpu:
            return {"peak_bytes": None, "note": "no GPU: device memory not measured"}
        x0, x1, _ = image_pairs(batch, size)
        step, _ = self.distance_step(net, policy, x0, x1)
        return _torch_peak(self.torch, step, "reference: torch.cuda.max_memory_allocated")

    def train(self, net, batch, size, policy, plan, deadline):
        import numpy as np

        torch = self.torch
        torch.manual_seed(SEED)
        model = torch_image_model(torch).to(self.device)
        loss_fn, _ = self.model(net)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(self.device.type, enabled=policy == "mixed_float16")
        noisy, target = (self.nchw(x) for x in training_batch(batch, size))
        losses = []

        def step():
            optimizer.zero_grad(set_to_none=True)
            with self.autocast(policy):
                loss = loss_fn(model(noisy), target).mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())  # read back, as Keras' train_on_batch does

        timing, _ = time_calls(step, lambda out: None, plan, deadline)
        return {**timing, "images_per_s": batch / timing["call_s"], "loss_first": losses[0], "loss_last": losses[-1],
                "finite": bool(np.isfinite(losses).all()), "optimizer": "Adam" + (" + GradScaler" if scaler.is_enabled() else "")}  # fmt: skip

    def release(self):
        gc.collect()
        if self.on_gpu:
            self.torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
