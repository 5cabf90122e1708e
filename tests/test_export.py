"""Exported models (TF Serving SavedModel, TFLite) against the Keras metric they came from.

Every path a served model is called through (tf.saved_model.load, saved_model_cli,
the TF1 session loader TF Serving's C++ side mirrors, REST and gRPC request
bodies, the TFLite interpreter, the CLI) must give the Keras model's numbers, on
batch and image sizes that no export saw (exports trace with unknown shapes).
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_lpips import InputError, LPIPS
from keras_lpips.export import BYTES_SIGNATURES, SIGNATURES, ExportedMetric, export_savedmodel, export_tflite, load_savedmodel
from keras_lpips.pairwise import distance_matrix
from tests.helpers import one_error_line, run_cli

ROOT = Path(__file__).parent.parent

# The acceptance: alex and vgg. vgg keeps two layers (the same code path,
# far faster to convert); the two input ranges check the [0, 1] -> input_range step.
NETS = {
    "alex": dict(net="alex", input_range=(-1.0, 1.0)),
    "vgg": dict(net="vgg", layers=2, input_range=(0.0, 255.0)),
}
# TFLite tolerances: relative to each distance, and to the largest value of a map. Measured
# here (worst of alex/vgg): float32 3.3e-7 absolute; fp16 1.4e-4 (distances), 4.3e-4 (maps);
# dynamic-range int8 weights 3.0e-3 (distances), 1.0e-2 (maps).
TFLITE_RTOL = {"none": None, "fp16": 1e-2, "dynamic": 5e-2}


def make_metric(net, **overrides):
    return LPIPS(**{**NETS[net], **overrides}, backbone_weights=None, seed=0, lin_weights="v0.1")


def example_module(name):
    """examples/<name>.py, the code the README shows, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def signature_inputs():
    """Inputs of every signature, in [0, 1]: a batch of 3 at 37x45 (with a tie,
    p1 = ref and p0 = ref in the rank triplets), 1 at 64x64 and 2 at 48x80."""
    rng = np.random.default_rng(0)
    cases = []
    for n, h, w in [(3, 37, 45), (1, 64, 64), (2, 48, 80)]:
        ref, p0, p1 = (rng.random((n, h, w, 3), dtype=np.float32) for _ in range(3))
        if n == 3:
            p1[0], p1[1], p0[2] = p0[0], ref[1], ref[2]
        pair = {"img0": ref, "img1": p0}
        cases.append({"serving_default": pair, "rank": {"ref": ref, "p0": p0, "p1": p1}, "spatial": pair, "embed": {"images": ref}})
    return cases


def keras_outputs(metric, inputs):
    """What each signature must return, from the Keras model on images mapped to its input_range."""
    low, high = metric.input_range
    pair = [inputs["serving_default"][k] * (high - low) + low for k in ("img0", "img1")]
    ref, p0, p1 = (inputs["rank"][k] * (high - low) + low for k in ("ref", "p0", "p1"))
    d0, d1 = np.asarray(metric([ref, p0])), np.asarray(metric([ref, p1]))
    return {
        "serving_default": {"distance": np.asarray(metric(pair))},
        "rank": {"d0": d0, "d1": d1, "p1_preferred": np.where(d1 < d0, 1.0, np.where(d1 == d0, 0.5, 0.0))},
        "spatial": {"map": np.asarray(metric.spatial_map(pair))},
        "embed": {"embedding": np.asarray(metric.embed(ref))},
    }


