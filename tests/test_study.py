"""`keras-lpips study --quick` end to end on a tiny BAPPS layout, offline (slow: five trainings
and seven evaluations), and the study's bookkeeping with stand-in training (fast).

The weight cache holds fake "imagenet" backbones (conftest's `fake_imagenet_home`: seeded
random arrays in the cache's own format, `<net>-imagenet-features.npz`, their digests pinned
for the session), so the pretrained configurations and the official rows load without a download.
"""

import json
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from tests.bapps_fixture import make_tiny_bapps
from tests.helpers import one_error_line, run_cli

CONFIGS = ("vgg16-2L-cosine", "vgg16-2L-lpips", "alexnet-4L-cosine", "alexnet-4L-lpips", "vgg16-untrained-cosine")
OUTPUTS = ("results.md", "results.json", "results.png", "curves.png", "summary.md")


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, fake_imagenet_home):
    """Runs the quick study once (module-scoped), with the fake ImageNet weight cache."""
    data = make_tiny_bapps(tmp_path_factory.mktemp("bapps"), n_train=8, n_val=6, n_jnd=4)
    out = tmp_path_factory.mktemp("study") / "out"

    def study():
        result = run_cli("study", "--data", data, "--out", out, "--quick",
                         env={"KERAS_HOME": fake_imagenet_home, "KERAS_LPIPS_OFFLINE": "1"})  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    return {"data": data, "out": out, "first": study(), "study": study}


def test_fake_cache_is_read_as_the_imagenet_backbone(fake_imagenet_home, monkeypatch):
    from keras_lpips import LPIPS

    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    cache = fake_imagenet_home / "keras_lpips"
    assert (cache / "alex-imagenet-features.npz").is_file()
    with np.load(cache / "alex-imagenet-features.npz") as fake:
        expected = fake["features.3.weight"].transpose(2, 3, 1, 0)  # torch OIHW -> Keras HWIO
    metric = LPIPS(net="alex", backbone_weights="imagenet")
    np.testing.assert_array_equal(np.asarray(metric.backbone.get_layer("conv2").kernel), expected)


@pytest.mark.slow
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
    assert {"official LPIPS alex v0.1", "official LPIPS vgg v0.1", "L2 (Lab)", "SSIM (Lab)", "PSNR"} <= set(rows)
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- the study's bookkeeping, with stand-in training and evaluation (fast) ----------------------------

# Mean 2AFC score of each row's stand-in evaluation: every finding holds but "with cosine,
# AlexNet beats VGG16" (0.65 < 0.70).
MEANS = {"vgg16-2L-cosine": 0.70, "vgg16-2L-lpips": 0.80, "alexnet-4L-cosine": 0.65, "alexnet-4L-lpips": 0.75,
         "vgg16-untrained-cosine": 0.60, "official-alex": 0.77, "official-vgg": 0.78}  # fmt: skip
SPREAD = np.array([-0.1, 0.1, -0.05, 0.05, 0.02, -0.02])  # per-triplet scores around the mean (6 triplets)


def stand_in_evaluation(mean, baselines):
    columns = ["model"] + (["l2", "ssim", "psnr"] if baselines else [])
    value = {"model": mean, "l2": 0.55, "ssim": 0.56, "psnr": 0.57}
    scores = {c: (value[c] + SPREAD).tolist() for c in columns}
    per_subset = {c: float(np.mean(scores[c])) for c in columns}
    return {
        "columns": columns,
        "2afc": {"traditional": per_subset, "all": per_subset, "mean": per_subset},
        "jnd": {"traditional": {c: value[c] - 0.1 for c in columns}},
        "counts": {"2afc": {"traditional": 6}, "jnd": {"traditional": 4}},
        "scores": {"traditional": scores},
    }


