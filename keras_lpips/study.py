"""The seed study: five LPIPS configurations trained and compared on 2AFC judgments.

The study this project comes from compared, on human 2AFC judgments:
VGG16 (first 2 layers) and AlexNet (first 4 layers), each with the cosine
distance and with LPIPS + the small ranking network, and an untrained VGG16 with
the cosine distance. It found that the LPIPS models beat the cosine ones, that
VGG beat AlexNet with LPIPS while AlexNet beat VGG with cosine.

`run_study` trains and evaluates those configurations (plus rows from a TOML
config), resumes where an earlier run stopped, and writes `results.md`,
`results.json`, `results.png` (bar chart), `curves.png` (accuracy and loss per
epoch for every configuration) and `summary.md` (which findings held, each with
its 2AFC difference and the paired standard error over the validation triplets).
"""

import dataclasses
import json
import pathlib
import re
import time
import typing

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from keras_lpips import files
from keras_lpips.errors import InputError


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One trained configuration of the study."""

    name: str
    backbone: str
    distance: str
    layers: int | None = None
    backbone_weights: str = "imagenet"
    mode: str = "lin"


DEFAULT_CONFIGS = (
    StudyConfig("vgg16-2L-cosine", "vgg", "cosine", 2),
    StudyConfig("vgg16-2L-lpips", "vgg", "lpips", 2),
    StudyConfig("alexnet-4L-cosine", "alex", "cosine", 4),
    StudyConfig("alexnet-4L-lpips", "alex", "lpips", 4),
    StudyConfig("vgg16-untrained-cosine", "vgg", "cosine", None, "random"),
)
QUICK = {"epochs": 1, "decay_epochs": 1, "batch_size": 8}
FINDINGS = (  # (finding, the row that should score higher, the row it should beat)
    ("LPIPS beats cosine with VGG16 (2 layers)", "vgg16-2L-lpips", "vgg16-2L-cosine"),
    ("LPIPS beats cosine with AlexNet (4 layers)", "alexnet-4L-lpips", "alexnet-4L-cosine"),
    ("with LPIPS, VGG16 beats AlexNet", "vgg16-2L-lpips", "alexnet-4L-lpips"),
    ("with cosine, AlexNet beats VGG16", "alexnet-4L-cosine", "vgg16-2L-cosine"),
    ("pretrained VGG16 beats untrained VGG16 (cosine)", "vgg16-2L-cosine", "vgg16-untrained-cosine"),
)
SYNTHETIC_NOTE = (
    "synthetic data (keras-lpips data synth): the judgments are simulated proxies, drawn from which "
    "distorted patch is closer to the reference by a multi-scale RMSE, with rater noise; not human judgments"
)


def load_config(path):
    """Reads a study TOML: `seeds = [0, 1]`, `[train]` options, and `[[run]]` rows added to the five.

    Example:
        seeds = [0, 1, 2]
        [train]
        epochs = 3
        [[run]]
        name = "squeeze-7L-lpips-tune"
        backbone = "squeeze"
        distance = "lpips"
        mode = "tune"

    Every problem is an `InputError` naming the place: a key, `[train]` option, or a `[[run]]`
    row (its number from 1 and its name) and field. Each row is checked, with the `[train]`
    options, as `fit` would check it, so that no wrong row fails hours into a study.
    """
    from keras_lpips.training.fit import RunConfig

    path = pathlib.Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"Cannot read study config {path}: {error}") from None
    for key in data:
        if key not in ("seeds", "train", "run"):
            raise InputError(f"{path}: unknown key {key!r}; a study config holds seeds, [train] and [[run]]. Received: {key} = {data[key]!r}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(_of_type(s, int) and s >= 0 for s in seeds):
        raise InputError(f"{path}: seeds must be a non-empty list of non-negative integers. Received: seeds = {seeds!r}")
    train, rows = data.get("train", {}), data.get("run", [])
    if not isinstance(train, dict):
        raise InputError(f"{path}: train must be a [train] table of fit options. Received: train = {train!r}")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{path}: run must be [[run]] tables, one per configuration. Received: run = {rows!r}")
    options = {f.name: f.type for f in dataclasses.fields(RunConfig) if f.name not in _SET_PER_RUN}
    for key, value in train.items():
        _check_field(f"{path}: [train]", "option", key, value, options)
    configs = DEFAULT_CONFIGS + tuple(_run_row(f"{path}: [[run]] row {number}", row) for number, row in enumerate(rows, 1))
    names = [config.name for config in configs]
    for index, config in enumerate(configs):
        number = index + 1 - len(DEFAULT_CONFIGS)  # the [[run]] rows count from 1, after the five
        where = f"{path}: [[run]] row {number} ({config.name!r})" if number > 0 else f"{path}: [train], for the study's row {config.name!r}"
        if config.name in names[:index]:
            raise InputError(f"{where}: the name is taken by an earlier row; each row trains into runs/NAME-seedS")
        try:
            RunConfig(".", ".", backbone=config.backbone, distance=config.distance, layers=config.layers,
                      mode=config.mode, backbone_weights=config.backbone_weights, **train)  # fmt: skip
        except InputError as error:
            raise InputError(f"{where}: {error}") from None
    return {"configs": configs, "seeds": tuple(seeds), "train": train}


def _run_row(where, row):
    """The `StudyConfig` of a [[run]] row, or `InputError` naming the row and the field."""
    where += f" ({row['name']!r})" if isinstance(row.get("name"), str) else ""
    fields = {f.name: f.type for f in dataclasses.fields(StudyConfig)}
    for key, value in row.items():
        _check_field(where, "field", key, value, fields)
    required = [f.name for f in dataclasses.fields(StudyConfig) if f.default is dataclasses.MISSING]
    missing = [name for name in required if name not in row]
    if missing:
        raise InputError(f"{where}: missing field {missing[0]!r} (every row needs {', '.join(required)}). Received: {row!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", row["name"]):  # it names a folder under runs/
        raise InputError(f"{where}: a name is letters, digits, '.', '_' and '-' (it names the folder runs/NAME-seedS). Received: name = {row['name']!r}")
    return StudyConfig(**row)


# What run_study sets for each run itself: not [train] options.
_SET_PER_RUN = ("data_root", "out_dir", "backbone", "distance", "layers", "mode", "backbone_weights", "seed", "resume", "progress")


def _check_field(where, kind, key, value, types):
    """Raises `InputError` unless `key` is one of `types` (name -> annotation) and `value` fits it."""
    if key not in types:
        raise InputError(f"{where}: unknown {kind} {key!r}; expected one of {', '.join(types)}. Received: {key} = {value!r}")
    allowed = [t for t in (typing.get_args(types[key]) or (types[key],)) if t is not type(None)]
    if not any(_of_type(value, t) for t in allowed):
        expected = " or ".join(_TYPE_NAMES.get(t, str(t)) for t in allowed)
        raise InputError(f"{where}: {kind} {key!r} must be {expected}. Received: {key} = {value!r}")


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}


def _of_type(value, annotation):
    """isinstance, but a bool is no number and an int is a float."""
    if isinstance(value, bool):
        return annotation is bool
    if annotation is float:
        return isinstance(value, (int, float))
    return isinstance(value, annotation)


def run_study(data, out, configs=DEFAULT_CONFIGS, seeds=(0,), quick=False, train=None, log=print):
    """Trains (or resumes) every configuration and seed, evaluates, and writes the reports.

    Runs finished earlier are reused, and evaluations kept (eval.json), only where they were made
    with this study's settings on this data: a run folder holding a run with other settings or
    data is refused before anything trains (`InputError`), an evaluation made on other data
    computed again. Returns the results dictionary also written to `results.json`.
    """
    from keras_lpips.data.bapps import resolve_root
    from keras_lpips.training import fit_run
    from keras_lpips.training.fit import check_outside_inputs

    out = pathlib.Path(out)
    check_outside_inputs(out, data)
    options = {**(QUICK if quick else {}), **(train or {})}
    runs = [(config, seed, out / "runs" / f"{config.name}-seed{seed}") for config in configs for seed in seeds]
    _check_earlier_runs(data, runs, options)
    out.mkdir(parents=True, exist_ok=True)
    data_basis = _data_basis(data)
    evaluations = {}
    for config, seed, run_dir in runs:
        started = time.perf_counter()
        if (run_dir / "model.keras").is_file():
            log(f"{config.name} seed {seed}: finished earlier, skipped")
        else:
            resume = run_dir.is_dir() and any(run_dir.iterdir())
            log(f"{config.name} seed {seed}: {'resuming' if resume else 'training'}")
            fit_run(data, run_dir, resume=resume, **_fit_options(config, seed, options))
        # The baselines (L2, SSIM, PSNR) do not depend on the model: computed with the first only.
        baselines = not evaluations
        basis = {**data_basis, "baselines": baselines, "run": _recorded_config(run_dir)}
        evaluation = _load_eval(run_dir, basis)
        if evaluation is None:
            evaluation = _save_eval(run_dir, basis, _evaluate_run_dir(data, run_dir, baselines))
        evaluations[(config.name, seed)] = evaluation
        log(f"{config.name} seed {seed}: mean 2AFC {evaluation['2afc']['mean']['model']:.4f} "
            f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    official = {}
    for net in ("alex", "vgg"):
        directory, basis = out / "official" / net, {**data_basis, "model": f"official LPIPS {net} v0.1"}
        official[net] = _load_eval(directory, basis)
        log(f"official LPIPS {net} v0.1: {'evaluating' if official[net] is None else 'evaluated earlier'}")
        if official[net] is None:
            official[net] = _save_eval(directory, basis, _evaluate_official(data, net))
    results = _tabulate(configs, seeds, evaluations, official)
    results["data"] = str(data)
    results["synthetic"] = (resolve_root(data) / "SYNTHETIC_README.txt").is_file()
    results["findings"] = findings(results, _row_scores(configs, seeds, evaluations, official))
    files.atomic_write(out / "results.json", json.dumps(results, indent=2) + "\n")
    files.atomic_write(out / "results.md", study_markdown(results))
    files.atomic_write(out / "summary.md", summary_markdown(results))
    plot_results(results, out / "results.png")
    plot_curves(out, configs, seeds, out / "curves.png")
    log(f"wrote {out / 'results.md'}, results.json, results.png, curves.png, summary.md")
    return results


def _fit_options(config, seed, options):
    """`fit_run`'s options for a configuration and seed of the study, but data, folder and resume."""
    return dict(
        backbone=config.backbone, distance=config.distance, layers=config.layers, mode=config.mode,
        backbone_weights=config.backbone_weights, seed=seed, progress=False, **options,
    )  # fmt: skip


