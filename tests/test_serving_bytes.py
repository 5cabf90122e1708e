"""The SavedModel's bytes signatures (`serving_bytes`, `rank_bytes`): encoded image files in,
decoded in the graph as `keras-lpips score` reads files (`keras_lpips.encoded_images`).

Through `tf.saved_model.load`, and as clients send them: examples/serving_client.py's REST body
(base64 `{"b64": ...}`) and gRPC request, to the stand-ins of tests/serving_standin.py. On plain
8-bit PNG and JPEG files the served distances equal `score`'s within 1e-5; the decoded pixels
equal `read_image`'s exactly for every encoding decoded there. What is refused is refused from
the header, before anything is decoded, with the reason (decompression bombs, data cut short,
BMPs whose pixels TensorFlow would read wrong, GIF, animated PNG and WebP).
"""

import contextlib
import io
import json
import re
import struct
import subprocess
import sys
import urllib.error
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_lpips import LPIPS, InputError
from keras_lpips.encoded_images import decode_images
from keras_lpips.export import BYTES_SIGNATURES, SIGNATURES, export_savedmodel, serving_functions
from keras_lpips.exported_metric import load_savedmodel
from keras_lpips.images import MAX_PIXELS, read_image
from tests.helpers import RANDOM, closed_port, one_error_line, run_cli

# A small metric for the command line: seeded backbone, two layers.
RANDOM_SMALL = (*RANDOM, "--layers", "2")
from tests.test_export import example_module

ROOT = Path(__file__).parent.parent
EXAMPLES = [ROOT / "examples" / f"{name}.png" for name in ("ref", "p0", "p1")]  # 64x64 8-bit RGB PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


