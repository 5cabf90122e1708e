"""Builds the metric a command asked for, from the shared options, and reads its images."""

from keras_lpips.cli.options import progress_bar
from keras_lpips.errors import InputError


def fetch_with_progress(net):
    """Makes sure torchvision's ImageNet weights for `net` are cached, with a progress bar
    while downloading; returns the state dict."""
    from keras_lpips.weights.pretrained import imagenet_state_dict

    with progress_bar(1, f"fetching {net} ImageNet weights") as bar:

        def progress(done, total):
            if total and bar.length != total:
                bar.length = total
            bar.update(done - bar.pos)

        return imagenet_state_dict(net, progress=progress)


def load_model_option(model, input_range=(0.0, 1.0)):
    """The metric `--model` names: a fit run folder (its model.keras), a .keras file, or a
    SavedModel from export (its base folder, then the highest version, or a version folder)."""
    from keras_lpips.export import load_savedmodel, savedmodel_directory
    from keras_lpips.training import load_metric

    if not model.exists():
        raise InputError(f"--model {model} does not exist")
    if model.is_file() and model.suffix != ".keras":
        raise InputError(f"--model takes a fit run folder, a .keras file or a SavedModel folder. Received the file {model}")
    if savedmodel_directory(model) is not None:
        return load_savedmodel(model)
    if model.is_dir() and not (model / "model.keras").is_file():
        raise InputError(
            f"--model {model} is a folder with neither model.keras (a fit run) nor saved_model.pb "
            "(an export, directly or in a version folder such as 1/)"
        )
    metric = load_metric(model)
    if metric.input_range != tuple(input_range):
        raise InputError(f"{model} expects input_range={metric.input_range}; the CLI feeds {tuple(input_range)}")
    return metric


def build_metric(net, version, distance, layers, lin_weights, backbone_weights, model, input_range=(0.0, 1.0)):
    """The metric from `--model` (see `load_model_option`), else an `LPIPS` from the net options,
    for [0, 1] images."""
    from keras_lpips import LPIPS
    from keras_lpips.backbones import get_backbone
    from keras_lpips.weights.cache import cache_dir

    if model is not None:
        return load_model_option(model, input_range)
    spec = get_backbone(net)
    if backbone_weights == "imagenet" and not (cache_dir() / f"{spec.name}-imagenet-features.npz").exists():
        fetch_with_progress(spec.name)
    backbone = None if backbone_weights == "random" else backbone_weights
    lin = None if lin_weights in (None, "none") else lin_weights
    return LPIPS(
        net=net, version=version, distance=distance, layers=layers,
        backbone_weights=backbone, lin_weights=lin, input_range=input_range,
    )  # fmt: skip


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
