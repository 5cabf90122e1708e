"""benchmarks/worker_protocol.py, the JSON-lines protocol of benchmarks/run.py and its workers:
a worker answers request after request (a failed one with an error the driver raises), both
workers see the same pixels in their own layouts, and a peak-memory reply has its fields. The
real workers need TensorFlow and the reference's torch venv: benchmarks/run.py --quick runs them."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def worker_protocol():
    spec = importlib.util.spec_from_file_location("worker_protocol", BENCHMARKS / "worker_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_worker_answers_each_request_and_reports_failures(tmp_path):
    script = tmp_path / "echo_worker.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(BENCHMARKS)!r})\nimport worker_protocol\n\n"
        "def handle(request):\n"
        "    if request['cmd'] == 'fail':\n"
        "        raise ValueError('no such thing')\n"
        "    return {'cmd': request['cmd'], 'times': worker_protocol.timed(lambda: None, request['calls'])}\n\n"
        "worker_protocol.serve(handle)\n"
    )
    worker = worker_protocol().Worker([sys.executable, str(script)])
    try:
        reply = worker.ask(cmd="first", calls=3)
        assert reply["cmd"] == "first" and len(reply["times"]) == 3 and all(t >= 0 for t in reply["times"])
        with pytest.raises(RuntimeError, match="ValueError: no such thing"):
            worker.ask(cmd="fail", calls=1)
        assert worker.ask(cmd="after", calls=1)["cmd"] == "after"  # a failure does not end the worker
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_both_layouts_hold_the_same_pixels():
    protocol = worker_protocol()
    nchw = protocol.CellImages()
    nhwc = protocol.CellImages(lambda x: np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
    a, b = nchw(2, 8, 3), nhwc(2, 8, 3)
    assert nchw(2, 8, 3) is a  # reused across a cell's calls
    for x, y in zip(a, b, strict=True):
        assert x.dtype == np.float32 and x.shape == (2, 3, 8, 8) and -1 <= x.min() and x.max() <= 1
        np.testing.assert_array_equal(x.transpose(0, 2, 3, 1), y)
    np.testing.assert_array_equal(protocol.images(2, 8, protocol.cell_seed(2, 8), count=3)[0], a[0])


def test_the_peak_memory_reply():
    reply = worker_protocol().resident_peak(lambda: 0.25)
    assert reply["value"] == 0.25 and reply["peak_rss_bytes"] >= reply["before_call_bytes"] > 0
    assert set(reply) == {"peak_rss_bytes", "before_call_bytes", "vm_hwm_bytes", "vm_hwm_before_call_bytes", "value"}
