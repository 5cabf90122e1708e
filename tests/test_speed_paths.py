"""The compiled call path, precision="bf16", and the memory estimate."""

import pathlib

import keras
import numpy as np
import pytest

from keras_lpips import LPIPS, InputError, InsufficientMemoryError
from keras_lpips.memory import conv_macs, estimate_memory_bytes, layer_output_shapes
from tests.helpers import random_images


@pytest.fixture(scope="module")
def alex():
    return LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=3)


def test_compiled_call_matches_keras_call_and_traces_once(alex, rng):
    concrete = alex._compiled_distance()
    for n, h, w in ((2, 64, 64), (3, 40, 50), (1, 97, 131), (5, 31, 33)):
        pair = [random_images(rng, n, h, w), random_images(rng, n, h, w)]
        fast = np.asarray(alex(pair))
        keras_call = np.asarray(keras.Model.__call__(alex, [keras.ops.convert_to_tensor(x) for x in pair]))
        np.testing.assert_allclose(fast, keras_call, rtol=1e-6, atol=1e-7)
    assert alex._compiled_distance() is concrete  # one trace serves every batch and image size


def test_training_call_takes_keras_path(alex, rng):
    pair = [random_images(rng, 2), random_images(rng, 2)]
    np.testing.assert_allclose(np.asarray(alex(pair, training=False)), np.asarray(alex(pair)), rtol=1e-6)
    assert tuple(alex(pair, training=True).shape) == (2,)  # training=True: Keras' own call


def test_bf16_is_close_to_float32_and_keeps_float32_outside_the_backbone(rng):
    f32 = LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=1)
    b16 = LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=1, precision="bf16")
    pair = [random_images(rng, 4), random_images(rng, 4)]
    d32, d16 = np.asarray(f32(pair)), np.asarray(b16(pair))
    assert d16.dtype == np.float32
    np.testing.assert_allclose(d16, d32, rtol=3e-2)
    convs = [layer for layer in b16.backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32" for layer in convs)
    assert b16.normalize.compute_dtype == "float32" and b16.heads[0].compute_dtype == "float32"
    assert all(f.dtype == "float32" for f in b16.features(pair[0]))
    assert LPIPS.from_config(b16.get_config()).precision == "bf16"


def test_unknown_precision_raises_input_error():
    with pytest.raises(InputError, match="precision must be one of"):
        LPIPS(net="alex", backbone_weights=None, precision="fp16")


def test_memory_estimate_grows_with_size_and_batch(alex):
    one = estimate_memory_bytes(alex, 256, 256, 1)
    assert isinstance(one, int) and one > 0
    assert estimate_memory_bytes(alex, 256, 256, 2) > one
    assert estimate_memory_bytes(alex, 512, 512, 1) > 3 * one


def test_layer_shapes_and_macs_follow_the_architecture(alex):
    shapes = dict((layer.name, shape) for layer, shape in layer_output_shapes(alex, 224, 224))
    assert shapes["conv1"] == (55, 55, 64) and shapes["conv5"] == (13, 13, 256)
    assert conv_macs(alex, 224, 224) == 655_566_528  # torchvision AlexNet's conv layers at 224x224


def test_check_fits_in_memory_refuses_what_would_not_fit(alex, monkeypatch):
    from keras_lpips import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 64 * 1024**2)
    memory.check_fits_in_memory(alex, 64, 64)  # a few MiB
    with pytest.raises(InsufficientMemoryError, match=r"^1 pair\(s\) of 2048x2048 images with net 'alex' needs about .* GB of memory but 67.1 MB is available; use smaller"):
        memory.check_fits_in_memory(alex, 2048, 2048)


def _meminfo_available():
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def test_available_memory_is_what_the_kernel_and_the_cgroup_leave_here():
    """The value computed independently here (MemAvailable, capped by the cgroup v2 limit less its
    usage), give or take what other processes took or freed between the two readings."""
    from keras_lpips.memory import available_memory_bytes

    try:
        expected = [_meminfo_available()]
    except OSError:
        pytest.skip("no /proc/meminfo on this system")
    try:
        limit = pathlib.Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(pathlib.Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            expected.append(int(limit) - used)
    except OSError:
        pass
    expected = min(e for e in expected if e is not None)
    available = available_memory_bytes()
    assert isinstance(available, int) and 0 < available
    assert abs(available - expected) < 512 * 1024**2, (available, expected)


@pytest.mark.parametrize(
    "meminfo,limit,used,expected",
    [
        ("MemTotal: 8000 kB\nMemAvailable: 6000 kB\n", "max", "100", 6000 * 1024),
        ("MemTotal: 8000 kB\nMemAvailable: 6000 kB\n", str(5 * 1024**2), str(1024**2), 4 * 1024**2),
        ("MemTotal: 8000 kB\nMemAvailable: 6000 kB\n", str(10 * 1024**2), str(1024**2), 6000 * 1024),
        (None, str(5 * 1024**2), str(1024**2), 4 * 1024**2),
        ("MemTotal: 8000 kB\nMemAvailable: 6000 kB\n", None, None, 6000 * 1024),
        (None, None, None, None),
    ],
    ids=["no-limit", "cgroup-tighter", "meminfo-tighter", "cgroup-only", "meminfo-only", "neither"],
)
def test_available_memory_takes_the_tighter_of_meminfo_and_cgroup(tmp_path, monkeypatch, meminfo, limit, used, expected):
    from keras_lpips import memory

    real_path = pathlib.Path
    files = {"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": limit, "/sys/fs/cgroup/memory.current": used}
    for name, text in files.items():
        if text is not None:
            (tmp_path / real_path(name).name).write_text(text)

    def fake_path(name):
        assert name in files, name
        return tmp_path / real_path(name).name  # missing where the text is None: OSError on reading

    monkeypatch.setattr(memory, "pathlib", type("fake_pathlib", (), {"Path": staticmethod(fake_path)}))
    assert memory.available_memory_bytes() == expected


def test_score_refuses_an_input_too_large_for_this_machine(tmp_path, monkeypatch):
    """Two 4096x4096 images with VGG need ~40 GiB: the CLI says so instead of being killed."""
    from PIL import Image

    from keras_lpips.memory import available_memory_bytes
    from tests.helpers import one_error_line, run_cli

    if (available_memory_bytes() or 0) > 41 * 1024**3:
        pytest.skip("this machine has enough memory to score 4096x4096 VGG pairs")
    for name, value in (("a.png", 10), ("b.png", 200)):
        Image.new("RGB", (4096, 4096), (value,) * 3).save(tmp_path / name, compress_level=1)
    import keras_lpips.images

    def not_decoded(*args, **kwargs):
        raise AssertionError("the images were decoded before the memory check")

    monkeypatch.setattr(keras_lpips.images, "read_image", not_decoded)  # the sizes come from the headers
    result = run_cli("score", tmp_path / "a.png", tmp_path / "b.png", "--net", "vgg", "--backbone-weights", "random")
    assert result.returncode == 1  # too little memory: a run-time failure
    assert one_error_line(result).startswith("error: 1 pair(s) of 4096x4096 images with net 'vgg' needs about")
