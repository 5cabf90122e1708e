"""Asks a keras-lpips model served by TF Serving which of two images is closer to a reference.

    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png            # gRPC
    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png --rest http://localhost:8501
    python examples/serving_client.py examples/ref.png examples/p0.png examples/p1.png --write-body body.json

The model is a `keras-lpips export --format savedmodel` export served as "lpips"; this
client calls its `rank` signature: float32 (N, H, W, 3) RGB images in [0, 1] of any size in,
`d0`, `d1` (N,) and `p1_preferred` (N,: 1.0 where p1 is closer to ref, 0.0 where p0 is,
0.5 on a tie) out. REST needs numpy and Pillow only; gRPC needs tensorflow-serving-api
(which brings tensorflow and grpcio). tests/test_export.py runs these functions.
"""

import argparse
import json
import urllib.request

import numpy as np
from PIL import Image


def load_image(path):
    """A (1, H, W, 3) float32 RGB image in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32)[None] / 255.0


def rest_body(ref, p0, p1):
    """The REST request body: the rank signature's inputs in TF Serving's columnar format."""
    inputs = {"ref": ref.tolist(), "p0": p0.tolist(), "p1": p1.tolist()}
    return json.dumps({"signature_name": "rank", "inputs": inputs})


def rank_rest(body, server="http://localhost:8501", model="lpips"):
    """POSTs `body` to TF Serving's REST predict endpoint; returns {"d0": [...], "d1": [...], "p1_preferred": [...]}."""
    url = f"{server}/v1/models/{model}:predict"
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["outputs"]


def grpc_request(ref, p0, p1, model="lpips"):
    """A tensorflow-serving-api PredictRequest for the rank signature."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "rank"
    for name, images in (("ref", ref), ("p0", p0), ("p1", p1)):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs=3, metavar="IMAGE", help="ref, p0 and p1 (same size)")
    parser.add_argument("--grpc", default="localhost:8500", help="gRPC address (default: %(default)s)")
    parser.add_argument("--rest", help="REST base URL, e.g. http://localhost:8501 (instead of gRPC)")
    parser.add_argument("--model", default="lpips", help="model name on the server (default: %(default)s)")
    parser.add_argument("--write-body", metavar="JSON", help="only write the REST request body here (for curl)")
    args = parser.parse_args()
    ref, p0, p1 = (load_image(path) for path in args.images)
    if args.write_body:
        with open(args.write_body, "w") as f:
            f.write(rest_body(ref, p0, p1))
        return
    if args.rest:
        outputs = rank_rest(rest_body(ref, p0, p1), args.rest, args.model)
    else:
        outputs = rank_grpc(grpc_request(ref, p0, p1, args.model), args.grpc)
    print(f"d(ref, p0) = {outputs['d0'][0]:.4f}")
    print(f"d(ref, p1) = {outputs['d1'][0]:.4f}")
    print({1.0: "p1", 0.0: "p0", 0.5: "neither: a tie"}[outputs["p1_preferred"][0]], "is closer to ref")


if __name__ == "__main__":
    main()
