"""`keras-lpips weights`: fetch pretrained backbones ahead of time, list what is available."""

from typing import Annotated

import typer

from keras_lpips.cli import options

app = typer.Typer(help="Fetch and list pretrained weights.", no_args_is_help=True)


@app.command()
def fetch(net: options.Net = "alex"):
    """Download torchvision's ImageNet weights for NET into the cache (once).

      keras-lpips weights fetch --net alex
    """
    from keras_lpips.backbones import get_backbone
    from keras_lpips.cli.metric_options import fetch_with_progress
    from keras_lpips.weights.cache import cache_dir

    net = get_backbone(net).name
    state = fetch_with_progress(net)
    count = sum(v.size for v in state.values())
    typer.echo(f"{net}: {len(state)} tensors, {count:,} parameters, cached in {cache_dir()}")


@app.command("list")
def list_weights():
    """List the shipped linear weights and the cached backbones.

      keras-lpips weights list
    """
    from keras_lpips.backbones import BACKBONES
    from keras_lpips.weights import sources
    from keras_lpips.weights.cache import cache_dir

    for net in BACKBONES:
        cached = (cache_dir() / f"{net}-imagenet-features.npz").exists()
        lin = ", ".join(sources.LIN_VERSIONS)
        typer.echo(f"{net:8s} linear weights: {lin} (shipped)   imagenet backbone: {'cached' if cached else 'not cached'}")
