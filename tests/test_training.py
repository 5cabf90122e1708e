"""Learning from 2AFC judgments: parity with the reference trainer, fit/eval/resume, distribution."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "reference_trainer.npz"


def _alex_state(fixture):
    from data_tools.seeded_weights import seeded_state_dict

    shapes = dict(json.loads(str(fixture["alex/shapes"])))
    return seeded_state_dict(shapes, int(fixture["alex/seed"]))


def test_two_steps_match_reference():
    """Two Adam steps (with the NonNeg clamp) of LPIPSTrainer equal the reference lpips.Trainer's."""
    import keras

    from keras_lpips.model import LPIPS
    from keras_lpips.ranking import DistanceToLogit
    from keras_lpips.training import LPIPSTrainer, reference_adam
    from keras_lpips.weights.convert import assign_torchvision_weights

    f = np.load(FIXTURE)
    metric = LPIPS(net="alex", backbone_weights=None, lin_weights=None, input_range=(-1, 1), dropout=0.0, seed=0)
    assign_torchvision_weights(metric.backbone, _alex_state(f), metric.spec.torchvision_names, source="fixture")
    for k, head in enumerate(metric.heads):
        head.kernel.assign(f[f"init/lin{k}"][:, None])
    ranker = DistanceToLogit(seed=0)
    ranker.build()
    ranker.set_torch_weights({k[len("init/rank/") :]: f[k] for k in f.files if k.startswith("init/rank/")})
    trainer = LPIPSTrainer(metric, ranker)
    trainer.compile(optimizer=reference_adam(1e-4, 0.5))
    batch = {"ref": f["x_ref"], "p0": f["x_p0"], "p1": f["x_p1"], "judge": f["judge"]}
    for step in (1, 2):
        out = trainer(batch, training=False)
        np.testing.assert_allclose(np.asarray(out["d0"]), f["d0"][step - 1], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(out["d1"]), f["d1"][step - 1], rtol=1e-5, atol=1e-7)
        logs = trainer.train_on_batch(batch, return_dict=True)
        assert abs(logs["loss"] - float(f["loss"][step - 1])) < 1e-6
        for k, head in enumerate(metric.heads):
            np.testing.assert_allclose(head.kernel.numpy()[:, 0], f[f"step{step}/lin{k}"], atol=1e-5, rtol=0)
        for name, value in ranker.torch_weights().items():
            np.testing.assert_allclose(value, f[f"step{step}/rank/{name}"], atol=1e-5, rtol=0)
    clamped = sum(int((f[f"step2/lin{k}"] == 0).sum()) for k in range(5))
    assert clamped > 0 and all((h.kernel.numpy() >= 0).all() for h in metric.heads)
    assert sum(int((h.kernel.numpy() == 0).sum()) for h in metric.heads) == clamped
    keras.backend.clear_session()


# --- fit / eval on a small synthetic set ----------------------------------------------------------

TINY = dict(backbone="alex", layers=3, load_size=32, backbone_weights="random", batch_size=10, mixed_precision="off")


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from keras_lpips.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "bapps", n_train=300, n_val=200, n_jnd=50, seed=0)


@pytest.fixture(scope="module")
def trained_run(synth_data, tmp_path_factory):
    from keras_lpips.training import fit_run

    out = tmp_path_factory.mktemp("runs") / "lin"
    summary = fit_run(synth_data, out, mode="lin", epochs=2, decay_epochs=0, lr=1e-3, seed=0, progress=False, **TINY)
    return out, summary


