"""ONNX export (`keras_lpips.export_onnx`, `keras-lpips export --format onnx`) run in onnxruntime
against the Keras metric: within 1e-5 at two batch sizes and two image sizes, from one file
(dynamic batch and size). Skipped where the `onnx` extra (tf2onnx) or onnxruntime is absent."""

import sys

import numpy as np
import pytest

from keras_lpips import LPIPS, InputError
from keras_lpips.export import export_savedmodel
from keras_lpips.exported_metric import load_savedmodel
from keras_lpips.export_onnx import INPUTS, OUTPUTS, export_onnx
from tests.helpers import one_error_line, run_cli

# Batch and image sizes a single exported file must take: two batch sizes, two image sizes.
CASES = [(1, 64, 64), (3, 37, 45)]


def need_onnx():
    """tf2onnx (to convert) and onnxruntime (to run), or a skip saying which is missing."""
    pytest.importorskip("tf2onnx", reason="tf2onnx (the onnx extra: pip install 'keras-lpips[onnx]') is not installed")
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def make_metric(net):
    layers = {"vgg": 2}.get(net)  # vgg cut to two layers: the same graph, far faster to convert
    return LPIPS(net=net, layers=layers, input_range=(-1.0, 1.0), backbone_weights=None, seed=0, lin_weights="v0.1")


def assert_matches_keras(path, metric):
    """The ONNX file at `path` gives `metric`'s distances on [0, 1] images of every case."""
    ort = need_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(INPUTS)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    for tensor in session.get_inputs():  # batch, height and width dynamic; 3 channels
        assert [isinstance(d, str) for d in tensor.shape] == [True, True, True, False] and tensor.shape[3] == 3
    low, high = metric.input_range
    rng = np.random.default_rng(0)
    for n, h, w in CASES:
        img0, img1 = (rng.random((n, h, w, 3), dtype=np.float32) for _ in range(2))
        (got,) = session.run(None, {"img0": img0, "img1": img1})
        want = np.asarray(metric([img0 * (high - low) + low, img1 * (high - low) + low]))
        assert got.shape == (n,)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("net", ["vgg", pytest.param("alex", marks=pytest.mark.slow), pytest.param("squeeze", marks=pytest.mark.slow)])
def test_onnx_export_matches_keras_at_any_batch_and_size(tmp_path, net):
    need_onnx()
    metric = make_metric(net)
    steps = []
    path = export_onnx(metric, tmp_path / "out" / "lpips.onnx", progress=steps.append)
    assert steps == [1, 1] and [p.name for p in path.parent.iterdir()] == ["lpips.onnx"]
    assert_matches_keras(path, metric)
    with pytest.raises(InputError, match="already exists"):
        export_onnx(metric, path)


# onnxruntime on pairs the SavedModel refuses, in a child process: on an image too small for
# AlexNet its convolution kernel died with SIGFPE before the graph padded such images.
REFUSED_PAIRS_CHILD = """
import sys, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
good = np.full((1, 64, 64, 3), 0.5, np.float32)
for name, bad in {"8x8": good[:, :8, :8], "1x1": good[:, :1, :1], "outside": good + 2, "nan": good * np.nan}.items():
    (distance,) = session.run(None, {"img0": bad, "img1": bad})
    print(name, "nan" if np.isnan(distance).all() else distance, flush=True)
"""


def test_onnx_gives_nan_where_the_savedmodel_refuses(tmp_path):
    import subprocess

    need_onnx()
    path = export_onnx(LPIPS(net="alex", backbone_weights=None, seed=0), tmp_path / "alex.onnx")
    child = subprocess.run([sys.executable, "-c", REFUSED_PAIRS_CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, (child.stdout, child.stderr[-1500:])
    assert child.stdout.split() == ["8x8", "nan", "1x1", "nan", "outside", "nan", "nan", "nan"]


def test_cli_exports_onnx_from_a_keras_file_and_from_a_savedmodel(tmp_path):
    need_onnx()
    metric = LPIPS(net="vgg", layers=1, input_range=(0.0, 1.0), backbone_weights=None, seed=0, lin_weights="v0.1")
    metric.save(tmp_path / "tiny.keras")
    result = run_cli("export", "--format", "onnx", "--out", tmp_path / "tiny.onnx", "--model", tmp_path / "tiny.keras")
    assert result.returncode == 0, result.stderr
    assert "vgg LPIPS v0.1 (lpips) ONNX model (opset 17, " in result.stdout and str(tmp_path / "tiny.onnx") in result.stdout
    assert_matches_keras(tmp_path / "tiny.onnx", metric)

    served = export_savedmodel(metric, tmp_path / "served")  # an export converted as it is, not traced again
    assert_matches_keras(export_onnx(load_savedmodel(served), tmp_path / "from-savedmodel.onnx"), metric)

    result = run_cli("export", "--format", "onnx", "--out", tmp_path / "tiny.onnx", "--quantize", "fp16")
    assert result.returncode == 2 and "--quantize applies to --format tflite only" in one_error_line(result)


def test_onnx_export_without_tf2onnx_says_how_to_install_it(tmp_path, monkeypatch):
    """Runs without the extra too: the message names the extra, before any weights are fetched."""
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx raises ImportError
    with pytest.raises(InputError, match=r"pip install 'keras-lpips\[onnx\]'"):
        export_onnx(None, tmp_path / "lpips.onnx")
    result = run_cli("export", "--format", "onnx", "--out", tmp_path / "lpips.onnx", "--net", "alex")
    assert result.returncode == 2 and "keras-lpips[onnx]" in one_error_line(result)
    assert not (tmp_path / "lpips.onnx").exists()
