"""Option types shared by every command, defined once so the vocabulary stays the same."""

import io
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

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
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def progress_bar(length, label):
    """A progress bar on stderr, so that it never mixes with results printed on stdout; shown
    on a terminal only, so that stderr stays one line for an error in logs and pipelines."""
    return typer.progressbar(length=length, label=label, file=sys.stderr if sys.stderr.isatty() else io.StringIO())
