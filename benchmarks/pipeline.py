"""Is the tf.data pipeline fast enough to keep `fit` busy? Decode rate against training rate.

    .venv/bin/python benchmarks/pipeline.py                         # synthesizes 2000 + 200 triplets in a temp dir
    .venv/bin/python benchmarks/pipeline.py --data /tmp/bench_synth  # or takes a BAPPS-layout folder
    .venv/bin/python benchmarks/pipeline.py --onednn on              # TF_ENABLE_ONEDNN_OPTS=1, as benchmarks/run.py

Writes benchmarks/pipeline.json and benchmarks/pipeline.md (`--out STEM` to change).

Measurements, each in a fresh process (TensorFlow's thread pools and oneDNN setting are
fixed when it starts), one process at a time:

1. decode and step, taking turns in one process, `--rounds` times: one full pass of the
   training pipeline exactly as `fit` builds it for an epoch (`twoafc_dataset` over the epoch's
   permuted records, batch 50, load size 64, input range [0, 1], no cache, parallel decode with
   AUTOTUNE), then `--step-calls` calls of `LPIPSTrainer.train_on_batch` on one in-memory
   batch (alexnet, lin, 50 x 64 x 64, as benchmarks/run.py times it: what a training step
   consumes with no input pipeline). Taking turns puts both under the same conditions: on a
   shared or throttled machine the rate of either moves by up to 1.5x from minute to minute,
   and the ratio of each round is steadier than the two rates. Each is also measured in CPU
   time per triplet (all threads of the process), which other load disturbs less.
2. fit: `fit_run` (what `keras-lpips fit --backbone alexnet --mode lin --batch-size 50
   --load-size 64` calls) for `--fit-epochs` epochs (decay 0), training on the images through
   the pipeline every epoch (`precompute_frozen=False`: what BAPPS-size sets do, their
   frozen-backbone maps not fitting in memory), reading the rate it reports per epoch in
   history.csv (training triplets / training seconds of the epoch, validation excluded);
   epoch 1 (tracing) is left out and the median of the others is reported.
3. fit with the frozen backbone's work done once (fit's default in lin mode where the maps fit
   in memory), the same way; skipped with --no-frozen.

The pipeline keeps up when decode >= 5 x what training consumes (target). The 1-minute load
average and the CPU time other processes used (from /proc/stat) are recorded with each
measurement.
"""

import argparse
import csv
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

MACHINE_CPU = """
def machine_busy_seconds():
    hz = os.sysconf("SC_CLK_TCK")
    v = list(map(int, open("/proc/stat").readline().split()[1:9]))
    return (sum(v) - v[3] - v[4]) / hz  # all but idle and iowait (steal included)

def own_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

class Window:
    \"\"\"Wall time, this process's CPU time and other processes' CPU time over a block.\"\"\"
    def __enter__(self):
        self.t, self.own, self.all, self.load = time.perf_counter(), own_seconds(), machine_busy_seconds(), os.getloadavg()[0]
        return self
    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.own = own_seconds() - self.own
        self.others = max(machine_busy_seconds() - self.all - self.own, 0.0)
"""

TURNS_CHILD = (
    """
import json, os, resource, sys, time
import numpy as np
"""
    + MACHINE_CPU
    + """
args = json.loads(sys.argv[1])
from keras_lpips import LPIPS
from keras_lpips.data.bapps import list_twoafc
from keras_lpips.data.pipeline import twoafc_dataset
from keras_lpips.training import LPIPSTrainer, reference_adam

records = list_twoafc(args["data"], "train")
n, s = args["batch"], args["size"]
trainer = LPIPSTrainer(LPIPS(net="alex", lin_weights=None, input_range=(0, 1), dropout=0.5), train_backbone=False)
trainer.compile(optimizer=reference_adam(1e-4, 0.5))
rng = np.random.default_rng(0)
batch = {k: rng.uniform(0, 1, (n, s, s, 3)).astype(np.float32) for k in ("ref", "p0", "p1")}
batch["judge"] = rng.random(n).astype(np.float32)
for _ in range(3):
    trainer.train_on_batch(batch)

def decode_pass(p):
    order = np.random.default_rng([0, 1, p]).permutation(len(records))  # an epoch's order, as fit draws it
    data = twoafc_dataset([records[i] for i in order], batch_size=n, load_size=s, input_range=(0.0, 1.0),
                          shuffle=False, seed=0, cache=False, deterministic=False)
    count = 0
    with Window() as w:
        for b in data:
            count += int(b["judge"].shape[0])
    return {"rate": count / w.wall, "cpu_us": w.own / count * 1e6, "own_cores": w.own / w.wall,
            "others_cores": w.others / w.wall, "load": w.load}

def steps():
    with Window() as w:
        for _ in range(args["step_calls"]):
            trainer.train_on_batch(batch)
    count = n * args["step_calls"]
    return {"rate": count / w.wall, "cpu_us": w.own / count * 1e6, "own_cores": w.own / w.wall,
            "others_cores": w.others / w.wall, "load": w.load}

decode_pass(1000)  # warm-up: traces the pipeline's functions, fills the page cache
rounds = []
for r in range(args["rounds"]):
    rounds.append({"decode": decode_pass(r), "step": steps()})
print(json.dumps({"triplets": len(records), "rounds": rounds}))
"""
)

