"""The seed study: five LPIPS configurations trained and compared on 2AFC judgments.

The study this project comes from compared, on human 2AFC judgments:
VGG16 (first 2 layers) and AlexNet (first 4 layers), each with the cosine
distance and with LPIPS + the small ranking network, and an untrained VGG16 with
the cosine distance. It found that the LPIPS models beat the cosine ones, that
VGG beat AlexNet with LPIPS while AlexNet beat VGG with cosine.

`run_study` trains and evaluates those configurations (plus rows from a TOML
config: `keras_lpips.study_config`), resumes where an earlier run stopped, and writes `results.md`,
`results.json`, `results.png` (bar chart), `curves.png` (accuracy and loss per
epoch for every configuration) and `summary.md` (which findings held, each with
its 2AFC difference and the paired standard error over the validation triplets).
"""

import json
import pathlib
import time

import numpy as np

from keras_lpips import files, reports, study_reports
from keras_lpips.errors import InputError
from keras_lpips.study_config import DEFAULT_CONFIGS, located
from keras_lpips.weights.sources import is_weight_name

QUICK = {"epochs": 1, "decay_epochs": 1, "batch_size": 8}


def run_study(data, out, configs=DEFAULT_CONFIGS, seeds=(0,), quick=False, train=None, log=print):
    """Trains (or resumes) every configuration and seed, evaluates, and writes the reports.

    Runs finished earlier are reused, and evaluations kept (eval.json), only where they were made
    with this study's settings on this data: a run folder holding a run with other settings or
    data is refused before anything trains (`InputError`), an evaluation made on other data
    computed again. So is what `fit_run` would refuse at the start of any run of the study
    (`_check_planned_runs`: options, seeds, weight files, subsets). Returns the results
    dictionary also written to `results.json`.
    """
    from keras_lpips.data.bapps import resolve_root
    from keras_lpips.training import fit_run
    from keras_lpips.training.fit import check_outside_inputs

    out = pathlib.Path(out)
    check_outside_inputs(out, data, argument="out")
    options = {**(QUICK if quick else {}), **(train or {})}
    runs = [(config, seed, study_reports.run_path(out, config, seed)) for config in configs for seed in seeds]
    records = _check_planned_runs(data, runs, options)
    _check_earlier_runs(data, runs, options, *records)
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
    results = study_reports.tabulate(configs, seeds, evaluations, official)
    results["data"] = str(data)
    results["synthetic"] = (resolve_root(data) / "SYNTHETIC_README.txt").is_file()
    results["findings"] = study_reports.findings(results, study_reports.row_scores(configs, seeds, evaluations, official))
    files.atomic_write(out / "results.json", reports.dumps(results) + "\n")
    files.atomic_write(out / "results.md", study_reports.study_markdown(results))
    files.atomic_write(out / "summary.md", study_reports.summary_markdown(results))
    study_reports.plot_results(results, out / "results.png")
    study_reports.plot_curves(out, configs, seeds, out / "curves.png")
    log(f"wrote {out / 'results.md'}, results.json, results.png, curves.png, summary.md")
    return results


def _fit_options(config, seed, options):
    """`fit_run`'s options for a configuration and seed of the study, but data, folder and resume."""
    return dict(
        backbone=config.backbone, distance=config.distance, layers=config.layers, mode=config.mode,
        backbone_weights=config.backbone_weights, seed=seed, progress=False, **options,
    )  # fmt: skip


def _check_planned_runs(data, runs, options):
    """Refuses, before anything trains, what `fit_run` would refuse at the start of a planned run:
    its options (`RunConfig`, the seed included) and backbone weight file (`_check_weight_file`),
    named by row and seed; a weight file in its run folder; and the training and validation
    triplets the options pick (every run trains on the same), named by the option that picked
    them. A run finished earlier (its model.keras there) is not trained again: its weight file
    is not read (it may be gone since). Returns those triplets' records (train, val)."""
    from keras_lpips.training.fit import check_outside_inputs
    from keras_lpips.training.run_config import RunConfig

    checked = set()
    for config, seed, run_dir in runs:
        where = f"row {config.name!r}, seed {seed}"
        planned = located(where, RunConfig, data, run_dir, **_fit_options(config, seed, options))
        weights = planned.backbone_weights
        if not is_weight_name("backbone_weights", weights) and not (run_dir / "model.keras").is_file():
            if weights not in checked:  # each file read once, for the first row naming it
                _check_weight_file(f"row {config.name!r}: backbone_weights", weights)
                checked.add(weights)
            located(where, check_outside_inputs, run_dir, data, [weights])
    train, val = (_twoafc_records(data, split, option, options) for split, option in (("train", "subsets"), ("val", "val_subsets")))
    if runs and len(train) < (planned.batch_size if planned.strategy == "tpu" else 1):  # as fit: TPUs take full batches only
        raise InputError(f"{len(train)} training triplets make no full batch of {planned.batch_size}")
    return train, val


def _check_weight_file(where, path):
    """`InputError` naming `where` unless `path` is a weight file as `fit` reads it
    (`read_weight_file`: there, readable, of a supported format, well-formed; a VGG16's 528 MB
    read in about a second)."""
    from keras_lpips.errors import WeightsError
    from keras_lpips.weights.loading import read_weight_file

    try:
        read_weight_file(path)
    except WeightsError as error:
        raise InputError(f"{where}: {error}") from None


def _twoafc_records(data, split, option, options):
    """The 2AFC records of `split` the study's `option` (subsets, val_subsets) picks, as `fit`
    lists them; an error of the option's subsets names it."""
    from keras_lpips.data.bapps import list_twoafc

    if options.get(option) is None:
        return list_twoafc(data, split)
    return located(f"[train] {option}", list_twoafc, data, split, options[option])


def _check_earlier_runs(data, runs, options, train, val):
    """Refuses (`InputError`), before anything trains, a run folder of the study holding a run
    (finished or not) that was started with other settings or on other data than this study's
    (`config_changes`, as a resumed `fit` compares them, but the mixed-precision policy that
    "auto" picks for the machine): its results are not this study's. `train`, `val`: the records
    the study trains and validates on."""
    from keras_lpips.training.run_config import RunConfig
    from keras_lpips.training.run_folder import RunFolder, config_changes

    earlier = {run_dir: RunFolder(run_dir).previous_record() for _, _, run_dir in runs}
    for config, seed, run_dir in runs:
        if not earlier[run_dir]:
            continue
        planned = RunConfig(data, run_dir, **_fit_options(config, seed, options)).record(train, val, policy=None)
        changes = config_changes(earlier[run_dir]["config"], planned, ignore=("policy",))
        if changes:
            raise InputError(
                f"{run_dir} holds a run started with other settings or data than this study's ({changes}); "
                "run the study with those, delete that folder to train it again, or choose another out="
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
