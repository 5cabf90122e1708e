"""Stand-ins for TF Serving's REST and gRPC Predict endpoints, to test clients where TF Serving
cannot run (no Docker daemon, no network).

Both serve one SavedModel version directory, loaded with `tf.saved_model.load`, under a model
name. Before running a request they check it as TF Serving does: the model name, the signature
(`serving_default` when none is named), input names exactly the signature's, dtypes, shapes
compatible. REST string inputs are read as TF Serving reads them: `{"b64": "..."}` is
base64-decoded to bytes, a plain JSON string taken as its UTF-8 bytes. They answer in TF
Serving's formats: REST (columnar "inputs" requests only)
`{"outputs": {name: nested list}}`, or the bare list where the signature has one output;
gRPC a `PredictResponse` of TensorProtos, errors as INVALID_ARGUMENT / NOT_FOUND.

    with rest_server(directory, "lpips") as url: ...        # "http://127.0.0.1:PORT"
    with grpc_server(directory, "lpips") as address: ...    # "127.0.0.1:PORT"
"""

import base64
import binascii
import contextlib
import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf


class RequestError(Exception):
    def __init__(self, message, not_found=False):
        super().__init__(message)
        self.not_found = not_found


class _Model:
    def __init__(self, directory, name):
        self.name = name
        self.signatures = tf.saved_model.load(str(directory)).signatures

    def predict(self, model_name, signature_name, inputs):
        """Checks a request against the signature, runs it; returns {output name: ndarray}."""
        if model_name != self.name:
            raise RequestError(f"Servable not found for request: Latest({model_name})", not_found=True)
        signature_name = signature_name or "serving_default"
        if signature_name not in self.signatures:
            raise RequestError(f"Serving signature name: \"{signature_name}\" not found in signature def")
        signature = self.signatures[signature_name]
        _, specs = signature.structured_input_signature
        if set(inputs) != set(specs):
            raise RequestError(f"inputs {sorted(inputs)} do not match the signature's {sorted(specs)}")
        tensors = {}
        for key, value in inputs.items():
            spec = specs[key]
            if value.dtype != spec.dtype.as_numpy_dtype:
                raise RequestError(f"input {key} is {value.dtype}, the signature expects {spec.dtype.name}")
            if not spec.shape.is_compatible_with(value.shape):
                raise RequestError(f"input {key} has shape {value.shape}, the signature expects {spec.shape}")
            tensors[key] = tf.constant(value)
        return {k: v.numpy() for k, v in signature(**tensors).items()}


def _json_tensor(value, dtype):
    """A REST input as TF Serving's JSON decoder reads it for a tensor of `dtype`."""
    if dtype != tf.string:
        return np.asarray(value, dtype.as_numpy_dtype)

    def item(v):
        if isinstance(v, list):
            return [item(x) for x in v]
        if isinstance(v, dict):
            if set(v) != {"b64"}:
                raise ValueError(f"a binary value must be {{\"b64\": ...}}, got keys {sorted(v)}")
            return base64.b64decode(v["b64"], validate=True)
        if isinstance(v, str):
            return v.encode()
        raise TypeError(f"a string tensor holds strings or {{\"b64\": ...}}, got {type(v).__name__}")

    return np.asarray(item(value), dtype=object)


@contextlib.contextmanager
def rest_server(directory, name):
    """Serves `POST /v1/models/<name>:predict` on a free port; yields the base URL."""
    model = _Model(directory, name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            try:
                prefix, _, verb = self.path.rpartition(":")
                if not prefix.startswith("/v1/models/") or verb != "predict":
                    raise RequestError(f"Malformed request: POST {self.path}", not_found=True)
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if "inputs" not in request:
                    raise RequestError("the stand-in takes columnar requests ({\"inputs\": ...}) only")
                _, specs = model.signatures[request.get("signature_name", "serving_default")].structured_input_signature
                inputs = {k: _json_tensor(v, specs[k].dtype) if k in specs else np.asarray(v)
                          for k, v in request["inputs"].items()}  # fmt: skip
                outputs = model.predict(prefix[len("/v1/models/") :], request.get("signature_name"), inputs)
                body = {"outputs": {k: v.tolist() for k, v in outputs.items()}}
                if len(outputs) == 1:
                    body = {"outputs": next(iter(outputs.values())).tolist()}
                self._answer(200, body)
            except (RequestError, KeyError, ValueError, TypeError, binascii.Error) as error:
                self._answer(404 if getattr(error, "not_found", False) else 400, {"error": str(error)})
            except tf.errors.InvalidArgumentError as error:  # the graph refused the inputs, as TF Serving answers it
                self._answer(400, {"error": error.message})

        def _answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    with http_server(Handler) as url:
        yield url


@contextlib.contextmanager
def http_server(handler):
    """A local HTTP server of `handler` (a `BaseHTTPRequestHandler` class) in a thread; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def grpc_server(directory, name):
    """Serves tensorflow.serving.PredictionService/Predict on a free port; yields its address."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    model = _Model(directory, name)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            try:
                outputs = model.predict(request.model_spec.name, request.model_spec.signature_name, inputs)
            except RequestError as error:
                code = grpc.StatusCode.NOT_FOUND if error.not_found else grpc.StatusCode.INVALID_ARGUMENT
                context.abort(code, str(error))
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