@pytest.mark.parametrize("fmt,options", [("GIF", {}), ("BMP", {"bitmap": "P"}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_the_client_sends_what_the_server_refuses_as_png(served, tmp_path, fmt, options):
    """examples/serving_client.py's image_bytes: a still WebP as stored; GIF, a palette BMP, TIFF
    (refused by the bytes signatures) as the PNG of Pillow's pixels: the server decodes either
    to `read_image`'s pixels."""
    metric, _, directory, pngs, _ = served
    client = example_module("serving_client")
    with Image.open(pngs[1]) as image:
        image = image.convert("RGB").quantize(64).convert("P") if options.pop("bitmap", None) else image.convert("RGB")
        path = tmp_path / f"p.{fmt.lower()}"
        image.save(path, format=fmt, **options)
    sent = client.image_bytes(path)
    assert (sent == path.read_bytes()) == (fmt == "WEBP")
    signature = tf.saved_model.load(str(directory)).signatures["serving_bytes"]
    got = signature(img0=tf.constant([pngs[0].read_bytes()]), img1=tf.constant([sent]))["distance"].numpy()
    want = metric([read_image(pngs[0])[None], read_image(path)[None]])
    np.testing.assert_allclose(got, np.asarray(want), rtol=0, atol=1e-5)


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


def picture():
    """One 37x45 RGB picture (uint8) and its alpha channel."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 45, 3), dtype=np.uint8), rng.integers(0, 256, (37, 45), dtype=np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width, height):
    """A PNG whose IHDR declares width x height (8-bit RGB) and whose IDAT holds a few bytes: all
    the header checks read, without the pixels (which decoding would find missing)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def animated_pngs(rgb):
    """(a 3-frame APNG of `rgb` shifted, as Pillow writes it; a 1-frame APNG of `rgb`, whose
    acTL and fcTL chunks precede the IDAT, which `read_image` reads as a still image)."""
    frames = [Image.fromarray(np.roll(rgb, k, axis=1)) for k in range(3)]
    still = encoded(frames[0], "PNG")
    height, width = rgb.shape[:2]
    control = png_chunk(b"acTL", struct.pack(">II", 1, 0)) + png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 10, 0, 0))
    ihdr_end = len(PNG_SIGNATURE) + 25  # the signature, then IHDR's length, type, 13 bytes and CRC
    return encoded(frames[0], "PNG", save_all=True, append_images=frames[1:]), still[:ihdr_end] + control + still[ihdr_end:]


def bmp(rows, width, height, bits, compression=0, masks=(), info_size=40):
    """A BMP file written by hand (Pillow writes neither bit fields nor top-down rows): `rows`
    the pixel rows as stored, each padded to 4 bytes; `height` negative for top-down rows;
    `masks` the bit fields after a 40-byte info header, or the rest of a larger one (V4: 108)."""
    extra = struct.pack(f"<{len(masks)}I", *masks)
    if info_size == 12:  # OS/2: 16-bit width and height, planes, bits
        info = struct.pack("<IHHHH", 12, width, height, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", info_size, width, height, 1, bits, compression, len(rows), 2835, 2835, 0, 0)
    offset = 14 + len(info) + len(extra)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + extra + rows


def bmp_rows(pixels, top_down=False):
    """The rows of a BMP of `pixels` (H, W, C) stored as they are (BGR or BGRA order wanted)."""
    rows = pixels if top_down else pixels[::-1]
    padding = -rows.shape[1] * rows.shape[2] % 4
    return b"".join(row.tobytes() + b"\0" * padding for row in rows)


def encodings():
    """(name, bytes) of one 37x45 picture in every encoding the bytes signatures decode."""
    rgb, alpha = picture()
    image, gray = Image.fromarray(rgb), Image.fromarray(rgb[..., 0])
    palette = image.convert("P")
    bgra = np.dstack([rgb[..., ::-1], alpha])
    rng = np.random.default_rng(1)
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
    yield "bmp-32-bit", encoded(Image.fromarray(np.dstack([rgb, alpha])), "BMP")
    yield "bmp-top-down", bmp(bmp_rows(rgb[..., ::-1], top_down=True), 45, -37, 24)
    yield "bmp-32-bit-fields", bmp(bmp_rows(bgra), 45, 37, 32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF))
    yield "bmp-24-bit-fields", bmp(bmp_rows(rgb[..., ::-1]), 45, 37, 24, compression=3, masks=(0xFF0000, 0xFF00, 0xFF))
    bgra_masks = (0xFF0000, 0xFF00, 0xFF, 0xFF000000, 0x73524742) + (0,) * 12  # a V4 header: masks, "sRGB", endpoints
    yield "bmp-v4-bit-fields", bmp(bmp_rows(bgra), 45, 37, 32, compression=3, masks=bgra_masks, info_size=108)
    yield "webp-lossless", encoded(image, "WEBP", lossless=True)
    yield "webp-lossy", encoded(image, "WEBP", quality=80)
    yield "webp-lossy-alpha", encoded(Image.fromarray(np.dstack([rgb, alpha])), "WEBP", quality=80)
    yield "webp-lossless-alpha", encoded(Image.fromarray(np.dstack([rgb, alpha])), "WEBP", lossless=True)


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


def test_the_client_sends_an_animated_png_as_a_still_png(tmp_path):
    """examples/serving_client.py's image_bytes: an APNG (which the server refuses), of several
    frames or of one, as a still PNG of its first frame, which decodes to `read_image`'s pixels."""
    client = example_module("serving_client")
    for name, data in zip(("frames", "one-frame"), animated_pngs(picture()[0])):
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        sent = client.image_bytes(path)
        assert sent.startswith(PNG_SIGNATURE) and b"acTL" not in sent, name
        np.testing.assert_array_equal(decode_images(tf.constant([sent])).numpy()[0], read_image(path, frame=0), err_msg=name)


def test_bad_requests_are_refused_with_a_reason(served):
    from tests.serving_standin import rest_server

    _, _, directory, pngs, _ = served
    client = example_module("serving_client")
    small = encoded(Image.new("RGB", (32, 32)), "PNG")
    ref, p0 = pngs[0].read_bytes(), pngs[1].read_bytes()
    cases = {
        "The images of one request must have one size": ([ref, small], [p0, small], [p0, small]),
        "ref[0] is not a PNG, JPEG, BMP or WebP file": ([b"not an image"], [p0], [p0]),
        "ref is empty: a request needs at least one image": ([], [], []),
    }
    with rest_server(directory, "lpips") as url:
        for message, images in cases.items():
            with pytest.raises(urllib.error.HTTPError) as refused:
                client.rank_rest(client.rest_bytes_body(*images), url)
            assert refused.value.code == 400 and message in json.load(refused.value)["error"]


def run_client(*args):
    """examples/serving_client.py ARGS on the example triplet, as a user runs it."""
    command = [sys.executable, ROOT / "examples" / "serving_client.py", *EXAMPLES, *args]
    return subprocess.run([str(arg) for arg in command], capture_output=True, text=True, timeout=120)


def client_error(result):
    """The one line the client printed on stderr, where it failed with status 1 and no traceback:
    over gRPC too, TensorFlow's C++ start-up lines (oneDNN, CUDA probing) muted as docs/serving.md
    promises."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@contextlib.contextmanager
def answering(status, body, content_type):
    """A local HTTP server answering every POST with `status` and `body`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    from tests.serving_standin import http_server

    with http_server(Handler) as url:
        yield url


def test_the_client_says_in_one_line_why_a_request_failed(served, tmp_path):
    """examples/serving_client.py: the server's own message where it answers with an error (TF
    Serving's {"error": ...} over REST, its first line; a gRPC status), else why the server cannot
    be reached; status 1, no traceback."""
    from tests.serving_standin import grpc_server, rest_server

    directory = served[2]
    with rest_server(directory, "lpips") as url:
        assert client_error(run_client("--rest", url, "--model", "nope")) == (
            f"error: {url} answered HTTP 404: Servable not found for request: Latest(nope)"
        )
    tf_error = "assertion failed: [ref[0] is not a complete PNG: 20 bytes]\n\t [[{{node Assert/Assert}}]]"
    with answering(400, json.dumps({"error": tf_error}).encode(), "application/json") as url:
        assert client_error(run_client("--bytes", "--rest", url)) == (
            f"error: {url} answered HTTP 400: assertion failed: [ref[0] is not a complete PNG: 20 bytes]"
        )
    with answering(502, b"Bad Gateway\n", "text/plain") as url:
        assert client_error(run_client("--rest", url)) == f"error: {url} answered HTTP 502: Bad Gateway"
    port = closed_port()
    line = client_error(run_client("--rest", f"http://127.0.0.1:{port}"))
    assert line.startswith(f"error: cannot reach http://127.0.0.1:{port}: ") and "refused" in line, line
    line = client_error(run_client("--grpc", f"127.0.0.1:{port}"))
    assert line.startswith(f"error: cannot reach 127.0.0.1:{port}: ") and "refused" in line, line
    with grpc_server(directory, "lpips") as address:
        assert client_error(run_client("--grpc", address, "--model", "nope")) == (
            f"error: {address} answered NOT_FOUND: Servable not found for request: Latest(nope)"
        )
    assert client_error(run_client("--rest", "http://127.0.0.1:1", "--write-body", tmp_path / "no" / "body.json")) == (
        f"error: [Errno 2] No such file or directory: '{tmp_path / 'no' / 'body.json'}'"
    )
    without_grpc_packages = (  # as where tensorflow-serving-api is not installed
        "import runpy, sys; sys.modules['tensorflow_serving'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    command = [sys.executable, "-c", without_grpc_packages, ROOT / "examples" / "serving_client.py", *EXAMPLES, "--grpc", address]
    result = subprocess.run([str(arg) for arg in command], capture_output=True, text=True, timeout=120)
    line = client_error(result)
    assert line.startswith("error: gRPC needs tensorflow-serving-api (no module tensorflow_serving"), line
    assert line.endswith("): pip install tensorflow-serving-api, or send over REST with --rest URL"), line


@pytest.fixture(scope="module")
def serving_bytes(served):
    """The exported `serving_bytes` signature, loaded once."""
    return tf.saved_model.load(str(served[2])).signatures["serving_bytes"]


def refusal(serving_bytes, *img0):
    """The reason `serving_bytes` refuses `img0` (with a valid img1): the InvalidArgumentError's
    assertion message. Any other exception (a UnicodeDecodeError from a message holding the
    data's bytes) fails the test."""
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        serving_bytes(img0=tf.constant(list(img0)), img1=tf.constant([EXAMPLES[0].read_bytes()] * len(img0)))
    (message,) = re.findall(r"assertion failed: \[(.*)\]", refused.value.message)
    return message


def too_large(width, height):
    return f"img0[0] is too large to decode: {width} x {height} = {width * height} pixels, over the limit of {MAX_PIXELS}"


def patched(data, offset, fmt, *values):
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt) :]