def assert_outputs_close(got, expected, rtol=None):
    """Verdicts equal; values within 1e-5, or within `rtol` of each distance and of the map's (or
    embedding's) maximum."""
    assert set(got) == set(expected)
    for name, want in expected.items():
        have = np.asarray(got[name])
        assert have.shape == want.shape, name
        if name == "p1_preferred":
            np.testing.assert_array_equal(have, want)
        elif rtol is None:
            np.testing.assert_allclose(have, want, rtol=0, atol=1e-5, err_msg=name)
        elif name in ("map", "embedding"):
            np.testing.assert_allclose(have, want, rtol=0, atol=rtol * np.abs(want).max(), err_msg=name)
        else:
            np.testing.assert_allclose(have, want, rtol=rtol, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module", params=[pytest.param("alex", marks=pytest.mark.slow), "vgg"])
def exported(request, tmp_path_factory):
    """(metric, SavedModel version directory, [(inputs, expected outputs)]) for one net. The fast
    tier exports vgg (2 layers: the cheaper conversion); the full suite alex too."""
    metric = make_metric(request.param)
    directory = export_savedmodel(metric, tmp_path_factory.mktemp(request.param) / "lpips")
    return metric, directory, [(inputs, keras_outputs(metric, inputs)) for inputs in signature_inputs()]


def test_rank_inputs_have_the_intended_verdicts(exported):
    _, _, cases = exported
    np.testing.assert_array_equal(cases[0][1]["rank"]["p1_preferred"], [0.5, 1.0, 0.0])


def test_savedmodel_has_serving_layout_and_dynamic_float_signatures(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    _, directory, _ = exported
    assert [p.name for p in directory.parent.iterdir()] == ["1"]  # nothing left of the staging directory
    assert (directory / "saved_model.pb").is_file() and (directory / "variables").is_dir()
    saved = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    (graph,) = saved.meta_graphs
    assert list(graph.meta_info_def.tags) == ["serve"]
    for name, (inputs, outputs) in SIGNATURES.items():
        signature = graph.signature_def[name]
        assert set(signature.inputs) == set(inputs) and set(signature.outputs) == set(outputs)
        for tensor in signature.inputs.values():
            assert tensor.dtype == tf.float32.as_datatype_enum
            assert tf.TensorShape(tensor.tensor_shape).as_list() == [None, None, None, 3]


# Each signature on a batch of 1x1 images (too small for any net); a crashing kernel kills
# the child, not the test run.
TOO_SMALL_CHILD = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
small = np.full((1, 1, 1, 3), 0.5, np.float32)
png = tf.io.encode_png(tf.cast(small[0] * 255, tf.uint8))[None]
calls = {
    "serving_default": dict(img0=small, img1=small), "spatial": dict(img0=small, img1=small),
    "rank": dict(ref=small, p0=small, p1=small), "embed": dict(images=small),
    "serving_bytes": dict(img0=png, img1=png), "rank_bytes": dict(ref=png, p0=png, p1=png),
}
for name, inputs in calls.items():
    try:
        loaded.signatures[name](**inputs)
        print(name, "ran")
    except tf.errors.InvalidArgumentError as error:
        print(name, "too small" if "are too small for this network" in error.message else error.message)
"""


def test_every_savedmodel_signature_refuses_images_too_small_instead_of_crashing(exported):
    _, directory, _ = exported
    child = subprocess.run([sys.executable, "-c", TOO_SMALL_CHILD, str(directory)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    verdicts = dict(line.split(" ", 1) for line in child.stdout.strip().splitlines() if " " in line)
    assert verdicts == {name: "too small" for name in [*SIGNATURES, *BYTES_SIGNATURES]}, child.stdout


def test_savedmodel_signatures_match_keras(exported):
    _, directory, cases = exported
    loaded = tf.saved_model.load(str(directory))
    assert set(loaded.signatures) == set(SIGNATURES) | set(BYTES_SIGNATURES)  # bytes ones: tests/test_serving_bytes.py
    for inputs, expected in cases:
        for name in SIGNATURES:
            signature = loaded.signatures[name]
            assert_outputs_close(signature(**{k: tf.constant(v) for k, v in inputs[name].items()}), expected[name])


# saved_model_cli runs one signature a call (a process of its own, several seconds each): two
# sizes, two signatures (the second in the full suite only); the TF1 session loader below runs
# every signature on every case.
CLI_RUNS = [(0, "rank"), pytest.param(2, "serving_default", marks=pytest.mark.slow)]


@pytest.mark.parametrize("case,signature", CLI_RUNS)
def test_saved_model_cli_run_matches_keras(exported, tmp_path, case, signature):
    """saved_model_cli loads the model through the C++ SavedModel loader, as TF Serving does."""
    _, directory, cases = exported
    cli = Path(sys.executable).with_name("saved_model_cli")
    inputs, expected = cases[case]
    args = []
    for key, value in inputs[signature].items():
        np.save(tmp_path / f"{key}.npy", value)
        args.append(f"{key}={tmp_path / f'{key}.npy'}")
    out = tmp_path / signature
    subprocess.run(
        [str(cli), "run", "--dir", str(directory), "--tag_set", "serve", "--signature_def", signature,
         "--inputs", ";".join(args), "--outdir", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    got = {name: np.load(out / f"{name}.npy") for name in SIGNATURES[signature][1]}
    assert_outputs_close(got, expected[signature])


def test_tf1_session_loader_feeds_signature_tensor_names(exported):
    _, directory, cases = exported
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(directory))
        for inputs, expected in cases:
            for name, signature in graph.signature_def.items():
                if name not in SIGNATURES:
                    continue
                feed = {signature.inputs[k].name: v for k, v in inputs[name].items()}
                fetch = {k: t.name for k, t in signature.outputs.items()}
                assert_outputs_close(session.run(fetch, feed), expected[name])


def test_rest_client_body_and_curl_against_a_serving_standin(exported, tmp_path):
    """examples/serving_client.py's REST body (the README's), posted by its client and by the
    README's curl command to a stand-in for TF Serving's REST API (tests/serving_standin.py)."""
    from tests.serving_standin import rest_server

    client = example_module("serving_client")
    _, directory, cases = exported
    inputs, expected = cases[0]
    body = client.rest_body(**inputs["rank"])
    request = json.loads(body)
    assert request["signature_name"] == "rank" and set(request["inputs"]) == set(SIGNATURES["rank"][0])
    with rest_server(directory, "lpips") as url:
        assert_outputs_close(client.rank_rest(body, url), expected["rank"])
        if shutil.which("curl"):
            (tmp_path / "body.json").write_text(body)
            curl = ["curl", "-s", "-d", "@body.json", f"{url}/v1/models/lpips:predict"]
            answer = subprocess.run(curl, cwd=tmp_path, check=True, capture_output=True, text=True).stdout
            assert_outputs_close(json.loads(answer)["outputs"], expected["rank"])


def test_grpc_client_request_against_the_signature_and_a_serving_standin(exported):
    """examples/serving_client.py's PredictRequest (the README's): checked against the saved
    signature_def, as TF Serving checks it, then sent by its client over gRPC to a stand-in
    PredictionService (tests/serving_standin.py)."""
    from tests.serving_standin import grpc_server
    from tensorflow.core.protobuf import saved_model_pb2

    client = example_module("serving_client")
    _, directory, cases = exported
    inputs, expected = cases[2]
    request = client.grpc_request(**inputs["rank"])
    assert request.model_spec.name == "lpips"
    saved = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    signature = saved.meta_graphs[0].signature_def[request.model_spec.signature_name]
    assert set(request.inputs) == set(signature.inputs)
    for key, tensor in request.inputs.items():
        assert tensor.dtype == signature.inputs[key].dtype
        served_shape = tf.TensorShape(signature.inputs[key].tensor_shape)
        assert served_shape.is_compatible_with(tf.TensorShape(tensor.tensor_shape))
    with grpc_server(directory, "lpips") as address:
        assert_outputs_close(client.rank_grpc(request, address), expected["rank"])


def test_readme_shows_the_tested_client_code():
    """Python blocks of the README that use TF Serving's or LiteRT's APIs are excerpts of the
    example files the tests above run."""
    readme = (ROOT / "docs" / "serving.md").read_text()
    sources = "".join((ROOT / "examples" / f"{name}.py").read_text() for name in ("serving_client", "tflite_rank"))
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if re.search(r"predict_pb2|ai_edge_litert|rest_body", b)]
    assert blocks, "the Serving section shows no client code"
    for block in blocks:
        assert block in sources, f"README block not in examples/serving_client.py or tflite_rank.py:\n{block}"


def tflite_interpreter(path):
    from ai_edge_litert.interpreter import Interpreter  # LiteRT, as deployments run it (in the test extra)

    return Interpreter(model_path=str(path))


@pytest.mark.parametrize("quantize", list(TFLITE_RTOL))
def test_tflite_signatures_match_keras(exported, tmp_path, quantize):
    metric, _, cases = exported
    path = export_tflite(metric, tmp_path / "lpips.tflite", quantize=quantize)
    assert [p.name for p in tmp_path.iterdir()] == ["lpips.tflite"]
    interpreter = tflite_interpreter(path)
    listed = {name: {"inputs": sorted(i), "outputs": sorted(o)} for name, (i, o) in SIGNATURES.items()}
    assert interpreter.get_signature_list() == listed
    for inputs, expected in cases:
        for name in SIGNATURES:
            got, want = dict(interpreter.get_signature_runner(name)(**inputs[name])), dict(expected[name])
            if quantize == "dynamic" and name == "rank":  # int8 weights may flip a close verdict
                del got["p1_preferred"], want["p1_preferred"]
            assert_outputs_close(got, want, rtol=TFLITE_RTOL[quantize])
    if quantize == "none":  # the README's LiteRT snippet
        inputs, expected = cases[1]
        assert_outputs_close(example_module("tflite_rank").rank(path, **inputs["rank"]), expected["rank"])


def test_tflite_gives_nan_where_the_savedmodel_refuses(exported, tmp_path):
    # TFLite drops assertions: a refused input (too small, outside [0, 1], NaN) turns what it
    # enters NaN (p1_preferred included) instead of a number that is no distance.
    metric, _, _ = exported
    interpreter = tflite_interpreter(export_tflite(metric, tmp_path / "lpips.tflite"))
    good = np.full((1, 64, 64, 3), 0.5, np.float32)
    refused = {"too small": np.full((1, 1, 1, 3), 0.5, np.float32), "outside [0, 1]": good + 2.0, "NaN": good * np.nan}
    for why, bad in refused.items():
        inputs = {"serving_default": dict(img0=bad, img1=bad), "spatial": dict(img0=bad, img1=bad), "embed": dict(images=bad)}
        inputs["rank"] = dict(ref=bad, p0=bad, p1=bad) if why == "too small" else dict(ref=good, p0=good, p1=bad)
        for name, signature_inputs in inputs.items():
            outputs = interpreter.get_signature_runner(name)(**signature_inputs)
            if name == "rank" and why != "too small":
                del outputs["d0"]  # d(ref, p0) of two good images is a distance
            for output, value in outputs.items():
                assert np.isnan(value).all(), (why, name, output, value)


def test_exports_are_atomic_and_refuse_to_overwrite(tmp_path, monkeypatch):
    import keras_lpips.export as export_module

    def broken_save(metric, path, max_pixels=None):
        Path(path).mkdir()
        (Path(path) / "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt

    def fake_save(metric, path, max_pixels=None):
        Path(path).mkdir()
        (Path(path) / "saved_model.pb").write_bytes(b"new")

    metric = types.SimpleNamespace(net="alex", weights=[])  # a stand-in of no size: _save is replaced
    base = tmp_path / "lpips"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        export_savedmodel(metric, base, 1)
    monkeypatch.setattr(export_module, "_save", broken_save)
    for version, overwrite in [(2, False), (1, True)]:
        with pytest.raises(KeyboardInterrupt):
            export_savedmodel(metric, base, version, overwrite=overwrite)
    assert [p.name for p in base.iterdir()] == ["1"] and (base / "1" / "saved_model.pb").read_bytes() == b"old"
    with pytest.raises(KeyboardInterrupt):
        export_tflite(metric, tmp_path / "lpips.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lpips"]

    monkeypatch.setattr(export_module, "_save", fake_save)
    export_savedmodel(metric, base, 1, overwrite=True)
    assert [p.name for p in base.iterdir()] == ["1"] and (base / "1" / "saved_model.pb").read_bytes() == b"new"
    (tmp_path / "lpips.tflite").write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        export_tflite(metric, tmp_path / "lpips.tflite")


@pytest.mark.parametrize("version", [-1, "1", True, 1.0, np.int64(-1)])
def test_savedmodel_version_must_be_an_integer(tmp_path, version):
    message = f"version must be an integer >= 0 (a TF Serving version). Received: version={version!r}"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        export_savedmodel(None, tmp_path, version)


def test_savedmodel_version_and_max_pixels_may_be_numpy_integers(tmp_path, monkeypatch):
    import keras_lpips.export as export_module

    saved = []
    monkeypatch.setattr(export_module, "_save", lambda metric, path, max_pixels=None: saved.append((Path(path).mkdir(), max_pixels)))
    metric = types.SimpleNamespace(net="alex", weights=[])  # a stand-in of no size: _save is replaced
    assert export_savedmodel(metric, tmp_path / "m", np.int64(3), max_pixels=np.uint32(4096)) == tmp_path / "m" / "3"
    assert saved == [(None, 4096)]


def test_tflite_quantize_must_be_known(tmp_path):
    with pytest.raises(InputError, match="quantize must be one of none, fp16, dynamic"):
        export_tflite(None, tmp_path / "lpips.tflite", quantize="int4")


def test_cli_exports_a_keras_file_as_savedmodel(tmp_path):
    metric = make_metric("vgg", layers=1, input_range=(0.0, 1.0))
    metric.save(tmp_path / "tiny.keras")
    out = tmp_path / "served"
    args = ["export", "--format", "savedmodel", "--out", out, "--model", tmp_path / "tiny.keras"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"vgg LPIPS v0.1 (lpips) SavedModel written to {out / '1'}" in result.stdout
    inputs = signature_inputs()[1]
    signature = tf.saved_model.load(str(out / "1")).signatures["serving_default"]
    assert_outputs_close(signature(**inputs["serving_default"]), keras_outputs(metric, inputs)["serving_default"])

    result = run_cli(*args)
    assert result.returncode == 2 and "already exists" in one_error_line(result)

    tflite = tmp_path / "from-savedmodel.tflite"  # converted from the export, not traced again
    result = run_cli("export", "--format", "tflite", "--out", tflite, "--model", out)
    assert result.returncode == 0, result.stderr
    got = tflite_interpreter(tflite).get_signature_runner("serving_default")(**inputs["serving_default"])
    assert_outputs_close(got, keras_outputs(metric, inputs)["serving_default"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--format", "torchscript"], "Invalid value for '--format': 'torchscript' is not one of 'savedmodel', 'tflite', 'onnx'"),
        (["--format", "savedmodel", "--quantize", "fp16"], "--quantize applies to --format tflite only"),
        (["--format", "tflite", "--quantize", "int4"], "Invalid value for '--quantize': 'int4' is not one of 'none', 'fp16', 'dynamic'"),
        (["--format", "savedmodel", "--model-version", "-1"], "Invalid value for '--model-version': Input should be greater than or equal to 0"),
    ],
)
def test_cli_rejects_bad_choices_before_building_the_metric(tmp_path, args, message):
    result = run_cli("export", "--out", tmp_path / "x", *args)
    assert result.returncode == 2 and message in one_error_line(result)
    assert not (tmp_path / "x").exists()


def test_cli_help_lists_runnable_examples():
    result = run_cli("export", "--help")
    assert result.returncode == 0
    assert "keras-lpips export --format tflite --out lpips.tflite --quantize fp16" in result.stdout


def test_load_savedmodel_scores_like_keras(exported):
    """An export loaded back (`score --model`, `matrix --model`, `eval --model`) gives the
    Keras model's distances, maps and matrices, and refuses images too small for it."""
    metric, directory, cases = exported
    served = load_savedmodel(directory.parent)
    assert isinstance(served, ExportedMetric) and served.directory == directory
    described = (served.net, served.version, served.distance, served.layers_kept, served.min_input_size)
    assert described == (metric.net, metric.version, metric.distance, metric.layers_kept, metric.min_input_size)
    inputs, expected = cases[2]
    pair = [inputs["serving_default"][k] for k in ("img0", "img1")]
    assert_outputs_close({"distance": served(pair)}, expected["serving_default"])
    assert_outputs_close({"map": served.spatial_map(pair)}, expected["spatial"])
    images = np.concatenate(pair)
    low, high = metric.input_range
    want = distance_matrix(metric, images * (high - low) + low)
    np.testing.assert_allclose(distance_matrix(served, images), want, rtol=0, atol=1e-5)
    small = images[:, : served.min_input_size - 1, : served.min_input_size - 1]
    with pytest.raises(InputError, match="too small for this network"):
        served([small, small])


