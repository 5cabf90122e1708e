"""The protocol between benchmarks/run.py and its two workers, and what the workers share.

run.py (and profile_layers.py) start keras_worker.py (TensorFlow, `.venv`'s python) and
reference_worker.py (torch and lpips 0.1.4, the reference's python) as subprocesses through
`Worker`, and speak JSON lines: one request per line on the worker's stdin, one reply per line
on its stdout. A request the worker fails is answered {"error": "Type: message"} (the driver
raises it) and the worker goes on; {"cmd": "quit"} ends it. Timed requests carry "calls" and are
answered with "times", seconds per call (`timed`). Both workers time the same images (`images`,
`CellImages`), in their own layout. Started with `--peak-memory ...` instead, a worker measures
one large pair in its fresh process (`resident_peak`) and prints one JSON line.

Stdlib and numpy only: both pythons import it, and they share no framework; numpy is imported
where images are made, so that run.py, whose resident peak its --peak-memory children inherit,
stays small. The workers, run.py and profile_layers.py run as scripts from benchmarks/, so
`import worker_protocol` finds this file through sys.path[0].
"""

import json
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the workers' working directory


class Worker:
    """A benchmark worker subprocess, seen from the driver: `ask` sends one request and returns its reply."""

    def __init__(self, cmd):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.cmd[1]} exited (code {self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.cmd[1]}: {reply['error']}")
        return reply

    def close(self):
        """Sends "quit" and waits for the worker (a minute at most, then kills it); closes its pipes."""
        try:
            self.proc.communicate(json.dumps({"cmd": "quit"}) + "\n", timeout=60)
        except Exception:  # it hangs, or its stdin is gone: called from `finally`, so nothing raised
            self.proc.kill()
            self.proc.communicate()


def serve(handle):
    """The worker's side: answers each request line on stdin with `handle(request)`'s reply, until
    "quit" or the end of stdin. An exception becomes an {"error"} reply, and the loop goes on."""
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("cmd") == "quit":
            break
        try:
            reply = handle(request)
        except Exception as error:  # reported to the driver, which raises it
            reply = {"error": f"{type(error).__name__}: {error}"}
        write_reply(reply)


def write_reply(reply):
    """One JSON line on stdout, flushed: stdout carries the protocol only."""
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def timed(fn, calls):
    """Seconds of each of `calls` calls of `fn`: a timed request's "times"."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def images(batch, size, seed, count=2, layout=None):
    """`count` batches of `batch` images uniform in [-1, 1], float32 NCHW arrays drawn from `seed`:
    the same pixels in both workers. `layout` converts each batch to the worker's own (NHWC
    arrays, torch tensors)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    layout = layout or (lambda x: x)
    return [layout(rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)) for _ in range(count)]


def cell_seed(batch, size):
    """The seed of a cell's images, so that both workers time a (batch, size) cell on the same pixels."""
    return batch * 7919 + size


class CellImages:
    """`images(batch, size, count)` of the cell being timed, made on its first call and reused by the
    next ones; only the last cell's are kept (large images are large)."""

    def __init__(self, layout=None):
        self.layout, self.key, self.value = layout, None, None

    def __call__(self, batch, size, count):
        if self.key != (batch, size, count):
            self.key = self.value = None  # the old set freed before the new one is made
            self.value = images(batch, size, cell_seed(batch, size), count, self.layout)
            self.key = (batch, size, count)
        return self.value


def vm_hwm_bytes():
    """The process's resident high-water mark from /proc (reset by exec, unlike ru_maxrss); None
    where there is no /proc."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def resident_peak(call):
    """The peak-memory reply: runs `call` (one large pair, the model built and traced on a small
    pair before) and returns its value with the process's resident peak before and after it, as
    ru_maxrss (which a child inherits from its parent across fork + exec) and as VmHWM."""
    base, base_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, vm_hwm_bytes()
    value = call()
    peak, peak_hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, vm_hwm_bytes()
    return {"peak_rss_bytes": peak, "before_call_bytes": base, "vm_hwm_bytes": peak_hwm,
            "vm_hwm_before_call_bytes": base_hwm, "value": value}
