"""The SavedModel's bytes signatures (`serving_bytes`, `rank_bytes`): encoded image files in,
decoded in the graph as `keras-lpips score` reads files (`keras_lpips.encoded_images`).

Through `tf.saved_model.load`, and as clients send them: examples/serving_client.py's REST body
(base64 `{"b64": ...}`) and gRPC request, to the stand-ins of tests/serving_standin.py. On plain
8-bit PNG and JPEG files the served distances equal `score`'s within 1e-5; the decoded pixels
equal `read_image`'s exactly for every encoding TensorFlow decodes.
"""

import io
import json
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_lpips import LPIPS
from keras_lpips.encoded_images import decode_images
from keras_lpips.export import BYTES_SIGNATURES, SIGNATURES, export_savedmodel, load_savedmodel, serving_functions
from keras_lpips.images import read_image
from tests.helpers import run_cli
from tests.test_export import example_module

ROOT = Path(__file__).parent.parent
EXAMPLES = [ROOT / "examples" / f"{name}.png" for name in ("ref", "p0", "p1")]  # 64x64 8-bit RGB PNG


def make_metric(input_range=(0.0, 1.0)):
    return LPIPS(net="vgg", layers=2, input_range=input_range, backbone_weights=None, seed=0, lin_weights="v0.1")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(metric, its .keras file for `score --model`, its SavedModel version directory, the example
    triplet as PNG files and as JPEG files)."""
    root = tmp_path_factory.mktemp("served")
    metric = make_metric()
    metric.save(root / "tiny.keras")
    jpegs = []
    for path in EXAMPLES:
        with Image.open(path) as image:
            image.convert("RGB").save(root / f"{path.stem}.jpg", quality=90)  # 4:2:0, as cameras write
        jpegs.append(root / f"{path.stem}.jpg")
    return metric, root / "tiny.keras", export_savedmodel(metric, root / "lpips"), EXAMPLES, jpegs


def score_distances(keras_file, paths):
    """`keras-lpips score REF A B --model KERAS_FILE --json`'s two distances."""
    result = run_cli("score", *paths, "--model", keras_file, "--json")
    assert result.returncode == 0, result.stderr
    return np.array([pair["distance"] for pair in json.loads(result.stdout)["pairs"]])


def test_bytes_signatures_take_string_batches(served):
    from tensorflow.core.protobuf import saved_model_pb2

    _, _, directory, _, _ = served
    (graph,) = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes()).meta_graphs
    assert set(SIGNATURES) | set(BYTES_SIGNATURES) <= set(graph.signature_def)
    for name, (inputs, outputs) in BYTES_SIGNATURES.items():
        signature = graph.signature_def[name]
        assert set(signature.inputs) == set(inputs) and set(signature.outputs) == set(outputs)
        for tensor in signature.inputs.values():
            assert tensor.dtype == tf.string.as_datatype_enum
            assert tf.TensorShape(tensor.tensor_shape).as_list() == [None]


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_served_bytes_equal_score_on_png_and_jpeg_files(served, kind):
    """The files' own bytes, through tf.saved_model.load and a REST request, give `score`'s numbers."""
    from tests.serving_standin import rest_server

    _, keras_file, directory, pngs, jpegs = served
    paths = pngs if kind == "png" else jpegs
    want = score_distances(keras_file, paths)
    client = example_module("serving_client")
    ref, p0, p1 = ([client.image_bytes(path)] for path in paths)
    assert ref[0] == paths[0].read_bytes()  # sent as stored: no EXIF orientation, a format TF decodes

    signatures = tf.saved_model.load(str(directory)).signatures
    out = signatures["rank_bytes"](ref=tf.constant(ref * 2), p0=tf.constant(p0 + p1), p1=tf.constant(p1 * 2))
    np.testing.assert_allclose(out["d0"].numpy(), [want[0], want[1]], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["p1_preferred"].numpy(), [float(want[1] < want[0]), 0.5])
    pair = signatures["serving_bytes"](img0=tf.constant(ref), img1=tf.constant(p1))
    np.testing.assert_allclose(pair["distance"].numpy(), want[1:], rtol=0, atol=1e-5)

    with rest_server(directory, "lpips") as url:
        outputs = client.rank_rest(client.rest_bytes_body(ref, p0, p1), url)
    np.testing.assert_allclose([outputs["d0"][0], outputs["d1"][0]], want, rtol=0, atol=1e-5)
    assert outputs["p1_preferred"] == [float(want[1] < want[0])]


def test_grpc_bytes_request_against_a_serving_standin(served):
    from tests.serving_standin import grpc_server

    metric, _, directory, pngs, _ = served
    client = example_module("serving_client")
    ref, p0, p1 = ([path.read_bytes()] for path in pngs)
    request = client.grpc_request(ref, p0, p1, encoded=True)
    assert request.model_spec.signature_name == "rank_bytes"
    with grpc_server(directory, "lpips") as address:
        outputs = client.rank_grpc(request, address)
    images = [read_image(path)[None] for path in pngs]
    want = [float(metric([images[0], images[k]])[0]) for k in (1, 2)]
    np.testing.assert_allclose([outputs["d0"][0], outputs["d1"][0]], want, rtol=0, atol=1e-5)


