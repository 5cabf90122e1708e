"""The reference side of the benchmark: PyTorch `lpips` 0.1.4, run with `.venv-ref`'s python.

Not imported by keras-lpips; `benchmarks/run.py` starts it as a subprocess and
speaks JSON lines over stdin/stdout (one request, one reply; benchmarks/worker_protocol.py):

    {"cmd": "info"}                                       -> versions, threads, CPU capability
    {"cmd": "matmul", "n": 4096, "calls": 3}              -> {"times": [seconds per call, ...]}
    {"cmd": "distance", "net": "alex", "batch": 64, "size": 64, "calls": 2}
    {"cmd": "train", "net": "alex", "batch": 50, "size": 64, "calls": 2}
    {"cmd": "quit"}

Each timed call is one `model(in0, in1)` under `torch.inference_mode()` (eval
mode, torch tensors NCHW in [-1, 1], as the reference is used), or one
`lpips.Trainer.set_input` + `optimize_parameters()` step in "lin" mode (frozen
trunk, dropout on, Adam(1e-4, beta1 0.5) on the linear layers and the ranking
head; the reference's own step). Backbones carry the same ImageNet weights as
keras-lpips (`~/.keras/keras_lpips/{net}-imagenet-features.npz`, torchvision
layout); the linear layers the shipped v0.1 ones.

    .venv-ref/bin/python benchmarks/reference_worker.py --peak-memory vgg 2048
measures, in this fresh process, the peak resident memory of one pair.
"""

import argparse
import contextlib
import os
import pathlib
import platform
import re
import sys
import time
from importlib import metadata

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from worker_protocol import CellImages, images, resident_peak, serve, timed, write_reply  # noqa: E402

with contextlib.redirect_stdout(sys.stderr):  # stdout carries the protocol only
    from data_tools.make_parity_fixtures import import_lpips  # noqa: E402

    lpips = import_lpips()


def weights_file(net):
    home = pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras"))
    return home / "keras_lpips" / f"{net}-imagenet-features.npz"


def load_backbone(model, net):
    """Copies the cached torchvision-layout ImageNet weights into `model.net` (lpips `sliceK.IDX` names)."""
    with np.load(weights_file(net)) as data:
        state = {k: data[k] for k in data.files}
    params = dict(model.net.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            key = re.sub(r"^slice\d+\.", "features.", name)
            param.copy_(torch.from_numpy(np.ascontiguousarray(state[key])))
    return model


_MODELS = {}


def metric(net):
    if net not in _MODELS:
        model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)  # official lin weights
        _MODELS[net] = load_backbone(model, net).float().eval()
    return _MODELS[net]


_TRAINERS = {}


def trainer(net):
    if net not in _TRAINERS:
        with contextlib.redirect_stdout(sys.stderr):
            t = lpips.Trainer()
            t.initialize(model="lpips", net=net, use_gpu=False, is_train=True, pnet_rand=True, pnet_tune=False)
        load_backbone(t.net, net)
        _TRAINERS[net] = t
    return _TRAINERS[net]


cached_images = CellImages(torch.from_numpy)  # NCHW tensors, as the reference takes them
_OPERANDS = {}


def handle(request):
    cmd = request["cmd"]
    calls = int(request.get("calls", 1))
    if cmd == "info":
        return {
            "torch": torch.__version__,
            "lpips": metadata.version("lpips"),
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "python": platform.python_version(),
        }
    if cmd == "matmul":
        n = int(request["n"])
        if n not in _OPERANDS:
            _OPERANDS[n] = (torch.randn(n, n), torch.randn(n, n))
        a, b = _OPERANDS[n]
        return {"times": timed(lambda: torch.mm(a, b), calls)}
    if cmd == "distance":
        model = metric(request["net"])
        x0, x1 = cached_images(int(request["batch"]), int(request["size"]), 2)

        def step():
            with torch.inference_mode():
                return model(x0, x1)

        return {"times": timed(step, calls), "value": float(step().mean())}
    if cmd == "train":
        t = trainer(request["net"])
        batch, size = int(request["batch"]), int(request["size"])
        ref, p0, p1 = cached_images(batch, size, 3)
        judge = torch.from_numpy(np.random.default_rng(size).random((batch, 1, 1, 1)).astype(np.float32))
        data = {"ref": ref, "p0": p0, "p1": p1, "judge": judge}

        def step():
            t.set_input(data)
            t.optimize_parameters()

        return {"times": timed(step, calls), "loss": float(t.loss_total.detach().mean())}
    if cmd == "layers":
        return layer_times(request["net"], int(request["batch"]), int(request["size"]))
    raise ValueError(f"unknown command {cmd!r}")


def layer_times(net, batch, size):
    """Seconds per backbone stage (a conv with its ReLU, or a pool), over the two image
    batches of one call, each run apart as `lpips.LPIPS.forward` does."""
    model = metric(net)
    modules = [m for s in range(1, model.net.N_slices + 1) for m in getattr(model.net, f"slice{s}").children()]
    stages = []
    for module in modules:
        if isinstance(module, torch.nn.ReLU) and stages:
            stages[-1].append(module)
        else:
            stages.append([module])
    names = ["+".join(type(m).__name__ for m in stage) for stage in stages]
    times = [0.0] * len(stages)
    with torch.inference_mode():
        for x in cached_images(batch, size, 2):
            h = model.scaling_layer(x)
            for k, stage in enumerate(stages):
                start = time.perf_counter()
                for m in stage:
                    h = m(h)
                times[k] += time.perf_counter() - start
    return {"names": names, "times": times}


def peak_memory(net, size):
    """Peak resident memory (bytes) of this process after one pair of `size`x`size` images."""
    model = metric(net)
    x0, x1 = images(1, size, seed=size, layout=torch.from_numpy)
    with torch.inference_mode():
        model(*images(1, 64, seed=0, layout=torch.from_numpy))  # as the keras side does, a small pair first

    def call():
        with torch.inference_mode():
            return float(model(x0, x1).item())

    return resident_peak(call)


def main():
    parser = argparse.ArgumentParser(description="reference lpips worker for benchmarks/run.py")
    parser.add_argument("--peak-memory", nargs=2, metavar=("NET", "SIZE"))
    args = parser.parse_args()
    if args.peak_memory:
        write_reply(peak_memory(args.peak_memory[0], int(args.peak_memory[1])))
    else:
        serve(handle)


if __name__ == "__main__":
    main()