def bombs():
    """(format, bytes, width, height): small files whose headers declare more pixels than
    `read_image` decodes (written by hand or patched, never encoded at that size)."""
    rgb, alpha = picture()
    image = Image.fromarray(rgb)
    jpeg = encoded(image, "JPEG")
    sof = jpeg.index(b"\xff\xc0")  # then length, precision, height, width
    yield "png", png_header_only(20000, 20000), 20000, 20000
    yield "png-wide", png_header_only(2**32 - 1, 1), 2**32 - 1, 1
    yield "jpeg", patched(jpeg, sof + 5, ">HH", 20000, 20000), 20000, 20000
    yield "bmp", patched(encoded(image, "BMP"), 18, "<ii", 20000, -20000), 20000, 20000
    yield "webp-lossless", patched(encoded(image, "WEBP", lossless=True), 21, "<I", 16383 | 16383 << 14), 16384, 16384
    yield "webp-lossy", patched(encoded(image, "WEBP", quality=80), 26, "<HH", 16383, 16383), 16383, 16383
    extended = encoded(Image.fromarray(np.dstack([rgb, alpha])), "WEBP", quality=80)
    assert extended[12:16] == b"VP8X"
    yield "webp-extended", extended[:24] + (16383).to_bytes(3, "little") * 2 + extended[30:], 16384, 16384  # the canvas


