"""keras-lpips against the reference PyTorch `lpips` 0.1.4, in one run on one machine.

    .venv/bin/python benchmarks/run.py            # full run (about an hour on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # smoke run: small shapes, few rounds (a few minutes)

Writes benchmarks/results.json and benchmarks/results.md (--quick: results-quick.*).

This process only schedules and reports. keras-lpips runs in benchmarks/keras_worker.py
(this python), the reference in benchmarks/reference_worker.py (`.venv-ref`'s python);
both are subprocesses speaking JSON lines and time their own calls. Within every cell
the implementations take turns, one call each per round (the order rotating), after
warm-up calls, and each reports the median call. Every cell also times a float32
matmul in TensorFlow and in torch in the same rotation: a cell's share of the machine's
attainable rate divides its conv FLOP/s by the faster of those two, measured under the
same load as the cell.

Sections: float32 matmul rate; distance throughput (alex, vgg; 64 pairs of 64x64, 8 of
256x256, 1 of 1024x1024); lin-mode training throughput (batch 50 of 64x64); SavedModel
and TFLite latency (one 256x256 pair); peak resident memory of one 2048x2048 vgg pair
(each implementation in a fresh process); and the error of precision="bf16".
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

from worker_protocol import Worker

ROOT = pathlib.Path(__file__).resolve().parent.parent
HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_REFERENCE_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
SECTIONS = ("memory", "matmul", "distance", "train", "export", "bf16error")

FULL = {
    "distance_cells": [(64, 64), (8, 256), (1, 1024)],
    "train": (50, 64),
    "export_size": 256,
    "memory_size": 2048,
    "matmul": 4096,
    "cell_matmul": 2048,
    "warmup": 2,
    "min_rounds": 5,
    "max_rounds": 15,
    "cell_budget_s": 60.0,
}
QUICK = {
    "distance_cells": [(8, 64), (2, 128), (1, 256)],
    "train": (8, 64),
    "export_size": 128,
    "memory_size": 512,
    "matmul": 1024,
    "cell_matmul": 512,
    "warmup": 1,
    "min_rounds": 2,
    "max_rounds": 2,
    "cell_budget_s": 1.0,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, 2 rounds: a smoke run")
    parser.add_argument("--reference-python", default=str(DEFAULT_REFERENCE_PYTHON), help="python of the lpips 0.1.4 venv")
    parser.add_argument("--no-reference", action="store_true", help="measure keras-lpips only")
    parser.add_argument("--precisions", default="float32,bf16", help="keras-lpips precisions (default float32,bf16)")
    parser.add_argument("--nets", default="alex,vgg")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {','.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, help="timed rounds per cell (default: by a time budget, 5 to 15)")
    parser.add_argument("--onednn", choices=("on", "off", "tf-default"), default="on",
                        help="TF_ENABLE_ONEDNN_OPTS for keras-lpips. TensorFlow turns oneDNN on by itself only on "
                             "CPUs with AVX512 (torch always uses it). Default: on")
    parser.add_argument("--inter-op", type=int, default=0, help="TensorFlow inter-op threads (0: TF's default)")
    parser.add_argument("--intra-op", type=int, default=0, help="TensorFlow intra-op threads (0: TF's default, one per core)")
    parser.add_argument("--tf-defaults-column", action=argparse.BooleanOptionalAction, default=True,
                        help="also time float32 distances with TensorFlow's own settings (oneDNN and threads untouched)")
    parser.add_argument("--out", help="output path stem (default benchmarks/results, or results-quick with --quick)")
    return parser.parse_args(argv)


# --- workers ------------------------------------------------------------------------------------


def keras_command(onednn, inter_op, intra_op, *extra):
    return [sys.executable, str(HERE / "keras_worker.py"), "--onednn", onednn, "--inter-op", str(inter_op),
            "--intra-op", str(intra_op), *extra]


def timer(worker, **request):
    """A runner: fn(calls) -> [seconds per call], asking `worker` to time `request`;
    `run.last` keeps the last reply (its "value": the mean distance, say)."""

    def run(calls):
        run.last = worker.ask(**request, calls=calls)
        return run.last["times"]

    run.last = {}
    return run


def alternate(runners, config, rounds=None, label=""):
    """Warm-up calls of every runner, then rounds of one timed call each, the order rotating.
    Returns ({name: [seconds per call]}, {name: [warm-up seconds]}, [1-min load average
    before, after])."""
    names = list(runners)
    load_before = os.getloadavg()[0]
    warm = {name: runners[name](config["warmup"]) for name in names}
    if rounds is None:
        per_round = sum(min(t) for t in warm.values())
        rounds = int(min(config["max_rounds"], max(config["min_rounds"], config["cell_budget_s"] // max(per_round, 1e-3))))
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name] += runners[name](1)
            time.sleep(0.02)  # let the other side's spinning threads settle
    load = [load_before, os.getloadavg()[0]]
    if label:
        print(f"  {label}: " + ", ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items()),
              file=sys.stderr, flush=True)
    return times, warm, load


def median(values):
    return statistics.median(values) if values else None


def add_matmul_runners(runners, workers, n):
    runners["matmul-tf"] = timer(workers["keras"], cmd="matmul", n=n)
    if "reference" in workers:
        runners["matmul-torch"] = timer(workers["reference"], cmd="matmul", n=n)


def attainable_rate(times, n):
    rates = {k: 2 * n**3 / median(v) for k, v in times.items() if k.startswith("matmul-")}
    return max(rates.values()), rates


# --- machine ------------------------------------------------------------------------------------


def machine_description():
    cpu, flags = platform.processor() or "unknown", []
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            if key.strip() == "flags" and not flags:
                wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
                flags = [f for f in wanted if f in value.split()]
    except OSError:
        pass
    memory = None
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_bytes": memory, "os": platform.platform(), "load_average_start": os.getloadavg()}


# --- sections -----------------------------------------------------------------------------------


def section_memory(args, config, nets, precisions):
    """Peak RSS of one pair, each implementation in a fresh process started from this small one
    (a child's ru_maxrss starts from its parent's peak: Linux keeps it across fork + exec)."""
    size = config["memory_size"]
    net = "vgg" if "vgg" in nets else nets[0]
    out = {"net": net, "size": size}
    commands = {f"keras-{p}": keras_command(args.onednn, args.inter_op, args.intra_op, "--peak-memory", net, str(size), p)
                for p in precisions}
    if not args.no_reference:
        commands["reference"] = [args.reference_python, str(HERE / "reference_worker.py"), "--peak-memory", net, str(size)]
    for name, cmd in commands.items():
        print(f"memory {name} {net} {size}x{size}", file=sys.stderr, flush=True)
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            out[name] = {"error": result.stderr[-2000:]}
            print("  failed:", result.stderr[-500:], file=sys.stderr)
            continue
        out[name] = json.loads(result.stdout.strip().splitlines()[-1])
        v = out[name]
        print(f"  peak {v['peak_rss_bytes'] / 2**30:.2f} GiB, before the call {v['before_call_bytes'] / 2**30:.2f} GiB",
              file=sys.stderr, flush=True)
    return out


def section_matmul(workers, config, rounds):
    n = config["matmul"]
    runners = {f"matmul-{name}": timer(w, cmd="matmul", n=n) for name, w in
               (("tf", workers["keras"]), ("tf-defaults", workers.get("keras-tf-defaults")), ("torch", workers.get("reference")))
               if w is not None}
    print(f"matmul {n}x{n}", file=sys.stderr, flush=True)
    times, _, _ = alternate(runners, config, rounds, label="matmul")
    rates = {k: 2 * n**3 / median(v) for k, v in times.items()}
    return {"n": n, "times": times, "rate_flops_per_s": rates, "attainable_flops_per_s": max(rates.values())}


def section_distance(workers, config, nets, precisions, rounds):
    cells = []
    for net in nets:
        for batch, size in config["distance_cells"]:
            runners = {f"keras-{p}": timer(workers["keras"], cmd="distance", net=net, precision=p, batch=batch, size=size)
                       for p in precisions}
            if "keras-tf-defaults" in workers:
                runners["keras-float32-tf-defaults"] = timer(workers["keras-tf-defaults"], cmd="distance", net=net,
                                                             precision="float32", batch=batch, size=size)
            if "reference" in workers:
                runners["reference"] = timer(workers["reference"], cmd="distance", net=net, batch=batch, size=size)
            add_matmul_runners(runners, workers, config["cell_matmul"])
            print(f"distance {net} {batch} x {size}x{size}", file=sys.stderr, flush=True)
            times, warm, load = alternate(runners, config, rounds, label=f"{net} {batch}x{size}")
            macs = workers["keras"].ask(cmd="flops", net=net, size=size)["conv_macs_per_image"]
            attainable, rates = attainable_rate(times, config["cell_matmul"])
            cell = {"net": net, "batch": batch, "size": size, "flops_per_pair": 2 * 2 * macs, "times": times,
                    "warmup_times": warm, "load_average_1min": load, "matmul_rates": rates,
                    "attainable_flops_per_s": attainable, "pairs_per_s": {}, "share_of_attainable": {}}
            for name, t in times.items():
                if not name.startswith("matmul-"):
                    cell["pairs_per_s"][name] = batch / median(t)
                    cell["share_of_attainable"][name] = batch / median(t) * cell["flops_per_pair"] / attainable
            cell["mean_distance"] = {name: run.last.get("value") for name, run in runners.items() if not name.startswith("matmul")}
            cells.append(cell)
    return cells


def section_train(workers, config, nets, rounds):
    batch, size = config["train"]
    out = []
    for net in nets:
        runners = {"keras-float32": timer(workers["keras"], cmd="train", net=net, batch=batch, size=size)}
        if "reference" in workers:
            runners["reference"] = timer(workers["reference"], cmd="train", net=net, batch=batch, size=size)
        add_matmul_runners(runners, workers, config["cell_matmul"])
        print(f"train {net} {batch} x {size}x{size}", file=sys.stderr, flush=True)
        times, warm, load = alternate(runners, config, rounds, label=f"train {net}")
        macs = workers["keras"].ask(cmd="flops", net=net, size=size)["conv_macs_per_image"]
        attainable, rates = attainable_rate(times, config["cell_matmul"])
        cell = {"net": net, "batch": batch, "size": size,
                "keras_step": "keras_lpips.training.LPIPSTrainer.train_on_batch, lin mode (train_backbone=False), "
                              "reference_adam(1e-4, beta_1=0.5)",
                "reference_step": "lpips.Trainer (is_train=True, pnet_tune=False): set_input + optimize_parameters",
                "flops_per_triplet": 3 * 2 * macs, "reference_executed_flops_per_triplet": 2 * 4 * 2 * macs,
                "times": times, "warmup_times": warm, "load_average_1min": load, "matmul_rates": rates,
                "attainable_flops_per_s": attainable,
                "triplets_per_s": {}, "share_of_attainable": {}}
        for name, t in times.items():
            if not name.startswith("matmul-"):
                cell["triplets_per_s"][name] = batch / median(t)
                cell["share_of_attainable"][name] = batch / median(t) * cell["flops_per_triplet"] / attainable
        out.append(cell)
    return out


def section_export(workers, config, nets, rounds):
    size = config["export_size"]
    out = []
    for net in nets:
        try:
            files = workers["keras"].ask(cmd="export_prepare", net=net, size=size)
        except RuntimeError as error:
            if "export_savedmodel" in str(error) or "ImportError" in str(error):
                return {"skipped": f"keras_lpips.export lacks export_savedmodel/export_tflite ({error})"}
            raise
        runners = {kind: timer(workers["keras"], cmd="export", kind=kind) for kind in ("savedmodel", "tflite", "keras")}
        if "reference" in workers:
            runners["reference"] = timer(workers["reference"], cmd="distance", net=net, batch=1, size=size)
        print(f"export {net} 1 x {size}x{size}", file=sys.stderr, flush=True)
        times, warm, load = alternate(runners, config, rounds, label=f"export {net}")
        out.append({"net": net, "size": size, "files": files, "times": times, "warmup_times": warm, "load_average_1min": load,
                    "latency_s": {k: median(v) for k, v in times.items()}})
    return out


# --- report -------------------------------------------------------------------------------------


def fmt(value):
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def ms(x):
    return "-" if x is None else f"{x * 1e3:.1f}"


def gib(x):
    return "-" if x is None else f"{x / 2**30:.2f} GiB"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def markdown(results):
    m = results["machine"]
    k = results.get("keras_info", {})
    kd = results.get("keras_tf_defaults_info")
    r = results.get("reference_info") or {}
    s = results["settings"]
    lines = ["# keras-lpips vs the reference lpips 0.1.4", ""]
    if results.get("quick"):
        lines += ["**Quick smoke run (`--quick`): small shapes, 2 rounds. Not the benchmark's numbers.**", ""]
    lines += [
        f"- Machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX2'}), {m['cores']} cores ({m['usable_cores']} usable), "
        f"{(m['memory_bytes'] or 0) / 2**30:.0f} GiB RAM; {m['os']}",
        f"- keras-lpips: TensorFlow {k.get('tensorflow', '-')}, Keras {k.get('keras', '-')}; oneDNN "
        f"{'on' if k.get('onednn') else 'off'} (`--onednn {s['onednn']}`), inter-op threads {k.get('inter_op_threads') or 'TF default'}, "
        f"intra-op threads {k.get('intra_op_threads') or 'TF default'}"
        + (f"; the \"TF defaults\" column: oneDNN {'on' if kd.get('onednn') else 'off'}, TF's own thread pools" if kd else ""),
        f"- Reference: lpips {r.get('lpips', '-')}, torch {r.get('torch', '-')} (CPU capability {r.get('cpu_capability', '-')}, "
        f"{r.get('threads', '-')} threads, oneDNN/mkldnn {'on' if r.get('mkldnn') else 'off'})",
        f"- Load average (1/5/15 min) at start: {', '.join(f'{x:.1f}' for x in m['load_average_start'])}; at end: "
        f"{', '.join(f'{x:.1f}' for x in results.get('load_average_end', []))}. Started {results['started']}, "
        f"took {results.get('seconds', 0) / 60:.0f} min.",
        "- Method: medians of per-call times; within each cell the implementations take turns, one call each per round, "
        "after warm-up. keras-lpips is timed from numpy NHWC arrays to a numpy result (`np.asarray(metric([x0, x1]))`, "
        "input checks included); the reference from torch NCHW tensors, `model(x0, x1)` under `torch.inference_mode()`. "
        "Same backbone (torchvision ImageNet) and linear (v0.1) weights and the same images on both sides.",
        "",
    ]
    mm = results.get("matmul")
    if mm:
        rates = ", ".join(f"{name.removeprefix('matmul-')} {v / 1e9:.0f} GFLOP/s" for name, v in mm["rate_flops_per_s"].items())
        lines += [f"## float32 matmul, {mm['n']}x{mm['n']}", "", f"{rates}. Each cell below also times a "
                  f"{results['settings']['config']['cell_matmul']}² matmul in both frameworks in its rotation; its "
                  "**share** is conv FLOP/s over the faster of those two.", ""]
    dist = results.get("distance")
    if dist:
        extra = any("keras-float32-tf-defaults" in c["pairs_per_s"] for c in dist)
        head = "| net | pairs x size | GFLOP/pair | keras float32 | keras bf16 |" + (" keras float32, TF defaults |" if extra else "")
        head += " reference | float32 / ref | bf16 / ref | float32 share | bf16 share | ref share | matmul GFLOP/s (tf / torch) |"
        lines += ["## Distance throughput (pairs/s)", "", head, "|" + "---|" * (head.count("|") - 1)]
        for c in dist:
            p, sh, mr = c["pairs_per_s"], c["share_of_attainable"], c["matmul_rates"]
            row = [c["net"], f"{c['batch']} x {c['size']}²", f"{c['flops_per_pair'] / 1e9:.3g}", fmt(p.get("keras-float32")),
                   fmt(p.get("keras-bf16"))]
            if extra:
                row.append(fmt(p.get("keras-float32-tf-defaults")))
            row += [fmt(p.get("reference")), ratio(p.get("keras-float32"), p.get("reference")),
                    ratio(p.get("keras-bf16"), p.get("reference")), pct(sh.get("keras-float32")), pct(sh.get("keras-bf16")),
                    pct(sh.get("reference")),
                    f"{mr.get('matmul-tf', 0) / 1e9:.0f} / {mr.get('matmul-torch', 0) / 1e9:.0f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    tr = results.get("train")
    if tr:
        lines += ["## Training throughput, lin mode (triplets/s)", "",
                  "| net | batch x size | keras-lpips | reference | keras / ref | keras share | ref share |", "|---|---|---|---|---|---|---|"]
        for c in tr:
            t, sh = c["triplets_per_s"], c["share_of_attainable"]
            lines.append(f"| {c['net']} | {c['batch']} x {c['size']}² | {fmt(t.get('keras-float32'))} | {fmt(t.get('reference'))} | "
                         f"{ratio(t.get('keras-float32'), t.get('reference'))} | {pct(sh.get('keras-float32'))} | "
                         f"{pct(sh.get('reference'))} |")
        lines += ["", f"keras-lpips: {tr[0]['keras_step']}. Reference: {tr[0]['reference_step']}. Shares count the "
                  "work lin mode needs, 3 backbone forwards per triplet. The reference executes about 8 image-passes per "
                  "triplet: ref's features twice (2 forwards per distance) and, since its inputs require grad, a backward "
                  "through the frozen trunk to the images; keras-lpips runs one forward of each of ref, p0 and p1 and "
                  "back-propagates into the linear heads only.", ""]
    ex = results.get("export")
    if isinstance(ex, dict):
        lines += ["## SavedModel / TFLite latency", "", f"Skipped: {ex['skipped']}", ""]
    elif ex:
        lines += [f"## Latency of one {ex[0]['size']}x{ex[0]['size']} pair (ms)", "",
                  "| net | SavedModel | TFLite | keras-lpips call | reference |", "|---|---|---|---|---|"]
        for c in ex:
            lat = c["latency_s"]
            lines.append(f"| {c['net']} | {ms(lat.get('savedmodel'))} | {ms(lat.get('tflite'))} | {ms(lat.get('keras'))} | "
                         f"{ms(lat.get('reference'))} |")
        lines += ["", "SavedModel: `export_savedmodel`, then `tf.saved_model.load(...).signatures['serving_default']`; "
                  "TFLite: `export_tflite` (float32), `tf.lite.Interpreter(num_threads=cores)` signature runner (XNNPACK); "
                  "inputs in [0, 1].", ""]
    mem = results.get("memory")
    if mem:
        lines += [f"## Peak resident memory, one {mem['size']}x{mem['size']} {mem['net']} pair (fresh process each)", "",
                  "| implementation | peak RSS (ru_maxrss) | before the call | increase | estimate_memory_bytes |",
                  "|---|---|---|---|---|"]
        for name, v in mem.items():
            if isinstance(v, dict):
                if "error" in v:
                    lines.append(f"| {name} | failed | | | |")
                    continue
                lines.append(f"| {name} | {gib(v['peak_rss_bytes'])} | {gib(v['before_call_bytes'])} | "
                             f"{gib(v['peak_rss_bytes'] - v['before_call_bytes'])} | {gib(v.get('estimate_bytes'))} |")
        lines += ["", "Before the call: after building the model and one small (64x64) call.", ""]
    be = results.get("bf16_error")
    if be:
        lines += ['## precision="bf16" against float32: distances', "",
                  "| net | images | max abs error | max relative error | mean distance |", "|---|---|---|---|---|"]
        for e in be:
            lines.append(f"| {e['net']} | {e['images']} | {e['max_abs_error']:.1e} | {e['max_rel_error']:.1e} | "
                         f"{e['mean_distance']:.4f} |")
        lines.append("")
    if results.get("targets"):
        lines += ["## Targets", "", "| target | detail | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['detail']} | {'yes' if t['met'] else 'no'} |" for t in results["targets"]]
        lines.append("")
    return "\n".join(lines)


def targets(results):
    out = []
    cells = results.get("distance") or []
    if cells and all("reference" in c["pairs_per_s"] for c in cells):
        def name(c):
            return f"{c['net']} {c['batch']}x{c['size']}²"

        slow = [f"{name(c)} ({c['pairs_per_s']['keras-float32'] / c['pairs_per_s']['reference']:.2f}x)" for c in cells
                if c["pairs_per_s"]["keras-float32"] < c["pairs_per_s"]["reference"]]
        out.append({"target": "float32 never slower than the reference", "met": not slow,
                    "detail": "every cell, " + ", ".join(f"{name(c)} {c['pairs_per_s']['keras-float32'] / c['pairs_per_s']['reference']:.2f}x"
                                                         for c in cells) if not slow else "slower: " + ", ".join(slow)})
        small = [c for c in cells if c["size"] <= 256]
        low = [c for c in small if c["share_of_attainable"]["keras-float32"] < 0.8]
        out.append({"target": "float32 >= 80% of the matmul rate at 64x64 and 256x256", "met": not low,
                    "detail": ", ".join(f"{name(c)} {pct(c['share_of_attainable']['keras-float32'])}" for c in small)})
        if all("keras-bf16" in c["pairs_per_s"] for c in cells):
            rs = {name(c): c["pairs_per_s"]["keras-bf16"] / c["pairs_per_s"]["reference"] for c in cells}
            out.append({"target": "bf16 >= 1.6x the reference", "met": all(v >= 1.6 for v in rs.values()),
                        "detail": ", ".join(f"{k} {v:.2f}x" for k, v in rs.items())})
    tr = results.get("train") or []
    if tr and all("reference" in c["triplets_per_s"] for c in tr):
        rs = {c["net"]: c["triplets_per_s"]["keras-float32"] / c["triplets_per_s"]["reference"] for c in tr}
        out.append({"target": "training >= 2x the reference", "met": all(v >= 2 for v in rs.values()),
                    "detail": ", ".join(f"{k} {v:.2f}x" for k, v in rs.items())})
    return out


# --- main ---------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    config = QUICK if args.quick else FULL
    nets, precisions = args.nets.split(","), args.precisions.split(",")
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    stem = pathlib.Path(args.out) if args.out else HERE / ("results-quick" if args.quick else "results")
    stem.parent.mkdir(parents=True, exist_ok=True)  # before the work: a bad --out fails now, not at the end
    started = time.time()
    results = {"quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_description(),
               "settings": {"onednn": args.onednn, "inter_op": args.inter_op, "intra_op": args.intra_op,
                            "precisions": precisions, "nets": nets, "config": config}}

    def save():
        results["seconds"] = time.time() - started
        results["load_average_end"] = os.getloadavg()
        results["targets"] = targets(results)
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        stem.with_suffix(".md").write_text(markdown(results))

    if "memory" in sections:  # first, from this still-small process
        results["memory"] = section_memory(args, config, nets, precisions)
        save()
    workers = {}
    try:
        workers["keras"] = Worker(keras_command(args.onednn, args.inter_op, args.intra_op))
        results["keras_info"] = workers["keras"].ask(cmd="info")
        if args.tf_defaults_column and "float32" in precisions:
            workers["keras-tf-defaults"] = Worker(keras_command("tf-default", 0, 0))
            results["keras_tf_defaults_info"] = workers["keras-tf-defaults"].ask(cmd="info")
        if not args.no_reference:
            workers["reference"] = Worker([args.reference_python, str(HERE / "reference_worker.py")])
            results["reference_info"] = workers["reference"].ask(cmd="info")
        if "matmul" in sections:
            results["matmul"] = section_matmul(workers, config, args.rounds)
            save()
        if "distance" in sections:
            results["distance"] = section_distance(workers, config, nets, precisions, args.rounds)
            save()
        if "keras-tf-defaults" in workers:
            workers.pop("keras-tf-defaults").close()
        if "train" in sections:
            results["train"] = section_train(workers, config, nets, args.rounds)
            save()
        if "export" in sections:
            results["export"] = section_export(workers, config, nets, args.rounds)
            save()
        if "bf16error" in sections and {"float32", "bf16"} <= set(precisions):
            print("bf16 error", file=sys.stderr, flush=True)
            results["bf16_error"] = workers["keras"].ask(cmd="bf16_error", nets=nets, quick=args.quick)["rows"]
            save()
    finally:
        for worker in workers.values():
            worker.close()
    save()
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