def test_fit_lin_learns_and_writes_the_run(trained_run):
    out, summary = trained_run
    assert summary["final"]["val_2afc"] > summary["initial"]["val_2afc"] + 0.02, summary
    for name in ("run.json", "history.csv", "loss.png", "accuracy.png", "model.keras", "trainer.keras", "lin_weights.npz", "val_distances.npz"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint" / "latest.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["mode"] == "lin" and run["epochs_done"] == 2
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,loss,2afc,val_loss,val_2afc") and len(rows) == 3
    lin = np.load(out / "lin_weights.npz")
    assert sorted(lin.files) == ["lin0", "lin1", "lin2"]
    assert all(lin[k].dtype == np.float32 and lin[k].ndim == 1 and (lin[k] >= 0).all() for k in lin.files)


def test_saved_model_and_lin_weights_load(trained_run, rng):
    import keras

    from keras_lpips.model import LPIPS
    from keras_lpips.training import LPIPSTrainer

    out, _ = trained_run
    metric = keras.saving.load_model(out / "model.keras", safe_mode=True)
    trainer = keras.saving.load_model(out / "trainer.keras", safe_mode=True)
    assert isinstance(metric, LPIPS) and isinstance(trainer, LPIPSTrainer)
    images = [rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32) for _ in range(2)]
    from_file = LPIPS(net="alex", layers=3, backbone_weights=None, lin_weights=str(out / "lin_weights.npz"), input_range=(0, 1))
    from_file.backbone.set_weights(metric.backbone.get_weights())
    np.testing.assert_allclose(np.asarray(from_file(images)), np.asarray(metric(images)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(trainer.lpips(images)), np.asarray(metric(images)), rtol=1e-6)


def test_eval_reproduces_the_fit_score(trained_run, synth_data):
    from keras_lpips.evaluation import evaluate_run
    from keras_lpips.reports import results_markdown

    out, summary = trained_run
    results = evaluate_run(synth_data, model=out)
    assert results["2afc"]["all"]["model"] == summary["final"]["val_2afc"]
    assert results["2afc"]["mean"]["model"] == summary["final"]["val_2afc_mean"]
    last = summary["last_epoch"]["val_2afc"]
    assert abs(results["2afc"]["traditional"]["model"] - last) <= 1.0 / 200 + 1e-6
    assert set(results["2afc"]["traditional"]) == {"model", "l2", "ssim", "psnr"}
    assert set(results["jnd"]["traditional"]) == {"model", "l2", "ssim", "psnr"}
    assert all(0.0 <= v <= 1.0 for v in results["jnd"]["traditional"].values())
    table = results_markdown(results)
    assert "| traditional | 200 |" in table and "JND mAP" in table
    with np.load(out / "val_distances.npz") as saved:  # the fit's final distances stand in for a 2AFC pass
        reused = evaluate_run(synth_data, model=out, distances=(saved["d0"], saved["d1"]), keep_scores=True)
    assert reused["2afc"] == results["2afc"] and reused["jnd"] == results["jnd"]
    assert len(reused["scores"]["traditional"]["model"]) == 200


def test_cli_fit_then_eval(small_data, tmp_path):
    from tests.helpers import one_error_line, run_cli

    run = tmp_path / "run"
    result = run_cli("fit", "--data", small_data, "--out", run, "--backbone", "alexnet", "--layers", "2",
                     "--load-size", "32", "--backbone-weights", "random", "--epochs", "1", "--decay-epochs", "0",
                     "--batch-size", "10", "--mixed-precision", "off", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "val 2AFC" in output and "lin_weights.npz" in output
    result = run_cli("eval", "--model", run, "--data", small_data, "--json", "--no-baselines")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["columns"] == ["model"] and scores["load_size"] == 32
    final = json.loads((run / "run.json").read_text())["final"]["val_2afc"]
    assert scores["2afc"]["all"]["model"] == float(str(np.float32(final)))  # printed at float32 precision
    (run / "run.json").write_text("{damaged")  # where eval reads the run's load size: one line, not a traceback
    result = run_cli("eval", "--model", run, "--data", small_data, "--no-baselines")
    assert result.returncode == 1 and one_error_line(result).startswith(f"error: Cannot read {run / 'run.json'} (")
    assert one_error_line(result).endswith("pass --load-size to evaluate without it")
    assert run_cli("eval", "--model", run, "--data", small_data, "--no-baselines", "--load-size", "32").returncode == 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_fit_and_eval_name_an_unreadable_image(tmp_path, split):
    """A truncated PNG stops fit (on the images or the frozen backbone's pass) and eval with one
    error naming it, not TensorFlow's 'Invalid PNG data' without a file name."""
    import re

    from keras_lpips.errors import InputError
    from keras_lpips.evaluation import evaluate_run
    from keras_lpips.training import fit_run
    from tests.bapps_fixture import make_tiny_bapps

    root = make_tiny_bapps(tmp_path / "bapps", n_train=6, n_val=4, n_jnd=0)
    bad = root / "2afc" / split / "traditional" / "p1" / "000002.png"
    bad.write_bytes(bad.read_bytes()[:300])
    message = f"^Cannot decode image {re.escape(str(bad))}: Invalid PNG data, size 300 \\(keras-lpips data verify "
    run = dict(TINY, batch_size=3, epochs=1, decay_epochs=0, progress=False)
    for k, precompute in enumerate((True, False)):
        with pytest.raises(InputError, match=message):
            fit_run(root, tmp_path / f"run{k}", precompute_frozen=precompute, **run)
    if split == "val":
        from keras_lpips.model import LPIPS

        metric = LPIPS(net="alex", layers=2, backbone_weights=None, lin_weights=None, input_range=(0, 1), seed=0)
        with pytest.raises(InputError, match=message):
            evaluate_run(root, metric=metric, load_size=32, baselines=False)


def test_fit_refuses_a_non_empty_run_dir(synth_data, tmp_path):
    from keras_lpips.errors import InputError
    from keras_lpips.training import fit_run

    (tmp_path / "notes.txt").write_text("something")
    with pytest.raises(InputError, match=r"not empty: pass resume=True to continue that run, or choose a new out_dir=$"):
        fit_run(synth_data, tmp_path, progress=False, **TINY)
    # resume=True there: no run to continue, and a new one would train in among the files
    with pytest.raises(InputError, match=r"holds no run to continue \(no run.json\), but other files; choose an empty or new out_dir=$"):
        fit_run(synth_data, tmp_path, progress=False, resume=True, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("distance", ["cosine", "lpips"])
def test_frozen_backbone_work_done_once_trains_the_same(small_data, tmp_path, distance):
    """Lin mode trains on what the frozen backbone gives computed once (cosine: distances; lpips:
    squared feature differences, validation on their per-channel means): same history, same
    dropout masks and the same final weights as running the backbone on the images every step."""
    from keras_lpips.training import fit_run

    run = dict(TINY, distance=distance, epochs=2, decay_epochs=1, lr=1e-3, seed=3, progress=False)
    fast = fit_run(small_data, tmp_path / "fast", **run)
    slow = fit_run(small_data, tmp_path / "slow", precompute_frozen=False, **run)
    assert fast["initial"] == pytest.approx(slow["initial"], abs=1e-6)
    assert fast["final"]["val_2afc"] == pytest.approx(slow["final"]["val_2afc"], abs=1e-6)
    fast_rows, slow_rows = (np.loadtxt(tmp_path / name / "history.csv", delimiter=",", skiprows=1) for name in ("fast", "slow"))
    np.testing.assert_allclose(fast_rows[:, :6], slow_rows[:, :6], atol=1e-6)  # epoch, lr, loss, 2afc, val_loss, val_2afc
    (_, state_fast), (_, state_slow) = _final_state(tmp_path / "fast"), _final_state(tmp_path / "slow")
    for x, y in zip(state_fast, state_slow):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)


def _reference_jnd_map(ds, sames):
    """lpips 0.1.4's score_jnd_dataset and voc_ap(use_07_metric=False), verbatim but for the loader."""
    sorted_inds = np.argsort(ds)
    sames_sorted = sames[sorted_inds]
    TPs = np.cumsum(sames_sorted)
    FPs = np.cumsum(1 - sames_sorted)
    FNs = np.sum(sames_sorted) - TPs
    precs = TPs / (TPs + FPs)
    recs = TPs / (TPs + FNs)
    mrec = np.concatenate(([0.0], recs, [1.0]))
    mpre = np.concatenate(([0.0], precs, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def test_ranking_helpers_match_the_reference_formulas():
    from keras_lpips.ranking import DistanceToLogit, jnd_map, twoafc_score

    assert twoafc_score([0.1, 0.5, 0.3], [0.2, 0.4, 0.3], [0.0, 1.0, 0.7]) == pytest.approx((1 + 1 + 0.5) / 3)
    assert jnd_map([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    for _ in range(5):
        ds, sames = rng.random(40), rng.integers(0, 4, 40) / 3
        assert jnd_map(ds, sames) == pytest.approx(_reference_jnd_map(ds, sames), abs=1e-12)
    # The running metric (tensors, as in training logs) scores alike, ties included:
    import keras

    from keras_lpips.ranking import TwoAFCScore

    d0, d1 = rng.integers(0, 3, 60).astype(np.float32), rng.integers(0, 3, 60).astype(np.float32)
    judge = rng.integers(0, 6, 60).astype(np.float32) / 5
    running = TwoAFCScore()
    for part in (slice(0, 25), slice(25, 60)):
        running.update_state(*(keras.ops.convert_to_tensor(v[part]) for v in (d0, d1, judge)))
    assert float(running.result()) == pytest.approx(twoafc_score(d0, d1, judge), abs=1e-6)
    head = DistanceToLogit(seed=1)
    head.build()
    p = np.asarray(head([np.array([0.1, 0.5], np.float32), np.array([0.4, 0.2], np.float32)]))
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    clone = DistanceToLogit.from_config(head.get_config())
    clone.build()
    clone.set_torch_weights(head.torch_weights())
    np.testing.assert_array_equal(np.asarray(clone([np.array([0.1, 0.5]), np.array([0.4, 0.2])])), p)


def test_mixed_precision_keeps_distances_float32():
    import keras

    from keras_lpips.model import LPIPS
    from keras_lpips.training import LPIPSTrainer, reference_adam

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        metric = LPIPS(net="alex", layers=2, backbone_weights=None, lin_weights=None, input_range=(0, 1), seed=0)
        trainer = LPIPSTrainer(metric)
    finally:
        keras.config.set_dtype_policy("float32")
    assert metric.backbone.get_layer("conv1").compute_dtype == "bfloat16"
    assert metric.normalize.compute_dtype == "float32" and metric.heads[0].compute_dtype == "float32"
    assert trainer.ranker.compute_dtype == "float32" and trainer.compute_dtype == "float32"
    rng = np.random.default_rng(0)
    batch = {k: rng.uniform(0, 1, (4, 16, 16, 3)).astype(np.float32) for k in ("ref", "p0", "p1")}
    batch["judge"] = np.array([0.0, 0.2, 0.8, 1.0], np.float32)
    out = trainer(batch)
    assert all(out[k].dtype == "float32" for k in ("d0", "d1", "prob"))
    trainer.compile(optimizer=reference_adam(1e-2))
    logs = trainer.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["loss"]) and all((h.kernel.numpy() >= 0).all() for h in metric.heads)


def test_untrained_backbone_spellings_are_one(tmp_path):
    """fit takes "none" as score does, for an untrained backbone, and records it as "random"
    (it was read as a file named none)."""
    from keras_lpips.training.run_config import RunConfig

    for spelling in ("random", "none"):
        assert RunConfig(".", tmp_path / "run", backbone_weights=spelling).backbone_weights == "random"
    assert RunConfig(".", tmp_path / "run", mode="scratch", backbone_weights="none").backbone_weights == "random"


def test_precision_and_strategy_choices(tmp_path):
    from keras_lpips.errors import InputError
    from keras_lpips.training.devices import cpu_has_native_bf16, make_strategy, resolve_precision

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16(flags)
    flags.write_text("flags\t\t: fpu sse2 avx2\n")
    assert not cpu_has_native_bf16(flags)
    assert resolve_precision("off") == "float32" and resolve_precision("bf16") == "mixed_bfloat16"
    assert resolve_precision("auto") in ("float32", "mixed_bfloat16", "mixed_float16")
    with pytest.raises(InputError):
        resolve_precision("fp8")
    with pytest.raises(InputError):
        make_strategy("horovod")


# --- the CLI, resume and distribution run in subprocesses (fresh TensorFlow runtimes) -------------

FIT_SCRIPT = """
import json, sys, time
args = json.loads(sys.argv[1])
if args.get("logical_cpus"):
    import tensorflow as tf
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * args["logical_cpus"])
import keras
from keras_lpips.training import fit_run

class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(args["sleep"])

for run in args["runs"]:
    fit_run(**run, callbacks=[Slow()] if args.get("sleep") else ())
"""

DETERMINISTIC = dict(TINY, epochs=2, decay_epochs=1, lr=1e-3, seed=3, deterministic=True, progress=False)


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _fit_process(tmp_path, runs, env=None, **args):
    script = tmp_path / "fit_script.py"
    if not script.exists():
        script.write_text(FIT_SCRIPT)
    payload = json.dumps({"runs": [{k: str(v) if isinstance(v, pathlib.Path) else v for k, v in r.items()} for r in runs], **args})
    return subprocess.Popen([sys.executable, str(script), payload], env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _final_state(run_dir):
    latest = json.loads((run_dir / "checkpoint" / "latest.json").read_text())
    with np.load(run_dir / "checkpoint" / latest["file"]) as data:
        return latest, [data[f"v{i}"] for i in range(len(data.files))]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from keras_lpips.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("small") / "bapps", n_train=55, n_val=20, n_jnd=0, seed=1)


def _assert_same_state(a, b, atol):
    (latest_a, state_a), (latest_b, state_b) = _final_state(a), _final_state(b)
    assert latest_a["epoch"] == latest_b["epoch"] == 3
    assert len(state_a) == len(state_b)
    for x, y in zip(state_a, state_b):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)
    lin_a, lin_b = np.load(a / "lin_weights.npz"), np.load(b / "lin_weights.npz")
    for k in lin_a.files:
        np.testing.assert_allclose(lin_a[k], lin_b[k], atol=atol, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("precompute_frozen", [True, False], ids=["frozen-maps", "images"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(small_data, tmp_path, precompute_frozen):
    """Both ways lin mode trains: from the frozen backbone's maps computed once (small sets), and
    on the images through the tf.data pipeline every epoch (BAPPS, whose maps do not fit in memory)."""
    run = dict(DETERMINISTIC, data_root=small_data, precompute_frozen=precompute_frozen)
    straight = _fit_process(tmp_path, [dict(run, out_dir=tmp_path / "straight")])
    killed_dir = tmp_path / "killed"
    victim = _fit_process(tmp_path, [dict(run, out_dir=killed_dir)], sleep=0.1)
    latest = killed_dir / "checkpoint" / "latest.json"
    deadline = time.time() + 180
    while not latest.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert latest.exists(), victim.communicate()[0][-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert json.loads(latest.read_text())["epoch"] == 1  # killed during epoch 2
    assert not (killed_dir / "model.keras").exists()
    _finish(_fit_process(tmp_path, [dict(run, out_dir=killed_dir, resume=True)]))
    _finish(straight)
    _assert_same_state(killed_dir, tmp_path / "straight", atol=0)
    history = (killed_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]


@pytest.mark.slow
def test_mirrored_on_two_cpus_matches_one_device(small_data, tmp_path):
    """Dropout off: its masks depend on how a batch is split over replicas. 55 triplets in batches
    of 10: the last batch (5) splits 3 + 2."""
    run = dict(DETERMINISTIC, data_root=small_data, dropout=0.0)
    runs = [dict(run, out_dir=tmp_path / "one", strategy="one-device"), dict(run, out_dir=tmp_path / "mirrored", strategy="mirrored")]
    _finish(_fit_process(tmp_path, runs, logical_cpus=2))
    summary = json.loads((tmp_path / "mirrored" / "run.json").read_text())
    assert summary["strategy"] == "mirrored" and summary["replicas"] == 2
    _assert_same_state(tmp_path / "mirrored", tmp_path / "one", atol=2e-5)


@pytest.mark.slow
def test_multiworker_without_tf_config_is_one_worker(small_data, tmp_path):
    """--strategy multiworker with no TF_CONFIG: a single worker, whose step logs stay scalars
    (TensorBoard refused the (1,)-shaped logs that only a multi-worker reduction needs)."""
    run = dict(TINY, data_root=small_data, epochs=1, decay_epochs=0, progress=False)
    _finish(_fit_process(tmp_path, [dict(run, out_dir=tmp_path / "multi", strategy="multiworker")]))
    summary = json.loads((tmp_path / "multi" / "run.json").read_text())
    assert summary["strategy"] == "multiworker" and summary["replicas"] == 1
    assert list((tmp_path / "multi" / "logs" / "train").glob("events.out.tfevents.*"))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_match_one_process(small_data, tmp_path):
    """MultiWorkerMirroredStrategy over two processes on 127.0.0.1 (40 to 75 s on 2 cores)."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    run = dict(DETERMINISTIC, data_root=small_data, dropout=0.0)
    processes = [_fit_process(tmp_path, [dict(run, out_dir=tmp_path / "one", strategy="one-device")])]
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        multi = dict(run, out_dir=tmp_path / "multi", strategy="multiworker")
        processes.append(_fit_process(tmp_path, [multi], env=_env(TF_CONFIG=json.dumps(config))))
    for process in processes:
        _finish(process)
    summary = json.loads((tmp_path / "multi" / "run.json").read_text())
    assert summary["strategy"] == "multiworker" and summary["replicas"] == 2
    _assert_same_state(tmp_path / "multi", tmp_path / "one", atol=2e-5)


def test_fit_on_a_missing_folder_prints_one_line(tmp_path):
    from tests.helpers import run_cli

    missing = tmp_path / "no-such-bapps"
    result = run_cli("fit", "--data", missing, "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: BAPPS root {missing} is not a directory"]
    assert not (tmp_path / "run").exists()


class _Interrupted(Exception):
    pass


def _interrupt_in_epoch(epoch):
    """A callback that stops training (raises `_Interrupted`) after the first step of its `epoch`-th epoch."""
    import keras

    class Interrupt(keras.callbacks.Callback):
        started = 0

        def on_epoch_begin(self, index, logs=None):
            self.started += 1

        def on_train_batch_end(self, batch, logs=None):
            if self.started == epoch:
                raise _Interrupted

    return Interrupt()


def test_resume_after_an_interruption_matches_an_uninterrupted_run(small_data, tmp_path):
    """In this process (the SIGKILL tests above are the slow, bit-exact version): a run stopped in
    epoch 2 resumes from its epoch-1 checkpoint and ends where an uninterrupted run ends."""
    from keras_lpips.training import fit_run

    run = dict(TINY, epochs=2, decay_epochs=1, lr=1e-3, seed=3, progress=False)
    fit_run(small_data, tmp_path / "straight", **run)
    stopped = tmp_path / "stopped"
    with pytest.raises(_Interrupted):
        fit_run(small_data, stopped, callbacks=[_interrupt_in_epoch(2)], **run)
    assert json.loads((stopped / "checkpoint" / "latest.json").read_text())["epoch"] == 1
    assert not (stopped / "model.keras").exists()
    counter = _interrupt_in_epoch(0)  # never interrupts: counts the epochs the resumed run trains
    fit_run(small_data, stopped, resume=True, callbacks=[counter], **run)
    assert counter.started == 2  # epochs 2 and 3, not from the start
    _assert_same_state(stopped, tmp_path / "straight", atol=1e-6)
    history = (stopped / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["1", "2", "3"]
    resumed, straight = (np.loadtxt(d / "history.csv", delimiter=",", skiprows=1) for d in (stopped, tmp_path / "straight"))
    np.testing.assert_allclose(resumed[:, :6], straight[:, :6], atol=1e-6)  # epoch, lr, loss, 2afc, val_loss, val_2afc


def test_frozen_backbone_releases_the_val_metric_once_the_val_outputs_are_computed(small_data):
    """The float32 copy that computes the val outputs under a mixed policy is not kept for the
    whole run: the final score reuses the outputs."""
    import gc
    import weakref

    from keras_lpips.data.bapps import list_twoafc
    from keras_lpips.model import LPIPS
    from keras_lpips.training.frozen import FrozenBackbone

    def tiny():
        return LPIPS(net="alex", layers=3, backbone_weights=None, lin_weights=None, seed=0)

    train, val = list_twoafc(small_data, "train"), list_twoafc(small_data, "val")
    trained, copy = tiny(), tiny()
    released = weakref.ref(copy)
    frozen = FrozenBackbone(trained, train, val, small_data, 10, 32, log=lambda *_: None, val_metric=copy)
    del copy
    outputs = frozen.arrays("val")
    gc.collect()
    assert released() is None
    d0, d1 = frozen.validation_distances(trained)
    assert frozen.arrays("val") is outputs and d0.shape == d1.shape == (len(val),)


def test_mirrored_strategy_on_one_device_trains(small_data, tmp_path):
    """The mirrored code path in this process, on its one CPU device (two replicas, in a process
    of its own: the slow test above)."""
    from keras_lpips.training import fit_run

    from keras_lpips.errors import KerasLPIPSNote

    with pytest.warns(KerasLPIPSNote, match=r"^strategy mirrored: 1 replica"):
        summary = fit_run(small_data, tmp_path / "run", strategy="mirrored", **dict(TINY, epochs=1, decay_epochs=0, progress=False))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["strategy"] == "mirrored" and run["replicas"] == 1
    assert 0.0 <= summary["final"]["val_2afc"] <= 1.0 and (tmp_path / "run" / "model.keras").is_file()


def test_resume_compares_the_backbone_by_its_canonical_name():
    from keras_lpips.training.run_folder import comparable_config as _comparable_config

    assert _comparable_config({"backbone": "alexnet", "resume": True}) == _comparable_config({"backbone": "alex"})
    assert _comparable_config({"backbone": "vgg16"}) != _comparable_config({"backbone": "alex"})


# --- refusals before anything is written: options, outputs, other data, damaged checkpoints ---------


@pytest.mark.parametrize(
    "option, value, message",
    [("batch_size", 0, "batch_size must be an integer from 1 to 65536"), ("batch_size", -5, "batch_size must be an integer from 1 to 65536"),
     ("batch_size", True, "batch_size must be an integer from 1 to 65536"), ("batch_size", 2.5, "batch_size must be an integer from 1 to 65536"),
     ("load_size", 0, "load_size must be an integer from 1 to 4096"), ("epochs", -1, "epochs must be an integer >= 0"),
     ("epochs", float("nan"), "epochs must be an integer >= 0"), ("decay_epochs", -2, "decay_epochs must be an integer >= 0"),
     ("seed", -1, "seed must be an integer from 0 to 4294967295. Received: seed=-1"),
     ("seed", 2**32, "seed must be an integer from 0 to 4294967295. Received: seed=4294967296"),
     ("seed", 99999999999, "seed must be an integer from 0 to 4294967295. Received: seed=99999999999"),
     ("subsets", [1, 2], re.escape("subsets must be a subset's name or a list of them (strings). Received: subsets=[1, 2]")),
     ("val_subsets", 3, "val_subsets must be a subset's name or a list of them"),
     ("backbone_weights", "keras-imagenet", "backbone_weights='keras-imagenet' exists for vgg only"),
     ("lr", 0.0, "lr must be a positive finite number"),
     ("lr", -1e-4, "lr must be a positive finite number"), ("lr", float("nan"), "lr must be a positive finite number"),
     ("lr", float("inf"), "lr must be a positive finite number"), ("lr", "1e-4", "lr must be a positive finite number"),
     ("beta_1", 1.0, "beta_1 must be a number from 0 to less than 1"), ("beta_1", float("nan"), "beta_1 must be a number"),
     ("dropout", 1.0, "dropout must be a number from 0 to less than 1"), ("dropout", -0.1, "dropout must be a number"),
     ("mixed_precision", "fp8", "mixed_precision must be one of auto, off, bf16, fp16"),
     ("strategy", "horovod", "strategy must be one of auto, one-device")],
)  # fmt: skip
def test_fit_refuses_bad_numbers_before_creating_anything(tmp_path, option, value, message):
    from keras_lpips.errors import InputError
    from keras_lpips.training import fit_run

    with pytest.raises(InputError, match=f"^{message}") as caught:
        fit_run(tmp_path / "no-data-needed", tmp_path / "run", **{**TINY, option: value})
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []


def test_cli_fit_refuses_a_seed_past_the_largest_in_one_line(tmp_path):
    """--seed 99999999999 was numpy's traceback (exit code 1): it is the one seed message, exit 2."""
    from tests.helpers import one_error_line, run_cli, run_installed

    data = tmp_path / "data"
    (data / "2afc").mkdir(parents=True)  # a dataset's layout: no image is read before the seed is checked
    for run in (run_cli, run_installed):
        result = run("fit", "--data", data, "--out", tmp_path / "run", "--seed", "99999999999")
        assert result.returncode == 2, result.stderr
        assert one_error_line(result) == "error: seed must be an integer from 0 to 4294967295. Received: seed=99999999999"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_fit_trains_with_the_largest_seed(small_data, tmp_path):
    from keras_lpips.training import fit_run

    summary = fit_run(small_data, tmp_path / "run", **{**TINY, "epochs": 1, "decay_epochs": 0, "seed": 2**32 - 1, "progress": False})
    assert summary["config"]["seed"] == 2**32 - 1 and summary["epochs_done"] == 1


def test_cli_fit_and_eval_refuse_a_zero_batch_alike(small_data, tmp_path):
    from tests.helpers import one_error_line, run_cli

    run = tmp_path / "run"
    fit = run_cli("fit", "--data", small_data, "--out", run, "--batch-size", "0")
    evaluation = run_cli("eval", "--data", small_data, "--batch-size", "0", "--net", "alex")
    lines = [one_error_line(result).split(" (see ")[0] for result in (fit, evaluation)]
    assert fit.returncode == evaluation.returncode == 2 and lines[0] == lines[1], lines
    assert lines[0].startswith("error: Invalid value for '--batch-size': ") and "1" in lines[0]
    result = run_cli("fit", "--data", small_data, "--out", run, "--lr", "nan")
    assert result.returncode == 2 and one_error_line(result) == "error: lr must be a positive finite number. Received: lr=nan"
    assert list(tmp_path.iterdir()) == []


def test_fit_refuses_an_out_inside_its_data(tmp_path):
    """Also through a link to the data folder, and with --data naming the dataset's 2afc/ folder;
    nothing is created (no run folder, no lock file, no parent folder)."""
    from keras_lpips.errors import InputError
    from keras_lpips.training import fit_run
    from tests.bapps_fixture import make_tiny_bapps

    data = make_tiny_bapps(tmp_path / "data", n_train=3, n_val=2, n_jnd=2)
    (tmp_path / "link").symlink_to(data)
    before = sorted(str(p) for p in data.rglob("*"))
    cases = [(data, data / "2afc" / "val" / "myrun"), (tmp_path / "link", data / "2afc" / "val" / "myrun"),
             (data, tmp_path / "link" / "runs" / "new" / "run"), (data / "2afc", data / "jnd" / "val" / "run")]  # fmt: skip
    for root, out in cases:
        with pytest.raises(InputError, match=f"^Refusing to write {re.escape(str(out))}: it is inside "):
            fit_run(root, out, progress=False, **TINY)
    assert sorted(str(p) for p in data.rglob("*")) == before


def test_resume_refuses_other_training_or_validation_data(tmp_path):
    """The run records what identifies its sets (count and a digest of the files and judgments):
    a triplet added, or a judgment changed, is refused on --resume, naming the set, before any
    file of the run changes (the restored step count would otherwise drift the schedule)."""
    import shutil

    from keras_lpips.errors import InputError
    from keras_lpips.training import fit_run
    from tests.bapps_fixture import make_tiny_bapps

    data = make_tiny_bapps(tmp_path / "data", n_train=6, n_val=4, n_jnd=0)
    run = dict(TINY, batch_size=3, epochs=1, decay_epochs=1, progress=False)
    out = tmp_path / "run"
    with pytest.raises(_Interrupted):
        fit_run(data, out, callbacks=[_interrupt_in_epoch(2)], **run)
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["train_set"].startswith("6 triplets, sha256 ") and config["val_set"].startswith("4 triplets, sha256 ")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    train = data / "2afc" / "train" / "traditional"
    for name, suffix in (("ref", ".png"), ("p0", ".png"), ("p1", ".png"), ("judge", ".npy")):
        shutil.copy(train / name / f"000000{suffix}", train / name / f"000006{suffix}")
    changed = r"^resume=True: the run in .* other settings or data \(train_set: '6 triplets, sha256 \w+' -> '7 triplets"
    with pytest.raises(InputError, match=changed):
        fit_run(data, out, resume=True, **run)
    for name in ("ref", "p0", "p1", "judge"):
        next((train / name).glob("000006.*")).unlink()
    np.save(data / "2afc/val/traditional/judge/000002.npy", np.array([0.123]))
    with pytest.raises(InputError, match=r"\(val_set: '4 triplets, sha256 \w+' -> '4 triplets, sha256 \w+'\); resume it with those"):
        fit_run(data, out, resume=True, **run)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_config_changes_take_a_run_json_without_data_fingerprints_as_unverifiable():
    """A run.json of a keras-lpips that did not record the data sets still resumes (its data
    cannot be compared); one that recorded them is compared."""
    from keras_lpips.training.run_folder import config_changes

    new = {"epochs": 2, "train_set": "6 triplets, sha256 ab", "val_set": "4 triplets, sha256 cd"}
    assert config_changes({"epochs": 2}, new) == ""
    assert config_changes({"epochs": 2, "train_set": "5 triplets, sha256 ef", "val_set": new["val_set"]}, new).startswith("train_set: ")


def _copy_of_trained_run(trained_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out)
    return out


def _npz_of_a_huge_declared_shape():
    """An .npz whose v0 declares a (2**38, 5760) float32 array (6 PB) and holds 64 bytes of it."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**38, 5760)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("v0.npy", header.getvalue() + bytes(64))
    return buffer.getvalue()


@pytest.mark.parametrize("damage", ["truncated npz", "not a zip", "huge shape", "latest.json", "latest.json fields", "run.json"])
def test_resume_from_a_damaged_checkpoint_is_one_error(trained_run, synth_data, tmp_path, damage):
    from keras_lpips.errors import DataError
    from keras_lpips.training import fit_run

    out = _copy_of_trained_run(trained_run, tmp_path)
    latest = out / "checkpoint" / "latest.json"
    state = out / "checkpoint" / json.loads(latest.read_text())["file"]
    damaged, message = {
        "truncated npz": (state, f"Cannot resume from the checkpoint {state}: "),
        "not a zip": (state, f"Cannot resume from the checkpoint {state}: "),
        "huge shape": (state, f"Cannot resume from the checkpoint {state}: 'v0' has shape (274877906944, 5760) "),
        "latest.json": (latest, f"Cannot resume from the checkpoint {latest}: "),
        "latest.json fields": (latest, f"Cannot resume from the checkpoint {latest}: it is not a checkpoint record"),
        "run.json": (out / "run.json", f"Cannot read {out / 'run.json'} ("),
    }[damage]
    content = {"truncated npz": state.read_bytes()[:1000], "not a zip": b"\0" * 64, "huge shape": _npz_of_a_huge_declared_shape(), "latest.json": b'{"epoch": 2, "fi',
               "latest.json fields": json.dumps({"epoch": 2, "file": "../../etc/passwd", "history": []}).encode(),
               "run.json": b"{not json"}[damage]  # fmt: skip
    damaged.write_bytes(content)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(DataError) as caught:
        fit_run(synth_data, out, mode="lin", epochs=2, decay_epochs=0, lr=1e-3, seed=0, progress=False, resume=True, **TINY)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text and text.endswith("or choose a new out_dir="), text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_cli_resume_from_a_damaged_checkpoint_is_one_line(trained_run, synth_data, tmp_path):
    from tests.helpers import one_error_line, run_cli

    out = _copy_of_trained_run(trained_run, tmp_path)
    for state in (out / "checkpoint").glob("epoch-*.npz"):
        state.write_bytes(state.read_bytes()[:500])
    result = run_cli("fit", "--data", synth_data, "--out", out, "--resume", "--backbone", "alex", "--layers", "3", "--load-size", "32",
                     "--backbone-weights", "random", "--batch-size", "10", "--mixed-precision", "off", "--epochs", "2",
                     "--decay-epochs", "0", "--lr", "1e-3", "--quiet")  # fmt: skip
    assert result.returncode == 1
    assert one_error_line(result).endswith(
        f"delete {out / 'checkpoint'} to train the run again from its start (with --resume), or choose a new --out"
    )


def test_lin_weights_are_written_for_lin_runs_only(small_data, tmp_path):
    """A tune (or scratch) run's linear weights belong to the backbone it trained, which only
    model.keras holds: no lin_weights.npz that `--lin-weights` would pair with another backbone."""
    from keras_lpips.training import fit_run

    summary = fit_run(small_data, tmp_path / "tune", mode="tune", **dict(TINY, epochs=1, decay_epochs=0, progress=False))
    assert not (tmp_path / "tune" / "lin_weights.npz").exists() and "lin_weights.npz" not in summary["files"]
    assert (tmp_path / "tune" / "model.keras").is_file()


def test_schedule_is_the_references():
    """`epochs + 1` epochs at the full rate, then lower by lr / decay_epochs each (docs/training.md)."""
    from keras_lpips.training import EpochLinearDecay

    schedule = EpochLinearDecay(1.0, steps_per_epoch=3, epochs=5, decay_epochs=5)
    rates = [schedule.rate_at_epoch(e) for e in range(10)]
    assert rates == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
    assert [float(schedule(step)) for step in range(0, 30, 3)] == pytest.approx(rates)


def test_scores_by_subset_pool_and_average_and_fit_says_which():
    """"all" weighs triplets alike, "mean" subsets alike (eval's headline): they differ where
    subsets differ in size, and fit's last line names both."""
    from cli.train import _final_score_line
    from keras_lpips.ranking import scores_by_subset

    scores = [1, 1, 1, 0, 0.5, 0.5]
    result = scores_by_subset(scores, ["big", "big", "big", "big", "small", "small"])
    assert result == {"big": 0.75, "small": 0.5, "all": pytest.approx(4 / 6), "mean": 0.625}
    final = {"val_2afc": result["all"], "val_2afc_mean": result["mean"], "val_2afc_by_subset": {"big": 0.75, "small": 0.5}}
    assert _final_score_line({"final": final, "initial": {"val_2afc": 0.5}}) == (
        "val 2AFC over all triplets 0.6667 (untrained 0.5000); mean of subsets 0.6250 (big 0.7500, small 0.5000)")
    one = {"val_2afc": 0.7, "val_2afc_mean": 0.7, "val_2afc_by_subset": {"traditional": 0.7}}
    assert _final_score_line({"final": one, "initial": {"val_2afc": 0.634}}) == (
        "val 2AFC 0.7000 (traditional 0.7000); untrained 0.6340")


def test_lin_init_starts_as_the_reference_or_from_ones():
    """"reference": torch's default 1x1 conv init, uniform in +-1/sqrt(channels) (seeded, so a
    seed repeats it); "ones": every weight 1, the cosine distance (docs/training.md)."""
    from keras_lpips.training.optimizer import reference_lin_init

    metric = _small_metric()
    assert all(np.all(np.asarray(head.kernel) == 1.0) for head in metric.heads)  # "ones" starts here
    reference_lin_init(metric, seed=3)
    kernels = [np.asarray(head.kernel).ravel() for head in metric.heads]
    for head, kernel in zip(metric.heads, kernels):
        bound = 1.0 / np.sqrt(head.channels)
        assert kernel.shape == (head.channels,) and np.all(np.abs(kernel) <= bound)
        assert kernel.min() < -0.8 * bound and kernel.max() > 0.8 * bound  # the whole range is drawn
    again = _small_metric()
    reference_lin_init(again, seed=3)
    assert all(np.array_equal(a, np.asarray(h.kernel).ravel()) for a, h in zip(kernels, again.heads))
    reference_lin_init(again, seed=4)
    assert not np.array_equal(kernels[0], np.asarray(again.heads[0].kernel).ravel())


DROPOUT_SCRIPT = """
import numpy as np, tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_lpips.model import LPIPS
from keras_lpips.training import LPIPSTrainer
from keras_lpips.training.devices import make_strategy

def draw(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        metric = LPIPS(net="alex", layers=1, backbone_weights=None, lin_weights=None, dropout=0.5, seed=0, input_range=(0, 1))
        LPIPSTrainer(metric)
    head = metric.heads[0]
    ones = tf.data.Dataset.from_tensors(tf.ones((2 * strategy.num_replicas_in_sync, 3, 3, 64)))
    step = tf.function(lambda x: head.dropout_layer(x, training=True))
    batch = next(iter(strategy.experimental_distribute_dataset(ones)))
    masks = [np.asarray(m) for m in strategy.experimental_local_results(strategy.run(step, args=(batch,)))]
    return masks, head.dropout_layer.seed_generator.state.numpy()

mirrored, one = make_strategy("mirrored")[0], make_strategy("one-device")[0]
(first, second), state = draw(mirrored)
(single,), single_state = draw(one)
assert mirrored.num_replicas_in_sync == 2
assert not np.array_equal(first, second), "the replicas drew the same dropout masks"
assert np.array_equal(first, single[:2]), "replica 0 no longer draws what one device draws"
assert np.array_equal(state, single_state), (state, single_state)
print("ok")
"""


def test_replicas_draw_their_own_dropout_masks(tmp_path):
    """Under MirroredStrategy (2 logical CPUs) each replica drops other units of its share of the
    batch; replica 0 draws one device's masks, and the seed state stays the one checkpoints hold."""
    script = tmp_path / "dropout_masks.py"
    script.write_text(DROPOUT_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout[-2000:] + result.stderr[-3000:]


# --- eval on what a dataset holds; compiled once per metric ------------------------------------------


def _small_metric(seed=0):
    from keras_lpips.model import LPIPS

    return LPIPS(net="alex", layers=2, backbone_weights=None, lin_weights=None, input_range=(0, 1), seed=seed)


def test_eval_scores_what_the_dataset_holds(tmp_path):
    """JND only (what `data download --split jnd` gives): its mAP, 2AFC said to be skipped; 2AFC
    only: its scores; neither (a training set alone): one error."""
    from keras_lpips.errors import InputError
    from keras_lpips.evaluation import evaluate_run
    from tests.bapps_fixture import make_tiny_bapps
    from tests.helpers import one_error_line, run_cli

    jnd_only = make_tiny_bapps(tmp_path / "jnd", n_train=0, n_val=0, n_jnd=4)
    results = evaluate_run(jnd_only, metric=_small_metric(), load_size=32, baselines=False)
    assert set(results["jnd"]) == {"traditional"} and results["counts"] == {"2afc": {}, "jnd": {"traditional": 4}}
    assert results["2afc"] == {} and results["skipped"] == [f"2AFC: no 2afc/val folder in {jnd_only}"]
    cli = run_cli("eval", "--data", jnd_only, "--net", "alex", "--layers", "2", "--backbone-weights", "random",
                  "--load-size", "32", "--no-baselines", "--quiet")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"note: skipped 2AFC: no 2afc/val folder in {jnd_only}" in cli.stderr and "JND mAP (val):" in cli.stdout
    results = evaluate_run(jnd_only, metric=_small_metric(), load_size=32, subsets="traditional", baselines=False)
    assert set(results["jnd"]) == {"traditional"} and results["2afc"] == {}  # subsets restrict JND too

    twoafc_only = make_tiny_bapps(tmp_path / "2afc", n_train=0, n_val=4, n_jnd=0)
    results = evaluate_run(twoafc_only, metric=_small_metric(), load_size=32, baselines=False)
    assert "jnd" not in results and "skipped" not in results and results["counts"]["2afc"] == {"traditional": 4}

    train_only = make_tiny_bapps(tmp_path / "train", n_train=3, n_val=0, n_jnd=0)
    with pytest.raises(InputError, match=f"^No 2afc/val or jnd/val folder in {re.escape(str(train_only))}: nothing to evaluate$"):
        evaluate_run(train_only, metric=_small_metric(), load_size=32)
    cli = run_cli("eval", "--data", train_only, "--net", "alex", "--backbone-weights", "random", "--quiet")
    assert cli.returncode == 2 and "nothing to evaluate" in one_error_line(cli)


def test_distances_compile_once_per_metric_without_retracing_warnings(tiny_bapps, caplog):
    """Each metric's distance functions are made once and traced once, for any batch size (a
    last partial batch included); evaluating metric after metric, as the study does, warns of
    no 'retracing'."""
    import logging

    from keras_lpips.data import list_twoafc
    from keras_lpips.evaluation import distance_functions, evaluate_run
    from keras_lpips.training.frozen import frozen_twoafc_arrays

    metric = _small_metric()
    assert distance_functions(metric) is distance_functions(metric)
    twoafc, pair = distance_functions(metric)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for batch_size in (3, 2):  # 4 triplets and 4 pairs: a partial batch each time
            evaluate_run(tiny_bapps, metric=metric, batch_size=batch_size, load_size=32, baselines=False)
            frozen_twoafc_arrays(metric, list_twoafc(tiny_bapps, "val"), batch_size=batch_size, load_size=32, kind="means")
        assert twoafc.experimental_get_tracing_count() == 1 and pair.experimental_get_tracing_count() == 1
        for seed in range(1, 7):
            evaluate_run(tiny_bapps, metric=_small_metric(seed), batch_size=4, load_size=32, baselines=False)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()], [r.getMessage() for r in caplog.records]


def test_eval_refuses_a_load_size_too_small_for_the_metric(tiny_bapps, tmp_path):
    """A --load-size below the metric's minimum is one line before any image is read, in fit's
    words (one check), for a net, a run's model or an export alike; not the network's own
    refusal from inside the compiled 2AFC function (a traceback)."""
    from keras_lpips.errors import InputError
    from keras_lpips.evaluation import evaluate_run
    from keras_lpips.training.run_config import RunConfig
    from tests.helpers import RANDOM, one_error_line, run_cli

    metric = _small_metric()  # alex, 2 layers
    need = metric.min_input_size
    message = f"load_size {need - 1} is too small for alex with 2 layers (needs >= {need})"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        evaluate_run(tiny_bapps, metric=metric, load_size=need - 1, baselines=False)
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        RunConfig(tiny_bapps, tmp_path / "run", layers=2, load_size=need - 1, backbone_weights="random")
    with pytest.raises(InputError, match=r"^load_size must be an integer from 1 to 4096\. Received: load_size=0$"):
        evaluate_run(tiny_bapps, metric=metric, load_size=0, baselines=False)
    with pytest.raises(InputError, match=r"^load_size must be an integer from 1 to 4096\. Received: load_size=0$"):
        RunConfig(tiny_bapps, tmp_path / "run", load_size=0, lr=0)  # with the other numbers, in their order
    metric.save(tmp_path / "small.keras")
    for given, layers, least in ((["--net", "alex", *RANDOM], 5, 31), (["--model", tmp_path / "small.keras"], 2, need)):
        result = run_cli("eval", "--data", tiny_bapps, *given, "--load-size", str(need - 1), "--quiet")
        assert result.returncode == 2, result.stderr
        assert one_error_line(result) == f"error: load_size {need - 1} is too small for alex with {layers} layers (needs >= {least})"


def test_eval_subsets_restrict_both_sets(tmp_path):
    """--subsets names the subsets of 2AFC and JND alike: JND is scored on those of them it has,
    and skipped (said in "skipped", as a missing set) where it has none; `jnd_subsets` names JND's
    apart. Without a 2AFC set, JND must have each."""
    import shutil

    from keras_lpips.errors import InputError
    from keras_lpips.evaluation import evaluate_run
    from tests.bapps_fixture import make_tiny_bapps
    from tests.helpers import RANDOM, one_error_line, run_cli

    root = make_tiny_bapps(tmp_path / "bapps", n_train=0, n_val=2, n_jnd=2)
    for kind, subset in (("2afc", "cnn"), ("2afc", "superres"), ("jnd", "cnn")):
        shutil.copytree(root / kind / "val" / "traditional", root / kind / "val" / subset)
    metric, options = _small_metric(), dict(load_size=32, baselines=False)
    results = evaluate_run(root, metric=metric, subsets=["cnn"], **options)
    assert list(results["2afc"]) == ["cnn", "all", "mean"] and list(results["jnd"]) == ["cnn"]
    assert results["counts"] == {"2afc": {"cnn": 2}, "jnd": {"cnn": 2}} and "skipped" not in results
    results = evaluate_run(root, metric=metric, subsets=["superres", "traditional"], **options)
    assert list(results["2afc"]) == ["superres", "traditional", "all", "mean"] and list(results["jnd"]) == ["traditional"]
    results = evaluate_run(root, metric=metric, subsets="superres", **options)
    assert "jnd" not in results and "jnd" not in results["counts"]
    assert results["skipped"] == [f"JND: jnd/val in {root} has none of the subsets superres (it has cnn, traditional)"]
    results = evaluate_run(root, metric=metric, subsets="superres", jnd_subsets=["cnn"], **options)
    assert list(results["2afc"]) == ["superres", "all", "mean"] and list(results["jnd"]) == ["cnn"]
    assert set(evaluate_run(root, metric=metric, **options)["jnd"]) == {"cnn", "traditional"}

    cli = run_cli("eval", "--data", root, "--net", "alex", "--layers", "2", *RANDOM, "--load-size", "32",
                  "--no-baselines", "--subsets", "superres", "--json")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "jnd" not in json.loads(cli.stdout) and "note: skipped JND: jnd/val in" in cli.stderr

    shutil.rmtree(root / "2afc")  # JND only: each subset named must be there
    results = evaluate_run(root, metric=metric, subsets="cnn", **options)
    assert list(results["jnd"]) == ["cnn"] and results["skipped"] == [f"2AFC: no 2afc/val folder in {root}"]
    with pytest.raises(InputError, match=r"^Subset jnd/val/superres not found in "):
        evaluate_run(root, metric=metric, subsets=["cnn", "superres"], **options)
    cli = run_cli("eval", "--data", root, "--net", "alex", *RANDOM, "--subsets", "superres", "--quiet")
    assert cli.returncode == 2 and "Subset jnd/val/superres not found" in one_error_line(cli)


@pytest.mark.slow
def test_ctrl_c_during_fit_ends_the_command_at_once(tmp_path):
    """SIGINT while `keras-lpips fit` trains on the tf.data pipeline (tune mode): "interrupted",
    exit 130, within seconds, every time (Python's teardown hung, in about 2 tries of 4 with
    TensorFlow's C++ logging on, as in a shell, destroying the running iterator), and the run
    resumes from its checkpoint."""
    from keras_lpips.data.synth import synthesize
    from tests.helpers import COMMAND, RANDOM

    data = synthesize(tmp_path / "bapps", n_train=400, n_val=20, n_jnd=0, seed=1)
    user_env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}  # as a shell's: it hung there
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        args = ["fit", "--data", data, "--out", out, "--mode", "tune", "--layers", "2", "--load-size", "32",
                "--batch-size", "8", "--epochs", "8", "--decay-epochs", "2", "--deterministic", "--mixed-precision", "off", *RANDOM]  # fmt: skip
        log = tmp_path / f"run{attempt}.log"
        with open(log, "w") as output:  # a file, as a terminal: a pipe's reader must keep up
            process = subprocess.Popen([COMMAND, *map(str, args)], stdout=output, stderr=subprocess.STDOUT, env=user_env)
        deadline = time.monotonic() + 240
        while log.read_text().count("Epoch ") < 4:  # three epochs done: training on the pipeline
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        time.sleep(0.5 * attempt)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"attempt {attempt}: still running 30 s after Ctrl-C")
        assert process.returncode == 130 and log.read_text().strip().splitlines()[-1] == "interrupted", log.read_text()[-2000:]
    resumed = subprocess.run([COMMAND, *map(str, args), "--resume"], capture_output=True, text=True, env=user_env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
