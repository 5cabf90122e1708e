"""The seed study's reports (`keras_lpips.study`): its results table, which of the study's
findings held (with paired standard errors over the validation triplets), markdown, and the
bar chart and training curves as PNG."""

import json
import pathlib

import numpy as np

from keras_lpips import files

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


def run_path(out, config, seed):
    """Where the study in `out` trains `config` (a `StudyConfig`) with `seed`: runs/NAME-seedS."""
    return pathlib.Path(out) / "runs" / f"{config.name}-seed{seed}"


def row_scores(configs, seeds, evaluations, official):
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


def tabulate(configs, seeds, evaluations, official):
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
    for column, label in (("l2", "L2 (Lab)"), ("ssim", "SSIM (Lab)"), ("psnr", "PSNR")):
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
    """"held (+0.012 ± 0.003)"; "within noise" when the difference is under 2 standard errors;
    "tied" when the two scores are equal (neither held nor failed: the models agree)."""
    se = item.get("standard_error")
    if item["difference"] == 0:
        verdict = "tied"
    else:
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
        "validation triplets; a difference under two standard errors is marked within noise, equal scores tied.",
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
        history = run_path(out, config, seeds[0]) / "history.csv"
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