@pytest.mark.parametrize("fmt,data,width,height", list(bombs()), ids=[fmt for fmt, *_ in bombs()])
def test_decompression_bombs_are_refused_from_their_headers(serving_bytes, fmt, data, width, height):
    """A 388 KB PNG of 20000 x 20000 took 31 s and 15 GB before; now the header refuses it as
    `read_image` refuses the file (Pillow's limit), before any pixel is decoded."""
    assert len(data) < 10_000
    assert refusal(serving_bytes, data) == too_large(width, height)


def test_a_request_decodes_at_most_the_pixel_limit_per_input(serving_bytes):
    """Images within the limit each, over it together (one size for all), are refused as one."""
    side = int(MAX_PIXELS**0.5)  # 13377: one is within the limit, two are not
    want = f"img0 is too large to decode: 2 images of {side} x {side} = {2 * side * side} pixels, over the limit of {MAX_PIXELS}"
    assert refusal(serving_bytes, png_header_only(side, side), png_header_only(side, side)).startswith(want)


def test_the_pixel_limit_can_be_lowered():
    png = EXAMPLES[0].read_bytes()  # 64 x 64
    assert decode_images(tf.constant([png, png]), "img0", max_pixels=2 * 64 * 64).shape == (2, 64, 64, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"img0\[0\] is too large to decode: 64 x 64 = 4096 pixels, over the limit of 4095"):
        decode_images(tf.constant([png]), "img0", max_pixels=64 * 64 - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="img0 is too large to decode: 2 images of 64 x 64 = 8192 pixels, over the limit of 8191"):
        decode_images(tf.constant([png, png]), "img0", max_pixels=2 * 64 * 64 - 1)



def test_an_export_bounds_its_bytes_requests_with_max_pixels(tmp_path):
    """`export --max-pixels`: a server's bytes signatures refuse what its memory could not score."""
    png = EXAMPLES[0].read_bytes()  # 64 x 64
    run = run_cli("export", "--format", "savedmodel", "--out", tmp_path / "m", "--max-pixels", 64 * 64, *RANDOM_SMALL)
    assert run.returncode == 0, run.stderr
    signature = tf.saved_model.load(str(tmp_path / "m" / "1")).signatures["serving_bytes"]
    assert signature(img0=tf.constant([png]), img1=tf.constant([png]))["distance"].shape == (1,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="img0 is too large to decode: 2 images of 64 x 64 = 8192 pixels, over the limit of 4096"):
        signature(img0=tf.constant([png, png]), img1=tf.constant([png, png]))
    for args, message in [(("--format", "tflite", "--out", tmp_path / "m.tflite", "--max-pixels", 10), "--max-pixels applies to --format savedmodel only"),
                          (("--format", "savedmodel", "--out", tmp_path / "n", "--max-pixels", 0), "Invalid value for '--max-pixels'")]:  # fmt: skip
        result = run_cli("export", *args, *RANDOM_SMALL)
        assert result.returncode == 2 and message in one_error_line(result), result.stderr
    with pytest.raises(InputError, match="max_pixels must be an integer >= 1 or None"):
        export_savedmodel(make_metric(), tmp_path / "o", max_pixels=True)


def short_files():
    """(format, a complete file) of each format, to cut short."""
    rgb, _ = picture()
    image = Image.fromarray(rgb)
    yield "PNG", encoded(image, "PNG")
    yield "JPEG", encoded(image, "JPEG")
    yield "BMP", encoded(image, "BMP")
    yield "WebP", encoded(image, "WEBP", lossless=True)


@pytest.mark.parametrize("fmt,data", list(short_files()), ids=[fmt for fmt, _ in short_files()])
def test_data_cut_short_is_refused_with_its_length(serving_bytes, fmt, data):
    """Every length from 0 to 40 bytes: a clear reason, never an error formatting the data's bytes."""
    for length in range(41):
        got = refusal(serving_bytes, data[:length])
        if length == 0:
            assert got == "img0[0] is empty: 0 bytes"
        else:
            assert re.fullmatch(rf"img0\[0\] is not a complete {fmt}: {length} bytes( of {len(data)})?", got), got


