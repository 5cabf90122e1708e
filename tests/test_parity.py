"""Parity with the reference `lpips` 0.1.4, from golden fixtures made by
data_tools/make_parity_fixtures.py (torch is not needed here).

Backbones carry seeded random weights that the test regenerates from the
shapes and seed stored in the fixture; linear weights are the shipped official
ones. Distances, per-layer values and spatial maps must agree within 1e-5; the
bilinear weights that upsample the maps, sampled at large sizes, bit for bit.
"""

import json
import pathlib

import numpy as np
import pytest

from data_tools.seeded_weights import seeded_state_dict
from keras_lpips import LPIPS
from keras_lpips.layers import bilinear_resize

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "reference_parity.npz"
UPSAMPLE_FIXTURE = FIXTURE.with_name("reference_upsample.npz")
ATOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE) as data:
        return {k: data[k] for k in data.files}


def seeded_backbone_file(reference, net, directory):
    shapes = dict(json.loads(str(reference[f"{net}/shapes"])))
    path = directory / f"{net}-seeded.npz"
    np.savez(path, **seeded_state_dict(shapes, int(reference[f"{net}/seed"])))
    return str(path)


# The fast tier checks every backbone with the default (lpips, v0.1) and alex with every version and
# distance; the full suite the whole grid.
GRID = [
    pytest.param(net, version, distance, id=f"{distance}-{version}-{net}",
                 marks=() if net == "alex" or (version, distance) == ("0.1", "lpips") else pytest.mark.slow)
    for distance in ("lpips", "cosine") for version in ("0.1", "0.0") for net in ("alex", "vgg", "squeeze")
]  # fmt: skip


@pytest.mark.parametrize("net,version,distance", GRID)
def test_matches_reference(reference, tmp_path, net, version, distance):
    metric = LPIPS(
        net=net, version=version, distance=distance,
        backbone_weights=seeded_backbone_file(reference, net, tmp_path), lin_weights=f"v{version}",
    )  # fmt: skip
    for size in ("64", "odd"):
        pair = [reference[f"x{size}_0"], reference[f"x{size}_1"]]
        key = f"{net}/v{version}/{distance}/{size}"
        np.testing.assert_allclose(np.asarray(metric(pair)), reference[f"{key}/distance"], rtol=0, atol=ATOL)
        np.testing.assert_allclose(np.asarray(metric.per_layer(pair)), reference[f"{key}/per_layer"], rtol=0, atol=ATOL)
        np.testing.assert_allclose(np.asarray(metric.spatial_map(pair)), reference[f"{key}/map"], rtol=0, atol=ATOL)


def test_upsampling_weights_are_torchs_bit_for_bit():
    """Sampled rows of F.interpolate's own weights, upsampling layer maps to 1080, 1920 and 2160:
    its rounded float32 scale moves them up to 9e-5 from the exact fractions."""
    with np.load(UPSAMPLE_FIXTURE) as data:
        reference = {k: data[k] for k in data.files}
    sizes = sorted({key.split("/")[0] for key in reference if "/" in key})
    assert len(sizes) == 3, sizes
    for size in sizes:
        n_in, n_out = map(int, size.split("x"))
        index, lower = reference[f"{size}/index"].astype(int), reference[f"{size}/lower"].astype(int)
        weights = reference[f"{size}/weights"]
        expected = np.zeros((len(index), n_in), np.float32)
        rows = np.arange(len(index))
        expected[rows, lower] = weights[:, 0]
        inner = lower < n_in - 1  # at the last input both weights fall on it, recorded as one
        expected[rows[inner], lower[inner] + 1] = weights[inner, 1]
        impulses = np.eye(n_in, dtype=np.float32)[:, None, :]  # the resize of impulse j is column j
        got = np.asarray(bilinear_resize(impulses, 1, n_out))[:, 0, :].T[index]
        np.testing.assert_array_equal(got, expected, f"{size} (reference: torch {reference['torch']})")
