"""The classical baselines (Lab L2, SSIM, PSNR) against scikit-image, which the reference's
`test_dataset_model.py` calls (`skimage.color.rgb2lab`, `compare_ssim(multichannel=True)`)."""

import numpy as np
import pytest

skimage_color = pytest.importorskip("skimage.color")
skimage_metrics = pytest.importorskip("skimage.metrics")

from keras_lpips.baselines import baseline_distances, reference_uint8, rgb2lab, ssim  # noqa: E402


def uint8_images(seed, n=3, height=23, width=29):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    images[0, :3, :3] = [[0, 0, 0], [255, 255, 255], [10, 10, 10]]  # black, white, the sRGB linear toe
    return images


def test_rgb2lab_matches_skimage():
    images = uint8_images(0)
    np.testing.assert_allclose(rgb2lab(images), skimage_color.rgb2lab(images), rtol=0, atol=1e-6)
    every_value = np.stack(np.meshgrid(*[np.arange(0, 256, 5, dtype=np.uint8)] * 3), -1).reshape(1, -1, 3)
    np.testing.assert_allclose(rgb2lab(every_value), skimage_color.rgb2lab(every_value), rtol=0, atol=1e-6)


def skimage_ssim(a, b):
    """skimage's SSIM with the settings of the old compare_ssim(multichannel=True) defaults the
    project's `ssim` documents: 7x7 uniform window, sample covariance, K1 0.01, K2 0.03."""
    return skimage_metrics.structural_similarity(
        a, b, channel_axis=-1, data_range=100, gaussian_weights=False, win_size=7, use_sample_covariance=True, K1=0.01, K2=0.03
    )  # fmt: skip


def test_ssim_matches_skimage_on_lab_images():
    a, b = rgb2lab(uint8_images(1)), rgb2lab(uint8_images(2))
    b[1] = a[1] + np.random.default_rng(3).normal(0, 2, a[1].shape)  # a close pair as well as unrelated ones
    want = [skimage_ssim(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(ssim(a, b, 100.0), want, rtol=0, atol=1e-6)
    assert ssim(a[:1], a[:1], 100.0)[0] == pytest.approx(1.0, abs=1e-12)
    # skimage's defaults are these settings: the project's docstring names the defaults.
    np.testing.assert_allclose(
        [skimage_metrics.structural_similarity(x, y, channel_axis=-1, data_range=100) for x, y in zip(a, b)], want, rtol=0, atol=1e-12
    )  # fmt: skip


@pytest.mark.parametrize("input_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
def test_baseline_distances_match_skimage(input_range):
    low, high = input_range
    ua, ub = uint8_images(4), uint8_images(5)
    ub[2] = np.clip(ua[2].astype(int) + np.random.default_rng(6).integers(-8, 9, ua[2].shape), 0, 255)
    a, b = (u.astype(np.float32) / np.float32(255.0) * np.float32(high - low) + np.float32(low) for u in (ua, ub))
    got = baseline_distances(a, b, input_range)

    # The reference scores tensor2im's uint8 images (float32 arithmetic, truncated): within one
    # level of the 8-bit values the images were made from.
    ra, rb = reference_uint8(a, input_range), reference_uint8(b, input_range)
    assert np.abs(ra.astype(int) - ua).max() <= 1 and np.abs(rb.astype(int) - ub).max() <= 1
    la, lb = skimage_color.rgb2lab(ra), skimage_color.rgb2lab(rb)
    l2 = [0.5 * np.mean((x / 100.0 - y / 100.0) ** 2) for x, y in zip(la, lb)]
    np.testing.assert_allclose(got["l2"], l2, rtol=0, atol=1e-6)
    dssim = [(1.0 - skimage_ssim(x, y)) / 2.0 for x, y in zip(la, lb)]
    np.testing.assert_allclose(got["ssim"], dssim, rtol=0, atol=1e-6)
    psnr = [skimage_metrics.peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(ra, rb)]
    np.testing.assert_allclose(got["psnr"], np.negative(psnr), rtol=0, atol=1e-6)
    assert got["l2"][2] < min(got["l2"][:2]) and got["ssim"][2] < min(got["ssim"][:2])  # the close pair is closest
