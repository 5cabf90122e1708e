"""The metric gives the reference's numbers under Keras' JAX and PyTorch backends too."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

CHECK = pathlib.Path(__file__).parent / "backend_parity_check.py"


@pytest.mark.parametrize("backend,package", [("jax", "jax"), ("torch", "torch")])
@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_backend_matches_reference(backend, package, net):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install {package} to run the {backend}-backend check)")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(CHECK), net], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert report["worst"] <= 1e-5
