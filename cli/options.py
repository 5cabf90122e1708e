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
from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lpips.errors import InputError
from keras_lpips.presets import PRESETS
from keras_lpips.resolve import MetricSpec

Net = Annotated[str, typer.Option("--net", help="Backbone: alex, vgg or squeeze (aliases alexnet, vgg16, squeezenet).")]
Version = Annotated[str, typer.Option("--version", help="LPIPS version: 0.1 (scaled input) or 0.0.")]
Distance = Annotated[str, typer.Option("--distance", help="lpips (learned weights) or cosine (unweighted baseline).")]
Layers = Annotated[Optional[int], typer.Option("--layers", help="Keep only the first N tapped layers.")]
LinWeights = Annotated[
    Optional[str], typer.Option("--lin-weights", help="v0.1, v0.0, or a .pth/.npz of linear weights (e.g. from fit).")
]
BackboneWeights = Annotated[
    str, typer.Option("--backbone-weights", help="imagenet, keras-imagenet (vgg), random, or a .pth/.npz state dict.")
]
Model = Annotated[
    Optional[Path],
    typer.Option(
        "--model",
        help="A run folder from fit, a .keras file, or a SavedModel from export (its base or version folder); "
        "overrides --net, --version, --distance, --layers and the weights.",
    ),
]
Preset = Annotated[
    Optional[str],
    typer.Option(
        "--preset",
        help=f"An official configuration: {', '.join(PRESETS)}; overrides --net, --version, --distance, --layers and the weights.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

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
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name == name:
            parameters += [
                inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, annotation=option, default=defaults[field])
                for field, option in METRIC_OPTIONS.items()
            ]
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def with_metric_spec(**values):
        spec = MetricSpec(**{field: values.pop(field) for field in METRIC_OPTIONS})
        return command(**values, **{name: spec})

    with_metric_spec.__signature__ = signature.replace(parameters=parameters)
    with_metric_spec.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_metric_spec


def resolve(spec):
    """The metric `spec` describes (`keras_lpips.resolve.resolve_metric`), for [0, 1] images,
    with a progress bar while a first use downloads its backbone's ImageNet weights."""
    from keras_lpips.resolve import resolve_metric

    with download_progress(f"fetching {spec.net} ImageNet weights") as progress:
        return resolve_metric(spec, input_range=(0.0, 1.0), fetch_progress=progress)


def progress_bar(length, label):
    """A progress bar on stderr, so that it never mixes with results printed on stdout; shown
    on a terminal only, so that stderr stays one line for an error in logs and pipelines."""
    return typer.progressbar(length=length, label=label, file=sys.stderr if sys.stderr.isatty() else io.StringIO())


def byte_progress(bar):
    """A `progress(done, total)` callback driving `bar` (its length becomes `total` once known)."""

    def progress(done, total):
        if total and bar.length != total:
            bar.length = total
        bar.update(done - bar.pos)

    return progress


@contextlib.contextmanager
def download_progress(label):
    """A `progress(done, total)` callback for a download that may not happen: its bar appears
    on the first call only."""
    with contextlib.ExitStack() as stack:
        callbacks = []

        def progress(done, total):
            if not callbacks:
                callbacks.append(byte_progress(stack.enter_context(progress_bar(1, label))))
            callbacks[0](done, total)

        yield progress


def read_same_size(paths, resize):
    """Reads images as [0, 1] RGB; all must match the first one's size unless `resize`."""
    from keras_lpips.images import read_image, resize_image

    images = [read_image(p) for p in paths]
    first = images[0].shape
    for path, image in zip(paths[1:], images[1:]):
        if image.shape != first and not resize:
            raise InputError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is {first[1]}x{first[0]}; "
                "pass --resize to resize it"
            )
    return [images[0]] + [resize_image(im, *first[:2]) if im.shape != first else im for im in images[1:]]
