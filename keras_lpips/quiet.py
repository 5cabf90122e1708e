"""Silencing C++ runtimes (TensorFlow, LiteRT) that write start-up lines straight to file
descriptor 2, where Python's own `sys.stderr` redirection cannot reach them."""

import contextlib
import os
import sys


@contextlib.contextmanager
def muted_stderr():
    """File descriptor 2 pointed at /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
