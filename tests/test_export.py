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
from keras_lpips.export import BYTES_SIGNATURES, SIGNATURES, export_savedmodel, export_tflite
from keras_lpips.exported_metric import ExportedMetric, load_savedmodel
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


def refused_requests(min_size):
    """(why, {signature: inputs}) of requests a SavedModel refuses, as a batch of two: the second
    item bad in the last input of each signature (in ref as well as p1 for `rank`), the first
    good; or, too small, the whole request (images of one size share it)."""
    good = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    for why, spoil in [("outside [0, 1]", lambda x: x + 2.0), ("8-bit values", lambda x: x * 255), ("NaN", lambda x: x * np.nan)]:
        bad = np.concatenate([good[:1], spoil(good[1:])])
        yield why, {
            "serving_default": dict(img0=good, img1=bad), "spatial": dict(img0=good, img1=bad), "embed": dict(images=bad),
            "rank": dict(ref=good, p0=good[::-1], p1=bad), "rank (ref)": dict(ref=bad, p0=good[::-1], p1=good),
        }  # fmt: skip
    small = good[:, : min_size - 1, : min_size - 1]
    yield "too small", {"serving_default": dict(img0=small, img1=small), "spatial": dict(img0=small, img1=small),
                        "embed": dict(images=small), "rank": dict(ref=small, p0=small, p1=small)}  # fmt: skip


def assert_refused_items_are_nan(run, min_size, rtol=None):
    """`run(signature, **inputs)` (an exported file's signatures) on `refused_requests`: each
    refused item is NaN in every output, the others equal to what the good batch gives."""
    for why, requests in refused_requests(min_size):
        for name, inputs in requests.items():
            signature = name.split()[0]
            outputs = run(signature, **inputs)
            refused = slice(None) if why == "too small" else slice(1, None)
            for output, value in outputs.items():
                assert np.isnan(value[refused]).all(), (why, name, output, value)
            if why != "too small":  # the good item keeps its value, undisturbed by the bad one
                good = run(signature, **{k: np.concatenate([v[:1]] * 2) for k, v in inputs.items()})
                assert_outputs_close({k: v[:1] for k, v in outputs.items()}, {k: v[:1] for k, v in good.items()}, rtol)


@pytest.mark.parametrize("quantize", [pytest.param("none", marks=pytest.mark.slow), pytest.param("fp16", marks=pytest.mark.slow), "dynamic"])
def test_tflite_gives_nan_where_the_savedmodel_refuses(exported, tmp_path, quantize):
    """TFLite drops assertions: an item the SavedModel refuses (too small, outside [0, 1], NaN) is
    NaN in every output of every signature (p1_preferred included), never a number, whatever the
    quantization (int8 kernels quantize a NaN input to a number), and the other items of its
    batch keep their values."""
    metric, _, _ = exported
    interpreter = tflite_interpreter(export_tflite(metric, tmp_path / "lpips.tflite", quantize=quantize))

    def run(signature, **inputs):
        return interpreter.get_signature_runner(signature)(**inputs)

    assert_refused_items_are_nan(run, metric.min_input_size, TFLITE_RTOL[quantize])


def test_onnx_gives_nan_where_the_savedmodel_refuses_item_by_item(tmp_path):
    """As TFLite: the ONNX graph (serving_default) is NaN at the refused items only."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("tf2onnx", reason="tf2onnx (the onnx extra) is not installed")
    from keras_lpips.export_onnx import export_onnx

    metric = make_metric("vgg")
    session = ort.InferenceSession(str(export_onnx(metric, tmp_path / "lpips.onnx")), providers=["CPUExecutionProvider"])

    def run(signature, **inputs):
        return {"distance": session.run(None, inputs)[0]} if signature == "serving_default" else {}

    assert_refused_items_are_nan(run, metric.min_input_size)


def serving_docs():
    """docs/serving.md with its line breaks as spaces: a message it quotes reads whole."""
    return " ".join((ROOT / "docs" / "serving.md").read_text().split())


def assertion_message(error):
    """The message of a graph assertion's `InvalidArgumentError`."""
    (message,) = re.findall(r"assertion failed: \[(.*)\]", error.message)
    return message


