"""Converts the official LPIPS linear weights to the format keras-lpips ships.

Reads `lpips/weights/v{0.0,0.1}/{alex,vgg,squeeze}.pth` from PyPI's lpips 0.1.4
wheel (BSD-2-Clause, R. Zhang et al.) with the torch-free safe reader, and
writes `saved_models/lpips_lin/<version>/<net>.npz` (keys `lin0`, `lin1`, ...:
float32 vectors of per-channel weights), `SHA256SUMS` and the licence notice.

    python data_tools/convert_lin_weights.py [--wheel lpips-0.1.4-py3-none-any.whl]

Without --wheel the wheel is fetched with pip. Its sha256 is verified either way.
"""

import argparse
import hashlib
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from keras_lpips.backbones import BACKBONES
from keras_lpips.weights.cache import verify_sha256
from keras_lpips.weights.convert import lin_vectors_from_lpips_state
from keras_lpips.weights.safe_pickle import read_state_dict

WHEEL_SHA256 = "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e"
OUT = pathlib.Path(__file__).resolve().parent.parent / "saved_models" / "lpips_lin"


def fetch_wheel(directory):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", directory, "lpips==0.1.4"],
        check=True,
    )
    return next(pathlib.Path(directory).glob("lpips-0.1.4-*.whl"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=pathlib.Path, help="a local lpips-0.1.4 wheel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        verify_sha256(wheel, WHEEL_SHA256)
        sums = []
        with zipfile.ZipFile(wheel) as archive:
            for version in ("v0.0", "v0.1"):
                for net, spec in BACKBONES.items():
                    pth = pathlib.Path(tmp) / f"{version}-{net}.pth"
                    pth.write_bytes(archive.read(f"lpips/weights/{version}/{net}.pth"))
                    vectors = lin_vectors_from_lpips_state(read_state_dict(pth), len(spec.taps), str(pth))
                    target = OUT / version / f"{net}.npz"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(target, **{f"lin{k}": v for k, v in enumerate(vectors)})
                    sums.append(f"{hashlib.sha256(target.read_bytes()).hexdigest()}  {version}/{net}.npz")
            licence = archive.read("lpips-0.1.4.dist-info/LICENSE").decode()
    (OUT / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    (OUT / "LICENSE").write_text(
        "The linear weights in this folder are the official LPIPS weights from the lpips 0.1.4\n"
        "package (https://github.com/richzhang/PerceptualSimilarity), converted to .npz by\n"
        "data_tools/convert_lin_weights.py. They are distributed under the original licence:\n\n" + licence
    )
    print(f"wrote {len(sums)} files to {OUT}")


if __name__ == "__main__":
    main()