def test_a_cut_short_file_names_its_place_in_the_batch(serving_bytes):
    png = EXAMPLES[1].read_bytes()
    assert refusal(serving_bytes, png, png[:20], png) == "img0[1] is not a complete PNG: 20 bytes"
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid PNG data"):  # a whole header: the decoder refuses it
        serving_bytes(img0=tf.constant([png, png[: len(png) // 2]]), img1=tf.constant([png, png]))


def refused_files():
    """(name, bytes, the reason): files `read_image` reads that the bytes signatures refuse."""
    rgb, alpha = picture()
    image = Image.fromarray(rgb)
    bgra = np.dstack([rgb[..., ::-1], alpha])
    yield "bmp-palette", encoded(image.convert("P"), "BMP"), "BMP files of 8 bits per pixel are not decoded here: send PNG"
    yield "bmp-gray", encoded(image.convert("L"), "BMP"), "BMP files of 8 bits per pixel are not decoded here: send PNG"
    yield "bmp-1-bit", encoded(image.convert("1"), "BMP"), "BMP files of 1 bits per pixel are not decoded here: send PNG"
    rgb555 = (rgb[..., 0] >> 3).astype(np.uint16) << 10 | (rgb[..., 1] >> 3).astype(np.uint16) << 5 | rgb[..., 2] >> 3
    yield "bmp-16-bit", bmp(bmp_rows(rgb555[..., None].astype("<u2").view(np.uint8)), 45, 37, 16), (
        "BMP files of 16 bits per pixel are not decoded here: send PNG"
    )
    rgba_masks = (0xFF, 0xFF00, 0xFF0000, 0xFF000000, 0x73524742) + (0,) * 12  # a V4 header: RGBA, which Pillow reads
    yield "bmp-rgba-masks", bmp(bmp_rows(bgra[..., [2, 1, 0, 3]]), 45, 37, 32, compression=3, masks=rgba_masks, info_size=108), (
        "BMP files compressed or of colour masks other than 8-bit BGR are not decoded here: send PNG"
    )
    yield "bmp-os2", bmp(bmp_rows(rgb[..., ::-1]), 45, 37, 24, info_size=12), (
        "BMP files of a 12-byte (OS/2) header are not decoded here: send PNG"
    )
    yield "gif", encoded(image.convert("P"), "GIF"), "is a GIF, which is not decoded here"
    frames = [Image.fromarray(np.roll(rgb, k, axis=1)) for k in range(3)]
    animated = io.BytesIO()
    frames[0].save(animated, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    yield "webp-animated", animated.getvalue(), "is an animated WebP, which is not decoded here: send one frame, as PNG"
    apng, one_frame_apng = animated_pngs(rgb)
    yield "png-animated", apng, "is an animated PNG, which is not decoded here: send one frame, as PNG"
    yield "png-apng-of-one-frame", one_frame_apng, "is an animated PNG, which is not decoded here: send one frame, as PNG"
    yield "tiff", encoded(image, "TIFF"), "is not a PNG, JPEG, BMP or WebP file"


@pytest.mark.parametrize("width,height", [(-4, 4), (0, 4), (4, 0)])
def test_bmp_sides_that_are_no_sizes_are_refused(serving_bytes, width, height):
    """A negative width would make a negative pixel count, under any limit."""
    data = bmp(bytes(48), width, height, 24)
    assert refusal(serving_bytes, data).startswith(f"img0[0] is not a valid BMP: its width and height are {width} and")


@pytest.mark.parametrize("name,data,reason", list(refused_files()), ids=[name for name, *_ in refused_files()])
def test_files_decoded_otherwise_than_read_image_are_refused(tmp_path, serving_bytes, name, data, reason):
    (tmp_path / "image").write_bytes(data)
    frame = 0 if name.endswith("-animated") else None
    assert read_image(tmp_path / "image", frame=frame).shape == (37, 45, 3)  # what `score` reads
    got = refusal(serving_bytes, data)
    assert got.startswith("img0[0]") and reason in got, got


def test_the_tf1_session_loader_refuses_with_the_reason(served):
    """The C++ loader's path, as TF Serving runs the graph (session.run on the signature's tensors)."""
    _, _, directory, pngs, _ = served
    png = pngs[0].read_bytes()
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(directory)).signature_def["serving_bytes"]
        fetch = signature.outputs["distance"].name
        feed = {signature.inputs["img0"].name: [png], signature.inputs["img1"].name: [png]}
        assert session.run(fetch, feed) == [0.0]
        for img0, reason in ((png[:20], "img0[0] is not a complete PNG: 20 bytes"), (png_header_only(20000, 20000), too_large(20000, 20000))):
            with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(reason)):
                session.run(fetch, {**feed, signature.inputs["img0"].name: [img0]})


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
