"""Keras finds keras-lpips' classes in any process that imported keras_lpips.

`LPIPS`, `LPIPSLoss` and `MeanLPIPS` are imported on first use (so that `import keras_lpips` and
the command line do not pay for TensorFlow), while `keras.models.load_model` looks classes up in
Keras' registry of serialisable objects, which their modules fill when imported. So as soon as
Keras is imported (at once, if it already is), each of their names ("keras_lpips>LPIPS", ...) is
registered with a stand-in whose `from_config` imports the real class and builds it; importing a
real class's module puts it in its stand-in's place.
"""

import contextlib
import importlib
import importlib.abc
import sys

CLASSES = {"LPIPS": "keras_lpips.model", "LPIPSLoss": "keras_lpips.losses", "MeanLPIPS": "keras_lpips.metrics"}


def register_with_keras():
    """Registers the stand-ins now if Keras is imported, else once it is."""
    if "keras" in sys.modules:
        _register_stand_ins()
    elif not any(isinstance(finder, _AfterKerasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasFinder())


def _register_stand_ins():
    import keras

    registry = keras.saving.get_custom_objects()
    for name, module in CLASSES.items():
        registry.setdefault(f"keras_lpips>{name}", _stand_in(name, module))


def _stand_in(name, module):
    def from_config(cls, config):
        return getattr(importlib.import_module(module), name).from_config(config)

    doc = f"Stands in for `{module}.{name}` in Keras' registry until that module is imported."
    return type(name, (), {"from_config": classmethod(from_config), "__doc__": doc, "__module__": module})


class _AfterKerasFinder(importlib.abc.MetaPathFinder):
    """Finds `keras` through the finders after it on `sys.meta_path`, with a loader that
    registers the stand-ins once Keras has run; it leaves `sys.meta_path` then (a mere lookup,
    `importlib.util.find_spec("keras")`, keeps it there)."""

    def __init__(self):
        self._finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self._finding:
            return None
        self._finding = True  # the finders asked below may ask the whole meta path again
        try:
            others = [finder for finder in sys.meta_path if finder is not self]
            spec = next(filter(None, (_spec(finder, name, path, target) for finder in others)), None)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader, self)
        return spec


def _spec(finder, name, path, target):
    find_spec = getattr(finder, "find_spec", None)
    return find_spec(name, path, target) if find_spec is not None else None


class _RegisteringLoader(importlib.abc.Loader):
    """Keras' own loader, then `_register_stand_ins` (which never fails the import of Keras)."""

    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self.finder)
        # Never a reason for `import keras` to fail: on a Keras without this API, loading a
        # .keras file then needs the classes imported first.
        with contextlib.suppress(Exception):
            _register_stand_ins()