def test_bytes_signatures_scale_to_the_metrics_input_range(tmp_path):
    metric = make_metric(input_range=(0.0, 255.0))
    signature = tf.saved_model.load(str(export_savedmodel(metric, tmp_path / "lpips"))).signatures["serving_bytes"]
    got = signature(img0=tf.constant([EXAMPLES[0].read_bytes()]), img1=tf.constant([EXAMPLES[1].read_bytes()]))
    want = metric([read_image(EXAMPLES[0])[None] * 255.0, read_image(EXAMPLES[1])[None] * 255.0])
    np.testing.assert_allclose(got["distance"].numpy(), np.asarray(want), rtol=0, atol=1e-5)


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encodings():
    """(name, bytes) of one 37x45 picture in every encoding the bytes signatures decode."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    image, gray = Image.fromarray(rgb), Image.fromarray(rgb[..., 0])
    palette = image.convert("P")
    yield "png-rgb", encoded(image, "PNG")
    yield "png-gray", encoded(gray, "PNG")
    yield "png-rgba", encoded(Image.fromarray(np.dstack([rgb, rgb[..., 0]])), "PNG")
    yield "png-gray-alpha", encoded(image.convert("LA"), "PNG")
    yield "png-palette-transparent", encoded(palette, "PNG", transparency=3)
    yield "png-1-bit", encoded(gray.convert("1"), "PNG")
    yield "png-4-bit-gray", encoded(gray, "PNG", bits=4)
    yield "png-16-bit-gray", encoded(Image.fromarray(rng.integers(0, 65536, (37, 45), dtype=np.uint16)), "PNG")
    for channels in (2, 3, 4):  # 16-bit gray+alpha, RGB, RGBA: Pillow reads their high bytes
        yield f"png-16-bit-{channels}", tf.io.encode_png(rng.integers(0, 65536, (37, 45, channels), dtype=np.uint16)).numpy()
    yield "jpeg-rgb", encoded(image, "JPEG", quality=90)
    yield "jpeg-4:4:4-progressive", encoded(image, "JPEG", quality=95, subsampling=0, progressive=True)
    yield "jpeg-gray", encoded(gray, "JPEG")
    yield "jpeg-cmyk", encoded(image.convert("CMYK"), "JPEG")
    yield "bmp", encoded(image, "BMP")
    yield "gif", encoded(palette, "GIF")


@pytest.mark.parametrize("name,data", list(encodings()), ids=[name for name, _ in encodings()])
def test_decoded_pixels_are_read_images(tmp_path, name, data):
    (tmp_path / "image").write_bytes(data)
    want = read_image(tmp_path / "image")
    np.testing.assert_array_equal(decode_images(tf.constant([data, data])).numpy(), np.stack([want, want]))


def test_exif_orientation_is_left_to_the_client(tmp_path):
    """The graph decodes pixels as stored; `score` turns them upright first. The example client
    sends such a file re-encoded upright (PNG), which then decodes to `read_image`'s pixels."""
    client = example_module("serving_client")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "turned.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(path, exif=exif.tobytes())
    upright = read_image(path)
    assert upright.shape == (45, 37, 3)
    assert decode_images(tf.constant([path.read_bytes()])).shape == (1, 37, 45, 3)
    sent = client.image_bytes(path)
    assert sent.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_images(tf.constant([sent])).numpy()[0], upright)


def test_bad_requests_are_refused_with_a_reason(served):
    from tests.serving_standin import rest_server

    _, _, directory, pngs, _ = served
    client = example_module("serving_client")
    small = encoded(Image.new("RGB", (32, 32)), "PNG")
    ref, p0 = pngs[0].read_bytes(), pngs[1].read_bytes()
    cases = {
        "The images of one request must have one size": ([ref, small], [p0, small], [p0, small]),
        "Unknown image file format": ([b"not an image"], [p0], [p0]),
        "ref is empty: a request needs at least one image": ([], [], []),
    }
    with rest_server(directory, "lpips") as url:
        for message, images in cases.items():
            with pytest.raises(urllib.error.HTTPError) as refused:
                client.rank_rest(client.rest_bytes_body(*images), url)
            assert refused.value.code == 400 and message in json.load(refused.value)["error"]


def test_exports_without_the_bytes_signatures_still_load(tmp_path):
    """An export from before the bytes signatures (the float ones only) loads and scores."""
    metric = make_metric()
    module, functions = serving_functions(metric)
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={name: functions[name] for name in SIGNATURES})
    old = load_savedmodel(tmp_path)
    images = [read_image(path)[None] for path in EXAMPLES[:2]]
    np.testing.assert_allclose(np.asarray(old(images)), np.asarray(metric(images)), rtol=0, atol=1e-5)


def test_docs_show_the_rest_body_sizes_of_the_example_triplet():
    """docs/serving.md's figures: the 64x64 example triplet as floats in JSON, and as its PNG files."""
    client = example_module("serving_client")
    floats = client.rest_body(*(client.load_image(path) for path in EXAMPLES))
    files = client.rest_bytes_body(*([client.image_bytes(path)] for path in EXAMPLES))
    text = (ROOT / "docs" / "serving.md").read_text()
    sizes = [f"{len(body.encode()) / 1000:.0f} KB" for body in (floats, files)]
    assert all(re.search(rf"\b{size}\b", text) for size in sizes), f"docs/serving.md should give {sizes}"
