"""Classical image distances beside LPIPS, as the reference's `test_dataset_model.py` computes them.

Images go through the reference's `tensor2im` (uint8, truncated), then CIELAB as skimage's
`rgb2lab`: "l2" is `lpips.l2` in Lab, "ssim" is DSSIM (`lpips.dssim`) in Lab, "psnr" the
negated PSNR of the 8-bit RGB images (so that, like the others, smaller is closer).
"""

import numpy as np

_XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def reference_uint8(images, input_range):
    """uint8 images as the reference's `tensor2im` gives them: the 8-bit value u, normalised as its
    data loader does ((u / 255 - 0.5) / 0.5, float32), then `((x + 1) * 127.5).astype(uint8)`."""
    low, high = input_range
    u = np.round((np.asarray(images, np.float32) - low) / ((high - low) / 255.0))
    x = (u.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    return ((x + np.float32(1.0)) * np.float32(127.5)).astype(np.uint8)


def rgb2lab(images):
    """skimage.color.rgb2lab of uint8 RGB images (..., 3): sRGB -> XYZ -> CIELAB (D65, 2 degrees)."""
    rgb = np.asarray(images, np.float64) / 255.0
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _XYZ_FROM_RGB.T / _D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def _box7(x):
    """Means over every 7x7 window fully inside (N, H, W, C) -> (N, H-6, W-6, C)."""
    c = np.cumsum(np.cumsum(np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0))), axis=1), axis=2)
    return (c[:, 7:, 7:] - c[:, :-7, 7:] - c[:, 7:, :-7] + c[:, :-7, :-7]) / 49.0


def ssim(a, b, data_range):
    """Per-image SSIM of (N, H, W, C) float images, as skimage's compare_ssim(multichannel=True)
    with its defaults: 7x7 uniform windows, sample covariance, K1 0.01, K2 0.03, borders cropped,
    averaged over positions and channels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ux, uy = _box7(a), _box7(b)
    cov_norm = 49.0 / 48.0
    vx = cov_norm * (_box7(a * a) - ux * ux)
    vy = cov_norm * (_box7(b * b) - uy * uy)
    vxy = cov_norm * (_box7(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def baseline_distances(a, b, input_range):
    """{"l2", "ssim", "psnr"} distances between batches of images, as the reference's baselines:
    l2 = lpips.l2 in Lab (range 100), ssim = lpips.dssim in Lab (range 100), psnr as -PSNR of
    the 8-bit RGB images (so that smaller is closer, like the others)."""
    ua, ub = reference_uint8(a, input_range), reference_uint8(b, input_range)
    la, lb = rgb2lab(ua), rgb2lab(ub)
    l2 = 0.5 * np.mean((la / 100.0 - lb / 100.0) ** 2, axis=(1, 2, 3))
    dssim = (1.0 - ssim(la, lb, 100.0)) / 2.0
    mse = np.mean((ua.astype(np.float64) - ub.astype(np.float64)) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(255.0**2 / mse)
    return {"l2": l2, "ssim": dssim, "psnr": -psnr}