@pytest.fixture
def stand_ins(monkeypatch):
    """fit_run writes what the study reads (history, run.json, model.keras) and records its call;
    the evaluations return MEANS. Returns the list of fit_run calls."""
    import keras_lpips.study
    import keras_lpips.training

    from keras_lpips.data import list_twoafc
    from keras_lpips.training.run_config import RunConfig

    calls = []

    def fit_run(data, run_dir, resume=False, **options):
        calls.append(dict(options, run_dir=run_dir.name, resume=resume))
        config = RunConfig(data, run_dir, resume=resume, **options)  # the record fit writes in run.json
        record = config.record(list_twoafc(data, "train", config.subsets), list_twoafc(data, "val", config.val_subsets), "float32")
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = ["epoch,lr,loss,2afc,val_loss,val_2afc"] + [f"{e},0.0001,{1 / e:.3f},0.6,0.7,0.6" for e in (1, 2)]
        (run_dir / "history.csv").write_text("\n".join(rows) + "\n")
        (run_dir / "run.json").write_text(json.dumps({"config": record, "initial": {"val_2afc": 0.5}, "epochs_done": 2}))
        (run_dir / "model.keras").write_bytes(b"stand-in")

    def evaluate_run_dir(data, run_dir, baselines):
        calls.append({"evaluated": run_dir.name})
        return stand_in_evaluation(MEANS[run_dir.name.removesuffix("-seed0")], baselines)

    def evaluate_official(data, net):
        calls.append({"evaluated": f"official-{net}"})
        return stand_in_evaluation(MEANS[f"official-{net}"], False)

    monkeypatch.setattr(keras_lpips.training, "fit_run", fit_run)
    monkeypatch.setattr(keras_lpips.study, "_evaluate_run_dir", evaluate_run_dir)
    monkeypatch.setattr(keras_lpips.study, "_evaluate_official", evaluate_official)
    return calls


def trained(calls):
    """The run folders the stand-in fit_run trained, in order."""
    return [c["run_dir"] for c in calls if "run_dir" in c]


def evaluated(calls):
    """What the stand-in evaluations scored (run folders, official-alex, official-vgg), in order."""
    return [c["evaluated"] for c in calls if "evaluated" in c]


def test_study_trains_each_configuration_tabulates_and_resumes(stand_ins, tiny_bapps, tmp_path):
    out = tmp_path / "study"
    result = run_cli("study", "--data", tiny_bapps, "--out", out, "--quick")
    assert result.returncode == 0, result.stderr
    assert trained(stand_ins) == [f"{name}-seed0" for name in CONFIGS]
    assert evaluated(stand_ins) == [f"{name}-seed0" for name in CONFIGS] + ["official-alex", "official-vgg"]
    for call, name in zip([c for c in stand_ins if "run_dir" in c], CONFIGS):
        assert (call["epochs"], call["decay_epochs"], call["batch_size"], call["seed"], call["resume"]) == (1, 1, 8, 0, False)
        assert call["backbone"] == ("alex" if name.startswith("alexnet") else "vgg") and call["distance"] == name.split("-")[-1]
        assert call["backbone_weights"] == ("random" if "untrained" in name else "imagenet")
        assert call["layers"] == {"2L": 2, "4L": 4}.get(name.split("-")[1])

    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("results.png", "curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    results = json.loads((out / "results.json").read_text())
    floats = re.findall(r"(?<![\w\"])-?\d+\.\d+(?:[eE][-+]?\d+)?", (out / "results.json").read_text())
    assert floats and all(float(f) == float(str(np.float32(f))) for f in floats)  # float32 precision, as eval's
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == [*CONFIGS, "official LPIPS alex v0.1", "official LPIPS vgg v0.1", "L2 (Lab)", "SSIM (Lab)", "PSNR"]
    assert [r["kind"] for r in results["rows"]] == ["trained"] * 5 + ["official"] * 2 + ["baseline"] * 3
    assert rows["vgg16-2L-lpips"]["2afc"]["mean"]["mean"] == pytest.approx(0.80)
    assert rows["SSIM (Lab)"]["2afc"]["mean"]["mean"] == pytest.approx(0.56) and rows["SSIM (Lab)"]["jnd_map"]["mean"] == pytest.approx(0.46)
    assert results["subsets"] == ["traditional"] and results["synthetic"] is False
    assert [f["held"] for f in results["findings"]] == [True, True, True, False, True]
    assert [f["difference"] for f in results["findings"]] == pytest.approx([0.10, 0.10, 0.05, -0.05, 0.10])
    assert all(f["standard_error"] == pytest.approx(0.0, abs=1e-12) for f in results["findings"])  # same spread in every row
    summary = (out / "summary.md").read_text()
    assert "Best trained configuration: vgg16-2L-lpips (mean 2AFC 0.800)" in summary
    assert "- with cosine, AlexNet beats VGG16: did NOT hold (-0.050 ± 0.000) on this data." in summary
    assert summary.count(": held (") == 4
    assert summary in result.stdout and "| vgg16-2L-lpips | 0.800 | 0.800 | 0.700 |" in result.stdout

    stand_ins.clear()
    again = run_cli("study", "--data", tiny_bapps, "--out", out, "--quick")
    assert again.returncode == 0 and again.stderr.count("finished earlier, skipped") == 5 and stand_ins == []  # nor evaluated
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]

    unfinished = out / "runs" / "alexnet-4L-lpips-seed0"  # an interrupted run: no model, no evaluation
    for name in ("model.keras", "eval.json"):
        (unfinished / name).unlink()
    resumed = run_cli("study", "--data", tiny_bapps, "--out", out, "--quick")
    assert "alexnet-4L-lpips seed 0: resuming" in resumed.stderr and resumed.stderr.count("finished earlier, skipped") == 4
    assert [(c["run_dir"], c["resume"]) for c in stand_ins if "run_dir" in c] == [("alexnet-4L-lpips-seed0", True)]
    assert (unfinished / "eval.json").is_file()
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]


