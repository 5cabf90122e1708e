"""TensorFlow imported without its C++ start-up lines, and only when a command needs it.

TensorFlow's native start-up (CUDA probing on CPU machines, oneDNN notices) writes to file
descriptor 2 and ignores TF_CPP_MIN_LOG_LEVEL for part of it. The program must not import
TensorFlow before parsing its arguments (help, usage errors, `--version` and `weights list`
answer in a fraction of a second), so instead of importing it up front, `install()` puts a
finder on `sys.meta_path` that mutes file descriptor 2 while `tensorflow` is first imported,
by whichever module imports it (Keras included), and while it first lists its devices.
"""

import importlib.abc
import importlib.machinery
import os
import sys

from keras_lpips.quiet import muted_stderr


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` with file descriptor 2 pointed at /dev/null."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with muted_stderr():
            self.loader.exec_module(module)
            module.config.list_physical_devices()  # where the CUDA probing writes its lines


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the rest of TensorFlow's modules load as usual
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install():
    """Mutes TensorFlow's start-up lines whenever (if ever) this process imports it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TensorFlowFinder())
