"""How much memory a distance computation takes, estimated from the backbone's layer shapes.

    from keras_lpips.memory import estimate_memory_bytes
    needed = estimate_memory_bytes(metric, height=2048, width=2048, batch=1)

The estimate is for one call of `metric([img0, img1])` on `batch` pairs of
`height` x `width` images (counted as one backbone pass over 2 * batch images, which bounds
the call's two passes of batch images from above), on top of
what the process holds before the call (the framework, the weights). It bounds
the peak resident memory TensorFlow's CPU runtime reached in measurements
(benchmarks/README.md) from above: by 1.15-1.7x for VGG and SqueezeNet, 2x
for AlexNet, whose activations are small beside the images.
"""

import pathlib

import keras

from keras_lpips.errors import InsufficientMemoryError

# Bytes per element of the float32 tensors outside the backbone.
_F32 = 4


def layer_output_shapes(metric, height, width):
    """`[(layer, (h, w, channels))]` for every backbone layer, for one `height` x `width` image."""
    backbone = metric.backbone
    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(backbone.inputs, [layer.output for layer in layers])
    specs = probe.compute_output_spec(keras.KerasTensor((1, int(height), int(width), 3)))
    return [(layer, tuple(int(d) for d in spec.shape[1:])) for layer, spec in zip(layers, specs)]


def conv_macs(metric, height, width):
    """Multiply-accumulates of the backbone's convolutions for one image (groups of 1)."""
    total = 0
    for layer, (h, w, c) in layer_output_shapes(metric, height, width):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, _ = layer.kernel.shape
            total += h * w * c * kh * kw * cin
    return int(total)


def estimate_memory_bytes(metric, height, width, batch=1):
    """Bytes one `metric([img0, img1])` call needs beyond what the process already holds.

    Args:
        metric: a `keras_lpips.LPIPS` (any net, either precision).
        height, width: image size in pixels.
        batch: pairs per call.

    Returns an int: 3 A + S + 3 I, in float32 bytes over the call's 2 * batch images,
    with A the largest backbone layer output, S the tapped outputs together and I
    the images. Around the first tap, the tap, its squared values or normalised
    copy, the layers after it and the taps' squared differences are alive at once
    (about 2.6 A with TensorFlow's own kernels), and oneDNN's layout copies around
    a convolution can add up to two more A (up to 4.3 A measured with
    TF_ENABLE_ONEDNN_OPTS=1); the images have up to three copies (tensors,
    concatenation, rescaling). Under `precision="bf16"` the taps also keep their
    bfloat16 originals beside their float32 copies: 3 A + 1.5 S + 3 I.
    """
    images = 2 * int(batch)
    shapes = layer_output_shapes(metric, height, width)
    largest = max(h * w * c for _, (h, w, c) in shapes) * images * _F32
    taps = sum(_tap_sizes(metric, shapes)) * images * _F32
    inputs = 3 * images * int(height) * int(width) * 3 * _F32
    tap_factor = 1.5 if getattr(metric, "precision", "float32") == "bf16" else 1.0
    return int(3 * largest + tap_factor * taps + inputs)


def _tap_sizes(metric, shapes):
    """Per-image element counts of the backbone's outputs (the tapped layers)."""
    outputs = {id(tensor) for tensor in metric.backbone.outputs}
    return [h * w * c for layer, (h, w, c) in shapes if id(layer.output) in outputs]


def available_memory_bytes():
    """Memory this process can still take: the kernel's MemAvailable, capped by the
    cgroup (container) limit where one is set. None where neither can be read."""
    candidates = []
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = pathlib.Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = pathlib.Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit != "max":
            candidates.append(int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def check_available_memory(needed, what, advice=""):
    """Raises `InsufficientMemoryError` before any work starts when `needed` bytes exceed the
    memory available now (`available_memory_bytes`): "WHAT needs about N of memory but A is
    available" and `advice`. Does nothing where that cannot be read."""
    from keras_lpips.disk_space import format_bytes

    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InsufficientMemoryError(
            f"{what} needs about {format_bytes(needed)} of memory but {format_bytes(available)} is available{advice}"
        )


def check_fits_in_memory(metric, height, width, batch=1):
    """Raises `InsufficientMemoryError` when `estimate_memory_bytes` exceeds the memory available
    now, so that an input too large is refused with a message instead of the process being killed."""
    if min(height, width) < getattr(metric, "min_input_size", 1):
        return  # too small for the backbone: the metric's own input check says so in one line
    check_available_memory(
        estimate_memory_bytes(metric, height, width, batch),
        f"{batch} pair(s) of {width}x{height} images with net {metric.net!r}",
        "; use smaller images or a smaller net",
    )