def test_savedmodel_range_refusal_speaks_to_the_client(exported):
    """A client sends [0, 1] images and cannot pass input_range: the message names the values it
    sent and the signature's range, whatever the metric's own input_range (as docs/serving.md
    quotes it)."""
    _, directory, _ = exported
    signatures = tf.saved_model.load(str(directory)).signatures
    good = np.full((1, 64, 64, 3), 0.5, np.float32)
    good[0, 0, 0, :2] = 0.0, 1.0
    for name, inputs in [("serving_default", dict(img0=good * 255, img1=good)), ("spatial", dict(img0=good * 255, img1=good)),
                         ("embed", dict(images=good * 255)), ("rank", dict(ref=good, p0=good, p1=good * 255))]:  # fmt: skip
        with pytest.raises(tf.errors.InvalidArgumentError) as refused:
            signatures[name](**inputs)
        which = list(inputs)[-1] if name == "rank" else list(inputs)[0]
        message = f"{which} has values in [0, 255]; this signature takes images in [0, 1] (8-bit pixels divided by 255)"
        assert assertion_message(refused.value) == message
    assert "`img0 has values in [0, 255]; this signature takes images in [0, 1] (8-bit pixels divided by 255)`" in serving_docs()


def test_savedmodel_refuses_batches_of_two_sizes_with_its_message(exported):
    """Batches of 2 and 3: the assertion's message, not the error of an op that combines them."""
    _, directory, _ = exported
    signature = tf.saved_model.load(str(directory)).signatures["serving_default"]
    images = np.full((3, 64, 64, 3), 0.5, np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        signature(img0=images[:2], img1=images)
    want = "The two images must have the same shape. Received img0 of shape (2, 64, 64, 3) and img1 of shape (3, 64, 64, 3)"
    assert assertion_message(refused.value) == want


def test_serving_docs_quote_the_pixel_limit_message_literally():
    """`--max-pixels 4194304` and two 2048 x 2048 images: the refusal docs/serving.md quotes."""
    from keras_lpips.encoded_images import decode_images

    png = tf.io.encode_png(tf.zeros((2048, 2048, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        tf.function(lambda encoded: decode_images(encoded, "img0", 4194304))(tf.stack([png, png]))
    assert f"`{assertion_message(refused.value)}`" in serving_docs()


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


def test_an_output_below_a_file_is_refused_before_any_work(tmp_path):
    """A folder an export would create is a file (at any level above the output): one line naming
    it, before any weights load (`files.check_output`), not "already exists" or "File exists"."""
    from keras_lpips.export_onnx import export_onnx
    from keras_lpips.files import check_output

    afile = tmp_path / "afile"
    afile.write_text("")

    def refused(path):
        return f"^{re.escape(f'Cannot write {path}: {afile} is not a folder')}$"

    for path in (afile / "x.tflite", afile / "sub" / "x.tflite"):
        for overwrite in (False, True):
            with pytest.raises(InputError, match=refused(path)):
                export_tflite(None, path, overwrite=overwrite)  # no metric: refused before it is used
        if importlib.util.find_spec("tf2onnx"):
            with pytest.raises(InputError, match=refused(path.with_suffix(".onnx"))):
                export_onnx(None, path.with_suffix(".onnx"))
        for kind in ("file", "folder", None):
            with pytest.raises(InputError, match=refused(path)):
                check_output(path, kind=kind)
    with pytest.raises(InputError, match=refused(afile / "models")):
        export_savedmodel(None, afile / "models")
    result = run_cli("export", "--format", "tflite", "--out", afile / "x.tflite", "--overwrite")
    assert result.returncode == 2 and one_error_line(result) == f"error: Cannot write {afile / 'x.tflite'}: {afile} is not a folder"


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


def test_exports_refuse_an_output_not_named_as_their_format_before_any_work(tmp_path):
    """The library decides what an export's output is called, from Python as from the command
    line (`check_export_path`): a .tflite file, a .onnx file (any case), a SavedModel folder not
    named as one of those files. No metric is used: refused before it is."""
    from keras_lpips.export_onnx import export_onnx

    refusals = [
        (lambda: export_tflite(None, tmp_path / "m.onnx"), f"export_tflite writes a .tflite file: name it .tflite. Received: path={tmp_path / 'm.onnx'}"),
        (lambda: export_tflite(None, tmp_path / "m"), f"export_tflite writes a .tflite file: name it .tflite. Received: path={tmp_path / 'm'}"),
        (lambda: export_onnx(None, tmp_path / "m.tflite"), f"export_onnx writes a .onnx file: name it .onnx. Received: path={tmp_path / 'm.tflite'}"),
        (lambda: export_savedmodel(None, tmp_path / "m.TFLite"),
         f"export_savedmodel writes a folder, not a .tflite file: call export_tflite for one, or name a folder. Received: directory={tmp_path / 'm.TFLite'}"),
    ]  # fmt: skip
    for export, message in refusals:
        with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
            export()
    assert list(tmp_path.iterdir()) == []


def test_export_options_apply_to_their_format_only():
    """`check_export_options` and `check_export_path`, the command's checks: each option of one
    format refused with another, in the words the command line rewrites to its flags."""
    from keras_lpips.export import check_export_options, check_export_path

    assert check_export_options("savedmodel") == 1
    assert check_export_options("savedmodel", model_version=3, max_pixels=4096) == 3
    assert check_export_options("tflite", quantize="fp16") == 1
    refusals = [
        (("savedmodel", "fp16"), "quantize= applies to format=tflite only. Received: format=savedmodel quantize=fp16"),
        (("onnx", "dynamic"), "quantize= applies to format=tflite only. Received: format=onnx quantize=dynamic"),
        (("tflite", "none", None, 10), "max_pixels= applies to format=savedmodel only (its bytes signatures). Received: format=tflite"),
        (("onnx", "none", 1), "model_version= applies to format=savedmodel only (its version folder). Received: format=onnx"),
        (("torchscript",), "format must be one of savedmodel, tflite, onnx. Received: format='torchscript'"),
        (("tflite", "int4"), "quantize must be one of none, fp16, dynamic. Received: quantize='int4'"),
    ]  # fmt: skip
    for args, message in refusals:
        with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
            check_export_options(*args)
    check_export_path("tflite", "m.TFLITE")
    message = "format=savedmodel writes a folder, not a .onnx file: pass format=onnx or name a folder. Received: out=m.onnx"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        check_export_path("savedmodel", "m.onnx")


def test_export_refuses_a_model_that_is_a_savedmodel_already(tmp_path):
    from keras_lpips.export import check_export_source

    (tmp_path / "sm" / "1").mkdir(parents=True)
    (tmp_path / "sm" / "1" / "saved_model.pb").write_bytes(b"")
    message = f"model={tmp_path / 'sm'} is already a SavedModel; copy its version folder, or pass a fit run or .keras file"
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        check_export_source("savedmodel", tmp_path / "sm")
    check_export_source("tflite", tmp_path / "sm")  # converted as it is
    check_export_source("savedmodel", None)


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
    Keras model's distances, maps and matrices, and refuses images too small for it, outside
    [0, 1], or an empty batch."""
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
    with pytest.raises(InputError, match=r"img0 has values in \[.*\]; this model takes images in \[0, 1\] only \(8-bit pixels divided by 255\)$"):
        served([pair[0] * 255, pair[1]])  # it has no input_range to pass
    empty = images[:0]
    with pytest.raises(InputError, match=r"^img0 is empty. Received shape \(0, "):
        served([empty, empty])  # which the Keras metric scores, the signatures refuse


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