def _check_earlier_runs(data, runs, options):
    """Refuses (`InputError`), before anything trains, a run folder of the study holding a run
    (finished or not) that was started with other settings or on other data than this study's
    (`config_changes`, as `fit --resume` compares them, but the mixed-precision policy that
    "auto" picks for the machine): its results are not this study's."""
    from keras_lpips.data.bapps import list_twoafc
    from keras_lpips.training.fit import RunConfig
    from keras_lpips.training.run_folder import RunFolder, config_changes

    earlier = {run_dir: RunFolder(run_dir).previous_record() for _, _, run_dir in runs}
    if not any(earlier.values()):
        return
    train, val = list_twoafc(data, "train", options.get("subsets")), list_twoafc(data, "val", options.get("val_subsets"))
    for config, seed, run_dir in runs:
        if not earlier[run_dir]:
            continue
        planned = RunConfig(data, run_dir, **_fit_options(config, seed, options)).record(train, val, policy=None)
        changes = config_changes(earlier[run_dir]["config"], planned, ignore=("policy",))
        if changes:
            raise InputError(
                f"{run_dir} holds a run started with other settings or data than this study's ({changes}); "
                "run the study with those, delete that folder to train it again, or choose another --out"
            )


def _recorded_config(run_dir):
    """The configuration a run recorded in its run.json (what its evaluation depends on), without
    what may differ between a run and its resumption (`comparable_config`)."""
    from keras_lpips.training.run_folder import RunFolder, comparable_config

    record = RunFolder(run_dir).previous_record()
    return comparable_config(record["config"]) if "config" in record else None  # none: a folder without run.json