FIT_CHILD = """
import json, sys
args = json.loads(sys.argv[1])
from keras_lpips.training import fit_run
extra = {"precompute_frozen": args["precompute"]}
summary = fit_run(args["data"], args["out"], backbone="alex", mode="lin", batch_size=args["batch"],
                  load_size=args["size"], epochs=args["epochs"], decay_epochs=0, progress=False, **extra)
print(json.dumps({"summary": summary, "extra": extra}))
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="BAPPS-layout folder with 2afc/train and 2afc/val (default: synthesize one)")
    parser.add_argument("--train", type=int, default=2000, help="training triplets to synthesize (default 2000)")
    parser.add_argument("--val", type=int, default=200, help="validation triplets to synthesize (default 200)")
    parser.add_argument("--rounds", type=int, default=6, help="decode passes, each followed by train steps (default 6)")
    parser.add_argument("--step-calls", type=int, default=8, help="train_on_batch calls per round (default 8)")
    parser.add_argument("--fit-epochs", type=int, default=4, help="fit epochs; the first is left out (default 4)")
    parser.add_argument("--no-frozen", action="store_true", help="skip the fit run with the frozen backbone precomputed")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--onednn", choices=("tf-default", "on"), default="tf-default",
                        help="TF_ENABLE_ONEDNN_OPTS: tf-default leaves it unset, as keras-lpips fit runs; "
                             "on sets it to 1, as benchmarks/run.py does (default tf-default)")  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "pipeline"), help="output path stem (default benchmarks/pipeline)")
    return parser.parse_args(argv)


def machine():
    cpu = platform.processor() or "unknown"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "tensorflow": md.version("tensorflow"), "keras": md.version("keras")}  # fmt: skip


def child_env(onednn):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if onednn == "on":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return env


def run_child(code, args, env):
    """Runs `code` in a fresh python with `args` as JSON; returns (its JSON reply, [load before, after])."""
    load = [os.getloadavg()[0]]
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env, capture_output=True, text=True, check=False)
    load.append(os.getloadavg()[0])
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), load


def measure_fit(data, args, env, precompute):
    """`fit_run` in a fresh process; the per-epoch rates of its history.csv."""
    with tempfile.TemporaryDirectory(prefix="keras-lpips-fitbench-") as tmp:
        run = pathlib.Path(tmp) / "run"
        request = {"data": str(data), "out": str(run), "batch": args.batch, "size": args.size, "epochs": args.fit_epochs,
                   "precompute": precompute}  # fmt: skip
        start = time.perf_counter()
        reply, load = run_child(FIT_CHILD, request, env)
        wall = time.perf_counter() - start
        with open(run / "history.csv") as f:
            rows = list(csv.DictReader(f))
    rates = [float(r["triplets_per_second"]) for r in rows]
    return {"per_epoch": rates, "steady": statistics.median(rates[1:]), "policy": reply["summary"]["config"]["policy"],
            "fit_run_extra": reply["extra"], "wall_seconds": round(wall, 1), "load": load}  # fmt: skip


def summarize_turns(turns):
    rounds = turns["rounds"]
    med = statistics.median
    out = {"triplets": turns["triplets"], "rounds": rounds}
    for part in ("decode", "step"):
        out[part] = {key: med(r[part][key] for r in rounds) for key in ("rate", "cpu_us", "own_cores", "others_cores")}
        out[part]["rates"] = [r[part]["rate"] for r in rounds]
    out["ratio_per_round"] = [r["decode"]["rate"] / r["step"]["rate"] for r in rounds]
    out["ratio"] = med(out["ratio_per_round"])
    out["cpu_ratio"] = out["step"]["cpu_us"] / out["decode"]["cpu_us"]
    out["load"] = [rounds[0]["decode"]["load"], rounds[-1]["step"]["load"]]
    return out


def markdown(result):
    m, t, f, g = result["machine"], result["turns"], result["fit"], result.get("fit_frozen")
    d, s = t["decode"], t["step"]
    rates = lambda values: ", ".join(f"{v:.0f}" for v in values)  # noqa: E731
    lines = [
        "# Input pipeline against training: triplets/s",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; TensorFlow {m['tensorflow']}, Keras {m['keras']}; "
        f"TF_ENABLE_ONEDNN_OPTS: {'1' if result['onednn'] == 'on' else 'unset (as keras-lpips fit runs)'}.  ",
        f"Data: {result['data']} ({t['triplets']} training triplets, 64x64 PNG); alexnet, lin, batch {result['batch']}, "
        f"load size {result['size']}; {result['date']}; 1-minute load average {result['load_average_start'][0]:.2f} at the start.",
        "",
        "| measurement | triplets/s (median) | CPU per triplet | per round / epoch | this process / other processes, cores |",
        "|---|---|---|---|---|",
        f"| decode: one full pass of fit's pipeline | **{d['rate']:.0f}** | {d['cpu_us']:.0f} µs | {rates(d['rates'])} "
        f"| {d['own_cores']:.2f} / {d['others_cores']:.2f} |",
        f"| train step alone (in-memory batch, {result['step_calls']} calls) | {s['rate']:.0f} | {s['cpu_us']:.0f} µs "
        f"| {rates(s['rates'])} | {s['own_cores']:.2f} / {s['others_cores']:.2f} |",
        f"| fit on the images (epochs 2-{len(f['per_epoch'])}) | {f['steady']:.0f} | | {rates(f['per_epoch'])} "
        f"| load {f['load'][0]:.2f} → {f['load'][1]:.2f} |",
    ]
    if g:
        lines.append(
            f"| fit, frozen backbone's work done once (epochs 2-{len(g['per_epoch'])}) | {g['steady']:.0f} | "
            f"| {rates(g['per_epoch'])} | load {g['load'][0]:.2f} → {g['load'][1]:.2f} |"
        )
    lines += [
        "",
        f"Decode / train step: **{t['ratio']:.1f}x** (median of the rounds' ratios: {', '.join(f'{r:.1f}' for r in t['ratio_per_round'])}); "
        f"in CPU time a step costs **{t['cpu_ratio']:.1f}x** what decoding its triplets does; decode / fit on the "
        f"images: **{result['ratio_fit']:.1f}x**. Target: at least 5x — {'met' if result['met'] else 'NOT met'}.",
        "",
        f"fit: `keras-lpips fit --data DATA --out RUN --backbone alexnet --mode lin --batch-size {result['batch']} "
        f"--load-size {result['size']} --epochs {len(f['per_epoch'])} --decay-epochs 0` (policy {f['policy']}; "
        f"fit_run {f['fit_run_extra']}); whole run {f['wall_seconds']} s"
        + (f", against {g['wall_seconds']} s with the frozen backbone's work done once." if g else "."),
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    env = child_env(args.onednn)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="keras-lpips-pipebench-") as tmp:
        data = args.data
        if data is None:
            from keras_lpips.data.synth import synthesize

            data = str(pathlib.Path(tmp) / "synth")
            print(f"synthesizing {args.train} + {args.val} triplets in {data}", file=sys.stderr, flush=True)
            synthesize(data, args.train, args.val, seed=0, n_jnd=0)
        print("decode and train step, taking turns ...", file=sys.stderr, flush=True)
        request = {"data": data, "rounds": args.rounds, "step_calls": args.step_calls, "batch": args.batch, "size": args.size}
        turns = summarize_turns(run_child(TURNS_CHILD, request, env)[0])
        print(f"  decode {turns['decode']['rate']:.0f}/s, step {turns['step']['rate']:.0f}/s, ratio {turns['ratio']:.1f}",
              file=sys.stderr)  # fmt: skip
        print("fit on the images ...", file=sys.stderr, flush=True)
        fit = measure_fit(data, args, env, precompute=False)
        print(f"  {fit['steady']:.0f} triplets/s (epochs {fit['per_epoch']})", file=sys.stderr)
        fit_frozen = None
        if not args.no_frozen:
            print("fit, frozen backbone's work done once ...", file=sys.stderr, flush=True)
            fit_frozen = measure_fit(data, args, env, precompute=True)
            print(f"  {fit_frozen['steady']:.0f} triplets/s (epochs {fit_frozen['per_epoch']})", file=sys.stderr)
    ratio_fit = turns["decode"]["rate"] / fit["steady"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "load_average_start": load_start,
        "data": args.data or f"synthesized ({args.train} train / {args.val} val, seed 0)", "batch": args.batch,
        "size": args.size, "onednn": args.onednn, "step_calls": args.step_calls, "turns": turns, "fit": fit,
        "fit_frozen": fit_frozen, "ratio_fit": ratio_fit, "met": min(turns["ratio"], ratio_fit) >= 5.0,
    }  # fmt: skip
    out = pathlib.Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
