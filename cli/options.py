"""What the commands share, declared once: the option types, the metric options (one
`keras_lpips.resolve.MetricSpec` per command, through `@metric_options`), progress bars and
the reading of a command's images.

Light at import time (Typer and the option tables only), so that `--help` stays instant."""

import contextlib
import dataclasses
import functools
import inspect
import io
import sys
import time
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from keras_lpips.presets import NET_ALIASES, PRESETS
from keras_lpips.resolve import MetricSpec

# Choices are `Literal`s: Typer checks them while parsing and lists them in --help, and the
# commands receive plain strings.
NetName = Literal[tuple(NET_ALIASES)]
Net = Annotated[NetName, typer.Option("--net", case_sensitive=False, help="Backbone (alexnet, vgg16, squeezenet: aliases).")]
# --lpips-version, as `--version` is the program's version (`keras-lpips --version`); the old
# spelling stays accepted on the commands.
Version = Annotated[
    Literal["0.1", "0.0"], typer.Option("--lpips-version", "--version", help="LPIPS version: 0.1 (scaled input) or 0.0.")
]
Distance = Annotated[
    Literal["lpips", "cosine"], typer.Option("--distance", help="lpips (learned weights) or cosine (unweighted baseline).")
]
Layers = Annotated[Optional[int], typer.Option("--layers", help="Keep only the first N tapped layers.")]
LinWeights = Annotated[
    Optional[str], typer.Option(
        "--lin-weights",
        help="official (those of --lpips-version), v0.1, v0.0, random/none (all ones), or a .pth/.npz/.safetensors "
        "of linear weights (e.g. from fit).",
    ),
]
BackboneWeights = Annotated[
    str, typer.Option("--backbone-weights", help="imagenet, keras-imagenet (vgg), random/none (untrained), or a .pth/.npz/.safetensors state dict.")
]
Model = Annotated[
    Optional[Path],
    typer.Option(
        "--model",
        help="A run folder from fit, a .keras file, or a SavedModel from export (its base or version folder); "
        "overrides --net, --lpips-version, --distance, --layers and the weights.",
    ),
]
Preset = Annotated[
    Optional[Literal[tuple(PRESETS)]],
    typer.Option(
        "--preset",
        help="An official configuration; overrides --net, --lpips-version, --distance, --layers and the weights.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace the output if it exists (never one of the command's inputs).")
]
Frame = Annotated[
    Optional[int],
    typer.Option(
        "--frame",
        min=0,
        help="Read frame N (0 is the first) of multi-frame images (animated GIF/PNG/WebP, multi-page TIFF), "
        "which are refused without it; single-frame images are read as they are.",
    ),
]

# The metric options, in the order --help lists them: MetricSpec's field -> its option.
# Their defaults are MetricSpec's.
METRIC_OPTIONS = {
    "net": Net,
    "version": Version,
    "distance": Distance,
    "layers": Layers,
    "lin_weights": LinWeights,
    "backbone_weights": BackboneWeights,
    "model": Model,
    "preset": Preset,
}