def test_load_savedmodel_picks_the_highest_version_and_refuses_others(exported, tmp_path):
    _, directory, _ = exported
    for version in ("1", "2"):
        shutil.copytree(directory, tmp_path / "base" / version)
    (tmp_path / "base" / "10").mkdir()  # no saved_model.pb: TF Serving would not load it either
    assert load_savedmodel(tmp_path / "base").directory == tmp_path / "base" / "2"
    with pytest.raises(InputError, match="holds no saved_model.pb"):
        load_savedmodel(tmp_path / "base" / "10")
    run = tmp_path / "run"  # a fit run folder, and a .keras file: Keras models, to export first
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK")
    for keras_model in (run, run / "model.keras"):
        with pytest.raises(InputError, match=r"is a Keras model \(model.keras\), not a SavedModel: export it first"):
            load_savedmodel(keras_model)

    module = tf.Module()
    module.f = tf.function(lambda x: {"y": x}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"serving_default": module.f})
    with pytest.raises(InputError, match="lacks the signature.* rank, spatial: not a keras-lpips export"):
        load_savedmodel(tmp_path / "other")


def test_evaluate_run_scores_an_export_like_its_keras_model(exported, tiny_bapps):
    """`eval --model <SavedModel>`: 2AFC and JND through the export equal the Keras model's."""
    from keras_lpips.evaluation import evaluate_run

    metric, directory, _ = exported
    kwargs = dict(baselines=False, batch_size=3, load_size=48)  # 4 triplets: a full batch and a partial one
    served = evaluate_run(tiny_bapps, metric=load_savedmodel(directory), **kwargs)
    keras_model = evaluate_run(tiny_bapps, metric=metric, **kwargs)
    assert served["2afc"] == keras_model["2afc"] and served["counts"] == keras_model["counts"]
    assert served["jnd"].keys() == keras_model["jnd"].keys()
    for subset in served["jnd"]:
        assert served["jnd"][subset]["model"] == pytest.approx(keras_model["jnd"][subset]["model"], abs=1e-6)
