"""Asks a keras-lpips model served by TF Serving which of two images is closer to a reference.

    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png            # gRPC
    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png --rest http://localhost:8501
    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png --write-body body.json
    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png --bytes --rest http://localhost:8501

The model is a `keras-lpips export --format savedmodel` export served as "lpips"; this
client calls its `rank` signature: float32 (N, H, W, 3) RGB images in [0, 1] of any size in,
`d0`, `d1` (N,) and `p1_preferred` (N,: 1.0 where p1 is closer to ref, 0.0 where p0 is,
0.5 on a tie) out; with --bytes its `rank_bytes` signature, which takes the image files
themselves (PNG, JPEG, WebP, 24- or 32-bit BMP; base64 over REST) and decodes them as
`keras-lpips score` does. REST needs numpy and Pillow only; gRPC needs tensorflow-serving-api (which brings
tensorflow and grpcio). tests/test_export.py and tests/test_serving_bytes.py run these functions.

A request that fails prints one line and exits with status 1: the server's own message where it
answers with an error (TF Serving's, e.g. why it refused an image), else why it cannot be reached.
"""

import argparse
import base64
import io
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np
from PIL import Image, ImageOps


def load_image(path):
    """A (1, H, W, 3) float32 RGB image in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32)[None] / 255.0


def rest_body(ref, p0, p1):
    """The REST request body: the rank signature's inputs in TF Serving's columnar format."""
    inputs = {"ref": ref.tolist(), "p0": p0.tolist(), "p1": p1.tolist()}
    return json.dumps({"signature_name": "rank", "inputs": inputs})


def image_bytes(path):
    """The file as the rank_bytes signature takes it: its own bytes where the server decodes
    them as `keras-lpips score` reads the file (a still PNG, JPEG or WebP, upright); else (an
    EXIF orientation to apply, or what the server refuses: BMP, GIF, TIFF, animated PNG (APNG,
    even of one frame) or WebP, ...) the pixels Pillow reads, upright, as a PNG (of the first frame)."""
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as image:
        still = getattr(image, "n_frames", 1) == 1 and image.get_format_mimetype() != "image/apng"
        if image.format in ("PNG", "JPEG", "WEBP") and still and image.getexif().get(0x0112, 1) == 1:
            return data
        upright = ImageOps.exif_transpose(image)
        if upright.mode not in ("1", "L", "LA", "I;16", "P", "RGB", "RGBA"):
            upright = upright.convert("RGB")
        png = io.BytesIO()
        upright.save(png, format="PNG")
        return png.getvalue()


def rest_bytes_body(ref, p0, p1):
    """The REST request body for the rank_bytes signature: lists of encoded images (one size per
    list), base64 as TF Serving's REST API reads binary strings."""
    encoded = {name: [{"b64": base64.b64encode(data).decode("ascii")} for data in images]
               for name, images in (("ref", ref), ("p0", p0), ("p1", p1))}  # fmt: skip
    return json.dumps({"signature_name": "rank_bytes", "inputs": encoded})


def rank_rest(body, server="http://localhost:8501", model="lpips"):
    """POSTs `body` to TF Serving's REST predict endpoint; returns {"d0": [...], "d1": [...], "p1_preferred": [...]}."""
    url = f"{server}/v1/models/{model}:predict"
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["outputs"]


def quiet_tensorflow():
    """Imports TensorFlow (for the gRPC path) without its C++ start-up lines (oneDNN, CUDA probing,
    CPU features), as the keras-lpips CLI does: they go straight to file descriptor 2 and some
    ignore TF_CPP_MIN_LOG_LEVEL, so the descriptor points at /dev/null while TensorFlow is first
    imported and first lists its devices. A failed request then stays one line on stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # where the CUDA probing writes its lines
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def grpc_request(ref, p0, p1, model="lpips", encoded=False):
    """A tensorflow-serving-api PredictRequest for the rank signature (float32 images), or
    with `encoded` for rank_bytes (lists of encoded images)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "rank_bytes" if encoded else "rank"
    for name, images in (("ref", ref), ("p0", p0), ("p1", p1)):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string if encoded else tf.float32))
    return request


