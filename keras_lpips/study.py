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

from keras_lpips import files, reports, study_reports
from keras_lpips.argument_checks import check_seed, is_integer, is_number
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
    for seed in seeds:
        _located(f"{path}: seeds", check_seed, seed)
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
        _located(where, RunConfig, ".", ".", backbone=config.backbone, distance=config.distance, layers=config.layers,
                 mode=config.mode, backbone_weights=config.backbone_weights, **train)  # fmt: skip
    return {"configs": configs, "seeds": tuple(seeds), "train": train}


def _located(where, check, *args, **kwargs):
    """`check(*args, **kwargs)`, its `InputError` prefixed with `where` (the place it comes from)."""
    try:
        return check(*args, **kwargs)
    except InputError as error:  # its class kept: a `DataError` stays one (exit code 1)
        raise type(error)(f"{where}: {error}") from None


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
    """isinstance, but a bool is no number and an int is a float (`argument_checks`)."""
    if annotation is int:
        return is_integer(value)
    if annotation is float:
        return is_number(value)
    return isinstance(value, annotation)


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
    runs = [(config, seed, study_reports.run_folder(out, config, seed)) for config in configs for seed in seeds]
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
    them. Returns those triplets' records (train, val)."""
    from keras_lpips.training.fit import RunConfig, check_outside_inputs
    from keras_lpips.training.run_folder import NAMED_WEIGHTS

    checked = set()
    for config, seed, run_dir in runs:
        where = f"row {config.name!r}, seed {seed}"
        planned = _located(where, RunConfig, data, run_dir, **_fit_options(config, seed, options))
        weights = planned.backbone_weights
        if weights not in NAMED_WEIGHTS:
            if weights not in checked:  # each file read once, for the first row naming it
                _check_weight_file(f"row {config.name!r}: backbone_weights", weights)
                checked.add(weights)
            _located(where, check_outside_inputs, run_dir, data, [weights])
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
    return _located(f"[train] {option}", list_twoafc, data, split, options[option])


def _check_earlier_runs(data, runs, options, train, val):
    """Refuses (`InputError`), before anything trains, a run folder of the study holding a run
    (finished or not) that was started with other settings or on other data than this study's
    (`config_changes`, as a resumed `fit` compares them, but the mixed-precision policy that
    "auto" picks for the machine): its results are not this study's. `train`, `val`: the records
    the study trains and validates on."""
    from keras_lpips.training.fit import RunConfig
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
