"""`keras_lpips.litert_metric` and `keras-lpips score` on it: the same numbers as the Keras
metric, a cached conversion verified before use, and no TensorFlow or Keras imported once warm."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_lpips.errors import InputError
from keras_lpips.litert_metric import cached_paths, litert_metric, official_config
from keras_lpips.resolve import MetricSpec
from keras_lpips.weights import sources
from tests.conftest import REAL_PINS
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
TRIPLET = ("examples/ref.png", "examples/p0.png", "examples/p1.png")


@pytest.fixture(scope="module")
def converted_home(fake_imagenet_home, tmp_path_factory):
    """A copy of `fake_imagenet_home` where `keras-lpips score` has converted alex v0.1 (its
    first run's result as `converted_home.first_run`). Copy it before changing it."""
    home = tmp_path_factory.mktemp("litert_home") / "home"
    shutil.copytree(fake_imagenet_home, home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        first_run = run_cli("score", *TRIPLET)
    return home, first_run


@pytest.mark.parametrize(
    "options",
    [
        {},
        pytest.param({"layers": 3}, marks=pytest.mark.slow),
        pytest.param({"distance": "cosine"}, marks=pytest.mark.slow),
        pytest.param({"version": "0.0", "lin_weights": "v0.0"}, marks=pytest.mark.slow),
    ],
)
def test_distances_and_maps_equal_the_keras_metric(converted_home, monkeypatch, options):
    from keras_lpips import LPIPS

    monkeypatch.setenv("KERAS_HOME", str(converted_home[0]))
    spec = MetricSpec(net="alex", **options)
    served = litert_metric(spec)
    assert served is not None and (served.net, served.input_range) == ("alex", (0.0, 1.0))
    keras_metric = LPIPS(**official_config(spec), input_range=(0.0, 1.0))
    rng = np.random.default_rng(0)
    pair = [rng.random((2, 48, 40, 3), dtype=np.float32) for _ in range(2)]
    np.testing.assert_allclose(served(pair), np.asarray(keras_metric(pair)), atol=1e-5)
    np.testing.assert_allclose(served.spatial_map(pair), np.asarray(keras_metric.spatial_map(pair)), atol=1e-5)
    with pytest.raises(InputError, match=r"img1 has values in \[.*\]; this model takes images in \[0, 1\] only"):
        served([pair[0], pair[1] * 255])


def test_only_official_configurations(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "mine.npz").write_bytes(b"")  # a spec's files must exist, not be read
    assert official_config(MetricSpec(net="squeeze")) is None  # no pinned features digest
    assert official_config(MetricSpec(model=str(tmp_path / "run"))) is None
    assert official_config(MetricSpec(lin_weights=str(tmp_path / "mine.npz"))) is None
    assert official_config(MetricSpec(backbone_weights="random")) is None
    assert official_config(MetricSpec(net="vgg16", preset=None))["net"] == "vgg"


def test_score_is_the_same_with_and_without_litert(converted_home, monkeypatch):
    home, first_run = converted_home
    assert first_run.returncode == 0, first_run.stderr
    assert first_run.stderr.startswith("preparing the LiteRT scorer for alex v0.1 once (about 20 s) ...\nprepared in "), first_run.stderr
    monkeypatch.setenv("KERAS_HOME", str(home))
    warm = run_cli("score", *TRIPLET)
    assert (warm.returncode, warm.stderr) == (0, "")
    keras_run = run_cli("score", *TRIPLET, env={"KERAS_LPIPS_NO_LITERT": "1"})
    assert keras_run.returncode == 0, keras_run.stderr
    assert warm.stdout == keras_run.stdout == first_run.stdout
    as_json = [json.loads(run_cli("score", *TRIPLET, "--json", env=env).stdout) for env in ({}, {"KERAS_LPIPS_NO_LITERT": "1"})]
    for served, keras_pair in zip(as_json[0]["pairs"], as_json[1]["pairs"]):
        assert served["distance"] == pytest.approx(keras_pair["distance"], abs=1e-5)


def test_a_tampered_conversion_is_rebuilt_not_used(converted_home, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(converted_home[0], home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    spec = MetricSpec()
    model, record = cached_paths(official_config(spec))
    content = bytearray(model.read_bytes())
    content[len(content) // 2] ^= 0xFF
    model.write_bytes(bytes(content))
    reports = []
    served = litert_metric(spec, report=reports.append)
    assert served is not None and len(reports) == 2 and reports[1].startswith("prepared in ")  # converted again
    assert model.read_bytes() != bytes(content)
    assert json.loads(record.read_text())["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_the_warm_path_imports_neither_tensorflow_nor_keras(converted_home, tmp_path, monkeypatch):
    # A subprocess pins the real digests: give it the conversion under the key it computes.
    home = tmp_path / "home"
    shutil.copytree(converted_home[0], home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    config = official_config(MetricSpec())
    converted = cached_paths(config)
    monkeypatch.setattr(sources, "IMAGENET_FEATURES_SHA256", dict(REAL_PINS))
    for source, target in zip(converted, cached_paths(config)):
        shutil.copyfile(source, target)
    script = (
        "import sys\n"
        "from keras_lpips.cli.app import main\n"
        f"sys.argv = ['keras-lpips', 'score', *{list(TRIPLET)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert "is closer to" in result.stdout and result.stderr == ""


def test_a_read_only_cache_filled_ahead_of_time_is_used_as_it_is(converted_home, monkeypatch):
    """A conversion in a cache this process cannot write (a container image's) is loaded, not
    converted again, even where no fallback can be written either."""
    from keras_lpips.weights import cache_folder

    monkeypatch.setenv("KERAS_HOME", str(converted_home[0]))
    monkeypatch.setattr(cache_folder, "_writable_folder", lambda path, create=True: False)
    reports = []
    served = litert_metric(MetricSpec(), report=reports.append)
    assert served is not None and reports == []


@pytest.mark.parametrize("record", ["[1]", '{"sha256": "SHA"}', '{"sha256": "SHA", "net": "alex"}'], ids=["list", "sha-only", "partial"])
def test_a_record_of_another_shape_is_a_miss(tmp_path, record):
    """A record that is JSON but not the one written (or a file LiteRT cannot load under a
    matching digest) is no conversion: removed, None (converted again), never a traceback."""
    from keras_lpips.litert_metric import _load_verified

    model, json_path = tmp_path / "m.tflite", tmp_path / "m.json"
    model.write_bytes(b"not a flatbuffer")
    json_path.write_text(record.replace("SHA", hashlib.sha256(b"not a flatbuffer").hexdigest()))
    assert _load_verified(model, json_path) is None
    assert not model.exists() and not json_path.exists()


def test_a_conversion_that_fails_is_a_note_and_keras_scores(fake_imagenet_home, tmp_path, monkeypatch):
    """A conversion that fails (here a full disk) says why in a note; score still answers, by Keras."""
    import errno

    from keras_lpips import export
    from keras_lpips.errors import KerasLPIPSNote

    home = tmp_path / "home"
    shutil.copytree(fake_imagenet_home, home)
    monkeypatch.setenv("KERAS_HOME", str(home))

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "export_tflite", full_disk)
    with pytest.warns(KerasLPIPSNote, match=r"could not prepare the LiteRT scorer \(No space left on device\); scoring with Keras"):
        assert litert_metric(MetricSpec()) is None
    result = run_cli("score", *TRIPLET)
    assert result.returncode == 0 and "is closer to" in result.stdout
    assert "note: could not prepare the LiteRT scorer (No space left on device)" in result.stderr


def test_options_the_metric_refuses_are_raised_not_a_note(fake_imagenet_home, tmp_path, monkeypatch):
    """An `InputError` while converting is the user's, raised as it is: never the note that
    LiteRT could not be prepared."""
    import warnings

    from keras_lpips import export

    home = tmp_path / "home"
    shutil.copytree(fake_imagenet_home, home)
    monkeypatch.setenv("KERAS_HOME", str(home))

    def refused(*args, **kwargs):
        raise InputError("layers must be an integer from 1 to 5 for net 'alex'. Received: layers=0")

    monkeypatch.setattr(export, "export_tflite", refused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a note would fail here
        with pytest.raises(InputError, match="Received: layers=0"):
            litert_metric(MetricSpec())


def test_a_conversion_litert_cannot_load_is_a_note(fake_imagenet_home, tmp_path, monkeypatch):
    """A conversion written whole that LiteRT then refuses is said, not retried in silence."""
    from keras_lpips import export
    from keras_lpips.errors import KerasLPIPSNote

    home = tmp_path / "home"
    shutil.copytree(fake_imagenet_home, home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(export, "export_tflite", lambda metric, path, **kwargs: Path(path).write_bytes(b"not a flatbuffer"))
    with pytest.warns(KerasLPIPSNote, match=r"could not prepare the LiteRT scorer \(LiteRT cannot load the conversion written to .*\.tflite\)"):
        assert litert_metric(MetricSpec()) is None
