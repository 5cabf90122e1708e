"""What a seed study trains: its five configurations (`DEFAULT_CONFIGS`), and a study config file
(`load_config`: TOML `seeds`, `[train]` options and `[[run]]` rows), checked row by row as `fit`
checks its options, so that no wrong row fails hours into a study."""

import dataclasses
import pathlib
import re
import typing

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

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


def load_config(path):
    """Reads a study TOML: `seeds = [0, 1]`, `[train]` options, and `[[run]]` rows added to the
    five; returns {"configs", "seeds", "train"} (`path` None: the five, seed 0, fit's defaults).

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
    from keras_lpips.training.run_config import RunConfig

    if path is None:
        return {"configs": DEFAULT_CONFIGS, "seeds": (0,), "train": {}}
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
        located(f"{path}: seeds", check_seed, seed)
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
        located(where, RunConfig, ".", ".", backbone=config.backbone, distance=config.distance, layers=config.layers,
                 mode=config.mode, backbone_weights=config.backbone_weights, **train)  # fmt: skip
    return {"configs": configs, "seeds": tuple(seeds), "train": train}


def located(where, check, *args, **kwargs):
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
