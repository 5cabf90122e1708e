"""Which of two images is closer to a reference, with a keras-lpips TFLite model on LiteRT alone.

    pip install ai-edge-litert pillow
    python examples/tflite_rank.py lpips.tflite examples/ref.png examples/p0.png examples/p1.png

The model is a `keras-lpips export --format tflite` file (any --quantize). Its signatures
read float32 (N, H, W, 3) RGB images in [0, 1] of any size: "serving_default" (img0, img1
-> distance), "rank" (ref, p0, p1 -> d0, d1, p1_preferred) and "spatial" (img0, img1 -> map).
tests/test_export.py runs `rank` on every export it tests.
"""

import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def load_image(path):
    """A (1, H, W, 3) float32 RGB image in [0, 1]."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32)[None] / 255.0


def rank(model_path, ref, p0, p1):
    """{"d0": d(ref, p0), "d1": d(ref, p1), "p1_preferred": 1.0, 0.0 or 0.5 on a tie}, each (N,)."""
    interpreter = Interpreter(model_path=str(model_path))
    run = interpreter.get_signature_runner("rank")  # inputs are resized to each call's shapes
    return run(ref=ref, p0=p0, p1=p1)


if __name__ == "__main__":
    model_path, *paths = sys.argv[1:]
    outputs = rank(model_path, *(load_image(path) for path in paths))
    print(f"d(ref, p0) = {outputs['d0'][0]:.4f}")
    print(f"d(ref, p1) = {outputs['d1'][0]:.4f}")
    print({1.0: "p1", 0.0: "p0", 0.5: "neither: a tie"}[float(outputs["p1_preferred"][0])], "is closer to ref")
