"""`keras-lpips weights`: fetch pretrained backbones ahead of time, list what is available."""

from pathlib import Path
from typing import Annotated

import typer
from keras_lpips.cli import options
from keras_lpips.presets import canonical_net
from keras_lpips.reports import dumps

app = typer.Typer(help="Fetch, list and convert weights.", no_args_is_help=True)


@app.command()
def fetch(net: options.Net = "alex", as_json: options.Json = False):
    """Download torchvision's ImageNet weights for NET into the cache (once).

      keras-lpips weights fetch --net alex
      keras-lpips weights fetch --net vgg --json
    """
    from keras_lpips.weights.cache_folder import imagenet_cache_path
    from keras_lpips.weights.pretrained import imagenet_state_dict

    net = canonical_net(net)
    with options.progress_on_first_call(f"fetching {net} ImageNet weights", transfer=True) as progress:
        state = imagenet_state_dict(net, progress=progress)
    report = {"net": net, "tensors": len(state), "parameters": int(sum(v.size for v in state.values()))}
    report["cache"] = str(imagenet_cache_path(net))
    if as_json:
        typer.echo(dumps(report))
        return
    typer.echo(f"{net}: {report['tensors']} tensors, {report['parameters']:,} parameters, cached in {imagenet_cache_path(net).parent}")


@app.command("list")
def list_weights(as_json: options.Json = False):
    """List the shipped linear weights and the cached backbones (without importing Keras).

      keras-lpips weights list
      keras-lpips weights list --json
    """
    from keras_lpips.weights import sources
    from keras_lpips.weights.cache_folder import imagenet_cache_path

    nets = {
        net: {"linear_weights": list(sources.LIN_VERSIONS), "imagenet_backbone_cached": imagenet_cache_path(net).exists()}
        for net in sources.TORCHVISION_FILES  # the backbones, named without building one
    }
    if as_json:
        typer.echo(dumps(nets))
        return
    for net, entry in nets.items():
        lin = ", ".join(entry["linear_weights"])
        cached = "cached" if entry["imagenet_backbone_cached"] else "not cached"
        typer.echo(f"{net:8s} linear weights: {lin} (shipped)   imagenet backbone: {cached}")


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="A .pth (read without torch), .npz or .safetensors: lpips linear weights or a torchvision backbone.")],
    destination: Annotated[Path, typer.Argument(help="The .npz or .safetensors to write.")],
    net: options.Net = "alex",
    overwrite: options.Overwrite = False,
    as_json: options.Json = False,
):
    """Convert linear weights or a backbone state dict to a .npz or .safetensors, checked against NET.

    Linear weights (lin0.model.1.weight, ... as lpips saves them) become lin0, lin1, ...;
    a torchvision state dict keeps features.* (classifier.* dropped). Use the result
    with --lin-weights or --backbone-weights.

      keras-lpips weights convert my_lin.pth my_lin.npz --net alex
      keras-lpips weights convert alexnet-owt-7be5be79.pth alex.npz --net alex
      keras-lpips weights convert my_lin.pth my_lin.safetensors --net alex
      keras-lpips score a.png b.png --lin-weights my_lin.npz
      keras-lpips weights convert my_lin.pth my_lin.npz --json
    """
    from keras_lpips.weights.rewrite import check_conversion, convert_weight_file

    check_conversion(source, destination, overwrite, names=("SOURCE", "DESTINATION"))  # before Keras is imported
    kind, count = convert_weight_file(source, destination, net, overwrite=overwrite)
    net = canonical_net(net)
    if as_json:
        report = {"kind": kind, "net": net, "source": str(source), "destination": str(destination)}
        typer.echo(dumps({**report, "parameters": count, "bytes": destination.stat().st_size}))
        return
    typer.echo(f"{kind} weights for {net}: {count:,} parameters written to {destination}")