def metric_options(command):
    """Gives `command` the metric options (--net ... --model, --preset) where it declares its one
    `MetricSpec` parameter, and passes them to it packed into that `MetricSpec`.

        @metric_options
        def score(ref: ..., metric: MetricSpec, resize: ... = False): ...

    Typer reads a command's options from its signature: the wrapper's `__signature__` is the
    command's with the `MetricSpec` parameter replaced by the eight options (all keyword-only:
    Typer passes every value by name)."""
    signature = inspect.signature(command, eval_str=True)
    (name,) = [p.name for p in signature.parameters.values() if p.annotation is MetricSpec]
    defaults = {field.name: field.default for field in dataclasses.fields(MetricSpec)}
    clash = set(METRIC_OPTIONS) & set(signature.parameters)
    if clash:
        raise TypeError(f"{command.__name__} has parameters named as metric options: {sorted(clash)}")
    # Typer passes the click context to a parameter annotated typer.Context: it says which options were given.
    parameters = [inspect.Parameter("metric_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    for parameter in signature.parameters.values():
        if parameter.name == name:
            parameters += [
                inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, annotation=option, default=defaults[field])
                for field, option in METRIC_OPTIONS.items()
            ]
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def with_metric_spec(metric_context, **values):
        given = [f for f in METRIC_OPTIONS if getattr(metric_context.get_parameter_source(f), "name", None) == "COMMANDLINE"]
        spec = MetricSpec(**{field: values.pop(field) for field in METRIC_OPTIONS}, given=given)
        return command(**values, **{name: spec})

    with_metric_spec.__signature__ = signature.replace(parameters=parameters)
    with_metric_spec.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_metric_spec


def resolve(spec, sizes=None):
    """The metric `spec` describes (`keras_lpips.resolve.resolve_metric`), for [0, 1] images;
    given the (height, width) `sizes` of images to score, the one that scores them
    (`keras_lpips.resolve.scoring_metric`). A progress bar follows a first download of the
    backbone's ImageNet weights, and a first LiteRT conversion is announced."""
    from keras_lpips.resolve import resolve_metric, scoring_metric

    with progress_on_first_call(f"fetching {spec.net} ImageNet weights", transfer=True) as progress:
        if sizes is None:
            return resolve_metric(spec, input_range=(0.0, 1.0), fetch_progress=progress)
        return scoring_metric(spec, sizes, report=lambda line: typer.echo(line, err=True), fetch_progress=progress)


def progress_bar(length, label, item_show_func=None):
    """A progress bar on stderr, so that it never mixes with results printed on stdout; shown
    on a terminal only, so that stderr stays one line for an error in logs and pipelines.
    `item_show_func(bar.current_item)`: text shown after the bar (see `transfer_progress`)."""
    stream = sys.stderr if sys.stderr.isatty() else io.StringIO()
    return typer.progressbar(length=length, label=label, item_show_func=item_show_func, file=stream)


def count_progress(bar):
    """A `progress(done, total)` callback driving `bar` (its length becomes `total` once known)."""

    def progress(done, total):
        if total and bar.length != total:
            bar.length = total
        bar.update(done - bar.pos)

    return progress


def one_line(text):
    """`text` (a message, a file's name) with its control characters written as escapes (a
    newline in a file name as \\n), so that what a command prints for one item stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def shown(text):
    """`progress_bar`'s `item_show_func` for bars updated with their text (None: nothing yet)."""
    return text


def transfer_status(done, total, seconds, start=0):
    """"12.5/233.1 MB, 8.4 MB/s": the bytes `done` (of `total`, where known), and the speed of
    those after `start` over `seconds` (none before any time has passed)."""
    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
    return f"{size}, {(done - start) / seconds / 1e6:.1f} MB/s" if seconds > 0 else size


def transfer_progress(bar):
    """A `progress(done, total)` callback for a download, driving `bar` as `count_progress` does
    and showing `transfer_status` beside it (a bar made with `item_show_func=shown`). The speed
    counts from the first call (a resumed download's earlier bytes do not count)."""
    first = []

    def progress(done, total):
        now = time.monotonic()
        if not first:
            first.append((now, done))
        began, start = first[0]
        if total and bar.length != total:
            bar.length = total
        bar.current_item = transfer_status(done, total, now - began, start)  # what `shown` shows
        bar.update(done - bar.pos)

    return progress


@contextlib.contextmanager
def progress_on_first_call(label, transfer=False):
    """A `progress(done, total)` callback for work that may not happen (a download, images to
    embed): its bar appears on the first call only, counting `done` of `total` (`count_progress`),
    or with `transfer` the bytes with their size and speed (`transfer_progress`)."""
    with contextlib.ExitStack() as stack:
        callbacks = []

        def progress(done, total):
            if not callbacks:
                bar = stack.enter_context(progress_bar(total or 1, label, item_show_func=shown if transfer else None))
                callbacks.append(transfer_progress(bar) if transfer else count_progress(bar))
            callbacks[0](done, total)

        yield progress