def rank_grpc(request, server="localhost:8500"):
    """Sends `request` to TF Serving's gRPC PredictionService; returns {"d0": [...], "d1": [...], "p1_preferred": [...]}."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=60.0)
    return {name: tf.make_ndarray(tensor).tolist() for name, tensor in response.outputs.items()}


def failure(error, server):
    """The one line that says why a request to `server` failed with `error`: the server's message
    for an HTTP error or a gRPC status (TF Serving's first line, where it says why), else why the
    server cannot be reached; None for an error of another kind (a bug: its traceback is wanted)."""
    if isinstance(error, urllib.error.HTTPError):
        return f"{server} answered HTTP {error.code}: {_first_line(_http_error_message(error))}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot reach {server}: {error.reason}"
    if isinstance(error, OSError):  # a connection reset, or a timeout while reading the answer
        return f"cannot reach {server}: {error}"
    code, details = getattr(error, "code", None), getattr(error, "details", None)  # a grpc.RpcError
    if callable(code) and callable(details):
        if code().name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            return f"cannot reach {server}: {_first_line(details())}"
        return f"{server} answered {code().name}: {_first_line(details())}"
    return None


def _http_error_message(error):
    """The message in an HTTP error's body: TF Serving's {"error": ...}, else the body's text,
    else the status's reason."""
    text = error.read().decode("utf-8", "replace").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        return text or error.reason
    return answer["error"] if isinstance(answer, dict) and isinstance(answer.get("error"), str) else text


def _first_line(text):
    """The first line of `text` that holds something (TF Serving's errors go on with graph nodes)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs=3, metavar="IMAGE", help="ref, p0 and p1 (same size)")
    parser.add_argument("--grpc", default="localhost:8500", help="gRPC address (default: %(default)s)")
    parser.add_argument("--rest", help="REST base URL, e.g. http://localhost:8501 (instead of gRPC)")
    parser.add_argument("--model", default="lpips", help="model name on the server (default: %(default)s)")
    parser.add_argument("--write-body", metavar="JSON", help="only write the REST request body here (for curl)")
    parser.add_argument("--bytes", action="store_true", help="send the encoded files (rank_bytes), not float arrays")
    args = parser.parse_args()
    try:
        if args.bytes:
            ref, p0, p1 = ([image_bytes(path)] for path in args.images)
            body = rest_bytes_body
        else:
            ref, p0, p1 = (load_image(path) for path in args.images)
            body = rest_body
        if args.write_body:
            with open(args.write_body, "w") as f:
                f.write(body(ref, p0, p1))
            return
    except OSError as error:  # an image missing or unreadable (Pillow's UnidentifiedImageError too), the body unwritable
        sys.exit(f"error: {error}")
    server = args.rest or args.grpc
    try:
        if args.rest:
            outputs = rank_rest(body(ref, p0, p1), args.rest, args.model)
        else:
            quiet_tensorflow()  # before grpc_request imports it, so that a failure is one line on stderr
            outputs = rank_grpc(grpc_request(ref, p0, p1, args.model, encoded=args.bytes), args.grpc)
    except ModuleNotFoundError as error:  # gRPC's packages
        sys.exit(f"error: gRPC needs tensorflow-serving-api (no module {error.name}): pip install tensorflow-serving-api, "
                 "or send over REST with --rest URL")
    except Exception as error:
        line = failure(error, server)
        if line is None:
            raise
        sys.exit(f"error: {line}")
    print(f"d(ref, p0) = {outputs['d0'][0]:.4f}")
    print(f"d(ref, p1) = {outputs['d1'][0]:.4f}")
    print({1.0: "p1", 0.0: "p0", 0.5: "neither: a tie"}[outputs["p1_preferred"][0]], "is closer to ref")


if __name__ == "__main__":
    main()