def _data_basis(data):
    """What an evaluation on `data` depends on besides the model: the dataset and its validation
    sets (`fingerprint`)."""
    from keras_lpips.data.bapps import fingerprint, has_split, list_jnd, list_twoafc, resolve_root

    jnd = fingerprint(list_jnd(data), data) if has_split(data, "jnd", "val") else None
    twoafc = fingerprint(list_twoafc(data, "val"), data)
    return {"data": str(resolve_root(data).resolve()), "2afc_val": twoafc, "jnd_val": jnd}


def _load_eval(directory, basis):
    """The evaluation kept in directory/eval.json where it was made on `basis` (`_save_eval`), else
    None (none kept, another basis, an unreadable file: it is to be computed again)."""
    try:
        kept = json.loads((directory / "eval.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return kept if isinstance(kept, dict) and kept.get("basis") == _as_json(basis) else None


def _save_eval(directory, basis, result):
    """Keeps `result` in directory/eval.json with the `basis` it was computed on; returns it so."""
    directory.mkdir(parents=True, exist_ok=True)
    result = {**result, "basis": _as_json(basis)}
    files.atomic_write(directory / "eval.json", json.dumps(result))
    return result


def _as_json(value):
    """`value` as it reads back from JSON (tuples as lists)."""
    return json.loads(json.dumps(value))


def _evaluate_run_dir(data, run_dir, baselines):
    """A run's scores; its 2AFC distances from the run's val_distances.npz when it wrote one
    (fit computed them with the final weights), so that only the JND pairs need the model."""
    saved = run_dir / "val_distances.npz"
    distances = None
    if saved.is_file():
        with np.load(saved) as arrays:
            distances = (arrays["d0"], arrays["d1"])
    from keras_lpips.evaluation import evaluate_run

    return evaluate_run(data, model=run_dir, baselines=baselines, keep_scores=True, distances=distances)


def _evaluate_official(data, net):
    from keras_lpips.evaluation import evaluate_run
    from keras_lpips.model import LPIPS

    metric = LPIPS.from_preset(f"{net}-v0.1", input_range=(0.0, 1.0))
    return evaluate_run(data, metric=metric, baselines=False, keep_scores=True)


def _row_scores(configs, seeds, evaluations, official):
    """{row name: {subset: per-triplet 2AFC scores (mean over seeds)}} for the rows whose
    evaluations kept them."""
    rows = {}
    for config in configs:
        per_seed = [evaluations[(config.name, s)].get("scores") for s in seeds]
        if all(per_seed):
            rows[config.name] = {k: np.mean([np.asarray(p[k]["model"]) for p in per_seed], axis=0) for k in per_seed[0]}
    for net, result in official.items():
        if "scores" in result:
            rows[f"official LPIPS {net} v0.1"] = {k: np.asarray(v["model"]) for k, v in result["scores"].items()}
    return rows


def _tabulate(configs, seeds, evaluations, official):
    """Rows of mean 2AFC per subset (and JND mAP), with the spread over seeds."""
    first = next(iter(evaluations.values()))
    subsets = [s for s in first["2afc"] if s not in ("all", "mean")]
    rows = []

    def row(name, kind, per_seed, column="model"):
        scores = {s: [e["2afc"][s][column] for e in per_seed] for s in subsets + ["mean"]}
        entry = {"name": name, "kind": kind, "seeds": len(per_seed)}
        entry["2afc"] = {s: {"mean": float(np.mean(v)), "spread": float(np.std(v))} for s, v in scores.items()}
        if "jnd" in per_seed[0]:
            maps = [np.mean([e["jnd"][s][column] for s in e["jnd"]]) for e in per_seed]
            entry["jnd_map"] = {"mean": float(np.mean(maps)), "spread": float(np.std(maps))}
        rows.append(entry)

    for config in configs:
        row(config.name, "trained", [evaluations[(config.name, s)] for s in seeds])
    for net, result in official.items():
        row(f"official LPIPS {net} v0.1", "official", [result])
    for column, label in (("l2", "L2 (Lab)"), ("ssim", "SSIM"), ("psnr", "PSNR")):
        row(label, "baseline", [first], column)
    return {"subsets": subsets, "seeds": list(seeds), "rows": rows}


def _score(results, name):
    return next(r["2afc"]["mean"]["mean"] for r in results["rows"] if r["name"] == name)


def findings(results, scores=None):
    """The study's findings, each with whether it held on this data and the difference of the two
    rows' mean 2AFC scores; given per-triplet `scores` ({row: {subset: array}}), also the paired
    standard error of that difference over the validation triplets."""
    out = []
    for text, better, worse in FINDINGS:
        difference = _score(results, better) - _score(results, worse)
        item = {"finding": text, "held": bool(difference > 0), "difference": float(difference)}
        if scores and better in scores and worse in scores:
            item["standard_error"] = _paired_standard_error(scores[better], scores[worse])
        out.append(item)
    return out


def _paired_standard_error(a, b):
    """Standard error of the mean over subsets of the per-triplet score differences a - b (each
    subset's mean weighs 1/S, as in the "mean" column); None when a subset has fewer than 2 triplets."""
    if any(len(a[s]) < 2 for s in a):
        return None
    variances = [np.var(np.asarray(a[s]) - np.asarray(b[s]), ddof=1) / len(a[s]) for s in a]
    return float(np.sqrt(np.sum(variances)) / len(variances))


def _cell(stat, seeds):
    return f"{stat['mean']:.3f} ± {stat['spread']:.3f}" if seeds > 1 else f"{stat['mean']:.3f}"


def _data_line(results):
    if results.get("synthetic"):
        return f"Data: `{results['data']}`, {SYNTHETIC_NOTE}.\n\n"
    return f"Data: `{results['data']}`.\n\n" if "data" in results else ""


def study_markdown(results):
    subsets = results["subsets"]
    jnd = any("jnd_map" in r for r in results["rows"])
    header = ["configuration"] + subsets + ["mean"] + (["JND mAP"] if jnd else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results["rows"]:
        cells = [r["name"]] + [_cell(r["2afc"][s], r["seeds"]) for s in subsets + ["mean"]]
        if jnd:
            cells.append(_cell(r["jnd_map"], r["seeds"]) if "jnd_map" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return _data_line(results) + "2AFC score per validation subset (higher is better).\n\n" + "\n".join(lines) + "\n"


def _verdict(item):
    """"held (+0.012 ± 0.003)"; "within noise" when the difference is under 2 standard errors."""
    se = item.get("standard_error")
    verdict = "held" if item["held"] else "did NOT hold"
    if se is not None and abs(item["difference"]) < 2 * se:
        verdict += ", within noise"
    spread = f" ± {se:.3f}" if se is not None else ""
    return f"{verdict} ({item['difference']:+.3f}{spread})"


def summary_markdown(results):
    best = max((r for r in results["rows"] if r["kind"] == "trained"), key=lambda r: r["2afc"]["mean"]["mean"])
    lines = [_data_line(results).strip(), ""] if "data" in results else []
    lines += [f"Best trained configuration: {best['name']} (mean 2AFC {best['2afc']['mean']['mean']:.3f}).", ""]
    for item in results["findings"]:
        lines.append(f"- {item['finding']}: {_verdict(item)} on this data.")
    lines += [
        "",
        "In brackets: the difference of the two mean 2AFC scores and its paired standard error over the "
        "validation triplets; a difference under two standard errors is marked within noise.",
    ]
    return "\n".join(lines) + "\n"


def plot_results(results, path):
    """Bar chart of the mean 2AFC score of every row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    colours = {"trained": "tab:blue", "official": "tab:green", "baseline": "tab:gray"}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    means = [r["2afc"]["mean"]["mean"] for r in rows]
    spreads = [r["2afc"]["mean"]["spread"] for r in rows]
    ax.bar(range(len(rows)), means, yerr=spreads, color=[colours[r["kind"]] for r in rows])
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean 2AFC score")
    ax.set_ylim(max(0.0, min(means) - 0.05), min(1.0, max(means) + 0.05))
    title = "2AFC score by configuration (blue: trained, green: official, gray: baselines)"
    ax.set_title(title + ("\nsynthetic data: simulated proxy judgments, not human" if results.get("synthetic") else ""), fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_curves(out, configs, seeds, path):
    """Validation accuracy and training loss per epoch for every configuration (first seed); the
    accuracy from epoch 0, the untrained model's (run.json's "initial")."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for config in configs:
        history = out / "runs" / f"{config.name}-seed{seeds[0]}" / "history.csv"
        if not history.is_file():
            continue
        with open(history) as f:
            rows = list(csv.DictReader(f))
        epochs = [int(r["epoch"]) for r in rows]
        run_json = history.parent / "run.json"
        initial = json.loads(run_json.read_text()).get("initial") if run_json.is_file() else None
        start = [(0, initial["val_2afc"])] if initial else []
        points = start + [(e, float(r["val_2afc"])) for e, r in zip(epochs, rows)]
        line = acc.plot(*zip(*points), "o-", label=config.name)
        loss.plot(epochs, [float(r["loss"]) for r in rows], "o-", label=config.name, color=line[0].get_color())
    acc.set(xlabel="epoch (0: untrained)", ylabel="validation 2AFC score", title="accuracy")
    loss.set(xlabel="epoch", ylabel="training BCE loss", title="loss")
    acc.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path):
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    try:
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
