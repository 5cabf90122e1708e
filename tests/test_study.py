"""`keras-lpips study --quick` end to end on a tiny BAPPS layout, offline.

The isolated weight cache (conftest.py) is seeded with fake "imagenet" backbones: seeded random
arrays in the cache's own format (`<net>-imagenet-features.npz` plus its `.sha256` sidecar), so
the pretrained configurations and the official rows load without a download.
"""

import json

import numpy as np
import pytest
from PIL import Image

from tests.bapps_fixture import make_tiny_bapps

CONFIGS = ("vgg16-2L-cosine", "vgg16-2L-lpips", "alexnet-4L-cosine", "alexnet-4L-lpips", "vgg16-untrained-cosine")
OUTPUTS = ("results.md", "results.json", "results.png", "curves.png", "summary.md")


def seed_fake_imagenet_cache(nets=("alex", "vgg"), seed=0):
    """Writes seeded He-scaled random conv weights, in torchvision's layout and key names, into the
    weight cache as `keras_lpips.weights.pretrained` writes converted downloads."""
    from keras_lpips import LPIPS
    from keras_lpips.weights.cache import cache_dir
    from keras_lpips.weights.pretrained import _write_cached

    rng = np.random.default_rng(seed)
    for net in nets:
        model = LPIPS(net=net, backbone_weights=None, lin_weights=None, seed=seed)
        state = {}
        for layer_name, key in model.spec.torchvision_names.items():
            kernel = model.backbone.get_layer(layer_name).kernel  # (kh, kw, in, out)
            kh, kw, fan_in, out = kernel.shape
            scale = np.sqrt(2.0 / (kh * kw * fan_in))
            state[f"{key}.weight"] = (rng.standard_normal((out, fan_in, kh, kw)) * scale).astype(np.float32)
            state[f"{key}.bias"] = (rng.standard_normal(out) * 0.01).astype(np.float32)
        _write_cached(cache_dir() / f"{net}-imagenet-features.npz", state)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """Runs the quick study once (module-scoped), with a weight cache of its own."""
    from typer.testing import CliRunner

    from keras_lpips.cli.app import app

    keras_home = tmp_path_factory.mktemp("study_keras_home")
    data = make_tiny_bapps(tmp_path_factory.mktemp("bapps"), n_train=8, n_val=6, n_jnd=4)
    out = tmp_path_factory.mktemp("study") / "out"

    def study():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KERAS_HOME", str(keras_home))
            patch.setenv("KERAS_LPIPS_OFFLINE", "1")
            result = CliRunner().invoke(app, ["study", "--data", str(data), "--out", str(out), "--quick"])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(keras_home))
        seed_fake_imagenet_cache()
    return {"data": data, "out": out, "first": study(), "study": study}


def test_fake_cache_is_read_as_the_imagenet_backbone():
    from keras_lpips import LPIPS
    from keras_lpips.weights.cache import cache_dir

    seed_fake_imagenet_cache(nets=("alex",))
    assert (cache_dir() / "alex-imagenet-features.npz.sha256").is_file()
    with np.load(cache_dir() / "alex-imagenet-features.npz") as fake:
        expected = fake["features.3.weight"].transpose(2, 3, 1, 0)  # torch OIHW -> Keras HWIO
    metric = LPIPS(net="alex", backbone_weights="imagenet")
    np.testing.assert_array_equal(np.asarray(metric.backbone.get_layer("conv2").kernel), expected)


def test_quick_study_writes_every_output(study_run):
    out = study_run["out"]
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("results.png", "curves.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200

    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert set(CONFIGS) <= set(rows)
    assert {"official LPIPS alex v0.1", "official LPIPS vgg v0.1", "L2 (Lab)", "SSIM", "PSNR"} <= set(rows)
    assert [r["kind"] for r in results["rows"]] == ["trained"] * 5 + ["official"] * 2 + ["baseline"] * 3
    assert results["subsets"] == ["traditional"] and results["synthetic"] is False
    for row in results["rows"]:
        assert 0.0 <= row["2afc"]["mean"]["mean"] <= 1.0, row
        assert 0.0 <= row["jnd_map"]["mean"] <= 1.0, row
    assert len(results["findings"]) == 5
    for item in results["findings"]:
        assert isinstance(item["held"], bool) and np.isfinite(item["difference"])
        assert item["standard_error"] is not None and item["standard_error"] >= 0.0

    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in rows)
    summary = (out / "summary.md").read_text()
    for needle in ("LPIPS beats cosine", "with LPIPS, VGG16 beats AlexNet", "with cosine, AlexNet beats VGG16"):
        assert needle in summary
    assert summary.count(" on this data.") == 5
    assert "Best trained configuration" in study_run["first"]  # the command prints the summary


def test_each_run_trained_its_configuration(study_run):
    out = study_run["out"]
    for name in CONFIGS:
        run_dir = out / "runs" / f"{name}-seed0"
        for file in ("model.keras", "trainer.keras", "run.json", "history.csv", "eval.json", "val_distances.npz"):
            assert (run_dir / file).is_file(), (name, file)
        run = json.loads((run_dir / "run.json").read_text())
        assert run["epochs_done"] == 2 and run["config"]["batch_size"] == 8
        assert run["config"]["backbone_weights"] == ("random" if "untrained" in name else "imagenet")
        assert (run_dir / "lin_weights.npz").is_file() == name.endswith("-lpips")
    for net in ("alex", "vgg"):
        assert (out / "official" / net / "eval.json").is_file()


def test_rerun_skips_finished_and_resumes_an_unfinished_configuration(study_run):
    out = study_run["out"]
    before = json.loads((out / "results.json").read_text())
    stamps = {name: (out / "runs" / f"{name}-seed0" / "model.keras").stat().st_mtime_ns for name in CONFIGS}

    again = study_run["study"]()
    assert again.count("finished earlier, skipped") == 5
    assert json.loads((out / "results.json").read_text())["rows"] == before["rows"]
    assert all((out / "runs" / f"{n}-seed0" / "model.keras").stat().st_mtime_ns == stamps[n] for n in CONFIGS)

    # A configuration whose model was never written (an interrupted run) resumes from its checkpoint.
    unfinished = out / "runs" / "alexnet-4L-lpips-seed0"
    for name in ("model.keras", "trainer.keras", "eval.json"):
        (unfinished / name).unlink()
    resumed = study_run["study"]()
    assert "alexnet-4L-lpips seed 0: resuming" in resumed and resumed.count("finished earlier, skipped") == 4
    assert (unfinished / "model.keras").is_file() and (unfinished / "eval.json").is_file()
    history = (unfinished / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2"]  # no epoch trained twice
    after = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for row in before["rows"]:
        assert after[row["name"]]["2afc"]["mean"]["mean"] == pytest.approx(row["2afc"]["mean"]["mean"], abs=1e-6)