def _study(data, out, *args):
    return run_cli("study", "--data", data, "--out", out, *args)


def test_study_refuses_runs_of_other_data_or_settings(stand_ins, tmp_path):
    """A study folder's runs are reused only with the data and settings they were trained with:
    other data (another folder, or the same one changed), --quick or not, or other [train]
    options are refused in one line, before anything trains, naming what differs."""
    first, second = make_tiny_bapps(tmp_path / "a", seed=0), make_tiny_bapps(tmp_path / "b", seed=1)
    out = tmp_path / "study"
    assert _study(first, out, "--quick").returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    stand_ins.clear()
    (tmp_path / "epochs.toml").write_text("[train]\nepochs = 3\n")
    (first / "2afc/val/traditional/judge/000001.npy").unlink()  # the same folder, other data: a triplet less,
    for name in ("ref", "p0", "p1"):
        (first / "2afc/val/traditional" / name / "000001.png").unlink()
    for args, differs in [((second, "--quick"), "data_root: "), ((first, "--quick"), "val_set: '4 triplets, sha256 "),
                          ((first,), "epochs: 1 -> 5"), ((first, "--quick", "--config", tmp_path / "epochs.toml"), "epochs: 1 -> 3")]:  # fmt: skip
        result = _study(args[0], out, *args[1:])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        line = one_error_line(result)
        assert line.startswith(f"error: {out / 'runs' / 'vgg16-2L-cosine-seed0'} holds a run started with other settings or data"), line
        assert differs in line and "delete that folder to train it again, or choose another --out" in line, line
    assert stand_ins == [] and {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before

    # An unfinished run (no model yet) started with other settings is refused as well, not resumed.
    (out / "runs" / "alexnet-4L-lpips-seed0" / "model.keras").unlink()
    result = _study(second, out, "--quick")
    assert result.returncode == 2 and "holds a run started with other settings or data" in one_error_line(result)
    assert stand_ins == []


def test_study_evaluations_are_kept_only_for_their_data(stand_ins, tmp_path):
    """eval.json records what it was computed on: a study on other data (its runs deleted, so
    trained again) evaluates the official models again instead of reusing their old scores."""
    first, second = make_tiny_bapps(tmp_path / "a", seed=0), make_tiny_bapps(tmp_path / "b", seed=1)
    out = tmp_path / "study"
    assert _study(first, out, "--quick").returncode == 0
    stand_ins.clear()
    kept = _study(first, out, "--quick")
    assert kept.returncode == 0 and kept.stderr.count("evaluated earlier") == 2 and evaluated(stand_ins) == []

    import shutil

    shutil.rmtree(out / "runs")
    again = _study(second, out, "--quick")
    assert again.returncode == 0, again.stderr
    assert "evaluated earlier" not in again.stderr and again.stderr.count(": evaluating") == 2
    assert evaluated(stand_ins) == [f"{name}-seed0" for name in CONFIGS] + ["official-alex", "official-vgg"]
    basis = json.loads((out / "official" / "alex" / "eval.json").read_text())["basis"]
    assert basis["data"] == str(second.resolve()) and basis["2afc_val"].startswith("4 triplets, sha256 ")
    assert json.loads((out / "results.json").read_text())["data"] == str(second)

    stand_ins.clear()
    (out / "official" / "vgg" / "eval.json").write_text("{damaged")  # an unreadable cache: computed again
    (out / "runs" / "vgg16-2L-lpips-seed0" / "eval.json").write_text(json.dumps({"basis": {"data": "elsewhere"}}))
    assert _study(second, out, "--quick").returncode == 0
    assert evaluated(stand_ins) == ["vgg16-2L-lpips-seed0", "official-vgg"] and trained(stand_ins) == []


def test_study_refuses_an_out_inside_its_data(stand_ins, tmp_path):
    data = make_tiny_bapps(tmp_path / "data")
    (tmp_path / "link").symlink_to(data)
    for out in (data / "2afc" / "val" / "study", tmp_path / "link" / "studies" / "s", data / "2afc" / "runs"):
        result = _study(data / "2afc", out, "--quick")  # its 2afc/ folder names the dataset too
        assert result.returncode == 2, result.stderr
        assert one_error_line(result).startswith(f"error: Refusing to write {out}: it is inside "), result.stderr
    assert stand_ins == [] and sorted(p.name for p in data.iterdir()) == ["2afc", "jnd"]
    assert sorted(p.name for p in (data / "2afc").iterdir()) == ["train", "val"]


# --- a config is checked whole before anything trains: every row, [train] option and seed -------


ROW = '[[run]]\nname = "sq"\nbackbone = "squeeze"\ndistance = "lpips"\n'


@pytest.mark.parametrize(
    "config, message",
    [('[train]\nsubsets = [1, 2]\n', "[train], for the study's row 'vgg16-2L-cosine': subsets must be a subset's name or a list of "
                                     "them (strings). Received: subsets=[1, 2]"),
     ('[train]\nval_subsets = ["a", 3]\n', "[train], for the study's row 'vgg16-2L-cosine': val_subsets must be a subset's name"),
     (f'{ROW}backbone_weights = "keras-imagenet"\n', "[[run]] row 1 ('sq'): backbone_weights='keras-imagenet' exists for vgg only"),
     ("seeds = [0, 99999999999999999999]\n", "seeds: seed must be an integer from 0 to 4294967295. Received: seed=99999999999999999999"),
     ("seeds = [4294967296]\n", "seeds: seed must be an integer from 0 to 4294967295. Received: seed=4294967296"),
     ("[train]\nbatch_size = 1000000000000\n", "[train], for the study's row 'vgg16-2L-cosine': batch_size must be an integer from 1 "
                                                "to 65536. Received: batch_size=1000000000000"),
     ("[train]\nload_size = 1000000000\n", "[train], for the study's row 'vgg16-2L-cosine': load_size must be an integer from 1 "
                                            "to 4096. Received: load_size=1000000000")],
)  # fmt: skip
def test_load_config_refuses_what_fit_would_refuse(tmp_path, config, message):
    from keras_lpips.errors import InputError
    from keras_lpips.study_config import load_config

    path = tmp_path / "study.toml"
    path.write_text(config)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value


def test_load_config_takes_the_largest_seed(tmp_path):
    from keras_lpips.study_config import load_config

    (tmp_path / "study.toml").write_text("seeds = [0, 4294967295]\n")
    assert load_config(tmp_path / "study.toml")["seeds"] == (0, 4294967295)


def _weight_files(folder):
    """A missing, an unreadable (a folder), a malformed and a well-formed weight file."""
    (folder / "folder.pth").mkdir()
    (folder / "text.npz").write_text("not an archive")
    np.savez(folder / "good.npz", **{"features.0.weight": np.zeros((64, 3, 11, 11), np.float32)})
    return {"missing": folder / "nope.pth", "folder": folder / "folder.pth", "malformed": folder / "text.npz", "good": folder / "good.npz"}


@pytest.mark.parametrize(
    "config, message",
    [(f'{ROW}backbone_weights = "WEIGHTS/nope.pth"\n', "row 'sq': backbone_weights: Weight file not found: WEIGHTS/nope.pth"),
     (f'{ROW}backbone_weights = "WEIGHTS/folder.pth"\n', "row 'sq': backbone_weights: Weight file WEIGHTS/folder.pth is a directory"),
     (f'{ROW}backbone_weights = "WEIGHTS/text.npz"\n', "row 'sq': backbone_weights: "),
     ('[train]\nval_subsets = ["nope"]\n', "[train] val_subsets: Subset 2afc/val/nope not found in "),
     ('[train]\nsubsets = ["traditional", "cnn"]\n', "[train] subsets: Subset 2afc/train/cnn not found in "),
     ("seeds = [99999999999999999999]\n", "STUDY: seeds: seed must be an integer from 0 to 4294967295. Received: seed=99999999999999999999")],
)  # fmt: skip
def test_study_refuses_a_bad_row_option_or_seed_before_anything_trains(stand_ins, tiny_bapps, tmp_path, config, message):
    """What the reviewer met hours into a study (a row's missing weight file after the five
    built-in rows trained, an unknown val subset, a seed numpy refuses, in a traceback) is one
    line, exit code 2, before the first run: nothing trained, no study folder."""
    _weight_files(tmp_path)
    study = tmp_path / "study.toml"
    study.write_text(config.replace("WEIGHTS", str(tmp_path)))
    out = tmp_path / "out"
    result = _study(tiny_bapps, out, "--quick", "--config", study)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    assert line.startswith("error: " + message.replace("WEIGHTS", str(tmp_path)).replace("STUDY", str(study))), line
    assert stand_ins == [] and not out.exists()


def test_study_trains_a_row_with_a_readable_weight_file(stand_ins, tiny_bapps, tmp_path, monkeypatch):
    monkeypatch.setitem(MEANS, "sq", 0.7)
    weights = _weight_files(tmp_path)["good"]
    study = tmp_path / "study.toml"
    study.write_text(f'{ROW}backbone_weights = "{weights}"\nlayers = 1\n')
    result = _study(tiny_bapps, tmp_path / "out", "--quick", "--config", study)
    assert result.returncode == 0, result.stderr
    assert trained(stand_ins) == [f"{name}-seed0" for name in CONFIGS] + ["sq-seed0"]
    pathlib.Path(weights).unlink()  # gone since: the finished run needs it no more
    stand_ins.clear()
    again = _study(tiny_bapps, tmp_path / "out", "--quick", "--config", study)
    assert again.returncode == 0, again.stderr
    assert trained(stand_ins) == []


@pytest.mark.parametrize(
    "options, message",
    [({"seeds": (2**32,)}, "row 'vgg16-2L-cosine', seed 4294967296: seed must be an integer from 0 to 4294967295. Received: seed=4294967296"),
     ({"seeds": (-1,)}, "row 'vgg16-2L-cosine', seed -1: seed must be an integer from 0 to 4294967295. Received: seed=-1"),
     ({"train": {"subsets": [1, 2]}}, "row 'vgg16-2L-cosine', seed 0: subsets must be a subset's name or a list of them (strings)"),
     ({"train": {"val_subsets": ["nope"]}}, "[train] val_subsets: Subset 2afc/val/nope not found in "),
     ({"configs": (("sq", "squeeze", "lpips", None, "/nope.pth"),)}, "row 'sq': backbone_weights: Weight file not found: /nope.pth")],
)  # fmt: skip
def test_run_study_checks_every_planned_run_first(stand_ins, tiny_bapps, tmp_path, options, message):
    """The Python API checks the same, for configurations and seeds given to it directly."""
    from keras_lpips.errors import InputError
    from keras_lpips.study import run_study
    from keras_lpips.study_config import DEFAULT_CONFIGS, StudyConfig

    configs = tuple(StudyConfig(*args) for args in options.pop("configs", ())) or DEFAULT_CONFIGS
    with pytest.raises(InputError) as caught:
        run_study(tiny_bapps, tmp_path / "out", configs, quick=True, **options)
    assert type(caught.value) is InputError and str(caught.value).startswith(message), caught.value
    assert stand_ins == [] and not (tmp_path / "out").exists()


def test_a_finding_whose_scores_are_equal_is_tied():
    """Two models that agree on every triplet: the finding neither held nor failed (it said
    "did NOT hold (+0.000 ± 0.000)")."""
    from keras_lpips.study_reports import summary_markdown

    row = {"name": "a", "kind": "trained", "2afc": {"mean": {"mean": 0.7}}}
    findings = [{"finding": "LPIPS beats cosine", "held": False, "difference": 0.0, "standard_error": 0.0},
                {"finding": "VGG beats AlexNet", "held": False, "difference": -0.02, "standard_error": 0.005}]  # fmt: skip
    summary = summary_markdown({"rows": [row], "findings": findings})
    assert "- LPIPS beats cosine: tied (+0.000 ± 0.000) on this data." in summary
    assert "- VGG beats AlexNet: did NOT hold (-0.020 ± 0.005) on this data." in summary
