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


def tensor2im(u):
    """The reference's round trip of an 8-bit image: ToTensor and Normalize(0.5, 0.5) in float32,
    then tensor2im's ((x + 1) / 2 * 255).astype(uint8)."""
    x = (u.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    return ((x + np.float32(1)) / np.float32(2) * np.float32(255)).astype(np.uint8)


def skimage_distances(a, b):
    """{"l2", "ssim", "psnr"} of two uint8 images as the reference's test_dataset_model.py computes them."""
    a, b = tensor2im(a), tensor2im(b)
    la, lb = skimage_color.rgb2lab(a), skimage_color.rgb2lab(b)
    return {
        "l2": 0.5 * np.mean((la / 100.0 - lb / 100.0) ** 2),
        "ssim": (1.0 - skimage_ssim(la, lb)) / 2.0,
        "psnr": -skimage_metrics.peak_signal_noise_ratio(a, b, data_range=255),
    }


def disagreeing_bapps(root, n=16, seed=0):
    """A BAPPS layout (2afc/val and jnd/val, subset "traditional", 64x64) whose distortions rank
    differently under L2, SSIM and PSNR: a colour shift (p0) against fine noise (p1), of random
    strengths, so that a column computed with the wrong distance gives other 2AFC scores."""
    from PIL import Image

    rng = np.random.default_rng(seed)

    def image(path, array):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8)).save(path)

    def smooth():
        coarse = rng.uniform(30, 225, (4, 4, 3)).astype(np.uint8)
        return np.asarray(Image.fromarray(coarse).resize((64, 64), Image.BILINEAR), np.float64)

    def shifted(ref):
        return ref + rng.integers(-25, 26, 3)

    def noisy(ref):
        return ref + rng.normal(0, rng.uniform(3, 15), ref.shape)

    val, jnd = root / "2afc" / "val" / "traditional", root / "jnd" / "val" / "traditional"
    for i in range(n):
        stem, ref = f"{i:06d}", smooth()
        image(val / "ref" / f"{stem}.png", ref)
        image(val / "p0" / f"{stem}.png", shifted(ref))
        image(val / "p1" / f"{stem}.png", noisy(ref))
        (val / "judge").mkdir(exist_ok=True)
        np.save(val / "judge" / f"{stem}.npy", np.array([rng.choice([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])]))
        image(jnd / "p0" / f"{stem}.png", ref)
        image(jnd / "p1" / f"{stem}.png", shifted(ref) if i % 2 else noisy(ref))
        (jnd / "same").mkdir(exist_ok=True)
        np.save(jnd / "same" / f"{stem}.npy", np.array([rng.integers(0, 4) / 3]))
    return root


def test_eval_baseline_columns_score_skimage_distances(tmp_path):
    """evaluate_run's l2, ssim and psnr columns: the 2AFC scores and JND mAP of skimage's distances
    on the PNG files (at their own size: no resizing), whatever the metric's input range."""
    from PIL import Image

    from keras_lpips import LPIPS
    from keras_lpips.evaluation import evaluate_run
    from keras_lpips.ranking import jnd_map

    def read(path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    root = disagreeing_bapps(tmp_path / "bapps")
    val, jnd = root / "2afc" / "val" / "traditional", root / "jnd" / "val" / "traditional"
    want, closer = {c: [] for c in ("l2", "ssim", "psnr")}, {c: [] for c in ("l2", "ssim", "psnr")}
    for stem in sorted(p.stem for p in (val / "ref").iterdir()):
        ref, p0, p1 = (read(val / kind / f"{stem}.png") for kind in ("ref", "p0", "p1"))
        judge = float(np.load(val / "judge" / f"{stem}.npy")[0])
        d0, d1 = skimage_distances(ref, p0), skimage_distances(ref, p1)
        for c in want:
            want[c].append((d0[c] < d1[c]) * (1 - judge) + (d1[c] < d0[c]) * judge + (d0[c] == d1[c]) * 0.5)
            closer[c].append(d0[c] < d1[c])
    assert closer["l2"] != closer["ssim"] != closer["psnr"] != closer["l2"]  # the data tells the columns apart
    stems = sorted(p.stem for p in (jnd / "p0").iterdir())
    same = np.array([float(np.load(jnd / "same" / f"{stem}.npy")[0]) for stem in stems])
    jnd_d = [skimage_distances(read(jnd / "p0" / f"{s}.png"), read(jnd / "p1" / f"{s}.png")) for s in stems]
    want_map = {c: jnd_map(np.array([d[c] for d in jnd_d]), same) for c in want}
    assert len(set(want_map.values())) == 3

    for input_range in ((0.0, 1.0), (-1.0, 1.0)):
        metric = LPIPS(net="alex", layers=1, backbone_weights=None, lin_weights=None, seed=0, input_range=input_range)
        results = evaluate_run(root, metric=metric, load_size=64, batch_size=6, keep_scores=True)
        for c in want:
            np.testing.assert_allclose(results["scores"]["traditional"][c], want[c], rtol=0, atol=1e-6, err_msg=c)  # float32 judges
            assert results["2afc"]["traditional"][c] == pytest.approx(np.mean(want[c]), abs=1e-6), c
            assert results["jnd"]["traditional"][c] == pytest.approx(want_map[c], abs=1e-6), c  # float32 "same"
