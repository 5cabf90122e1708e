"""Never silently wrong: a table of bad (and odd but valid) inputs, through the API and the command.

Every case ends in the right result or one clear error: in Python a specific `KerasLPIPSError`
subclass, from the `keras-lpips` command one `error: ...` line on stderr and exit code 2 for a
usage error or 1 for a failure at run time (the cases in `FAILS_AT_RUN_TIME`: a bad file found
while working, an output that cannot be written, weights), never a traceback, and nothing written.

Odd but valid image files (16-bit, grayscale, RGBA, palette, EXIF-rotated, CMYK) must give the
distance of the equivalent plain RGB image.

`CASES` is the table. A case has an API call, one or more command lines, or both; each becomes
its own test. The command lines run in this process through the program's entry point
(`run_cli`, tests/helpers.py), identical command lines once (the 16-bit ... CMYK cases share one
`keras-lpips matrix`). `INSTALLED` names one command line per command family that also runs as
a subprocess of the installed command (`run_installed`), which pays TensorFlow's start-up each
time: all but one of those are marked slow. Paths written `@name` are files made by the `files`
fixture.
"""

import concurrent.futures
import csv
import dataclasses
import functools
import io
import re
import shutil
import struct
import zlib
from typing import Callable, Optional

import numpy as np
import pytest
from PIL import Image

from data_tools.seeded_weights import seeded_state_dict
from keras_lpips.errors import (
    ChecksumError, DataError, InputError, OutputError, UnsafeFileError, WeightsError, WeightsUnavailableError,
)  # fmt: skip
from tests.bapps_fixture import make_tiny_bapps
from tests.helpers import RANDOM, ROOT, run_cli, run_installed

SIZE = 64
# torchvision AlexNet's conv parameters (OIHW), for a seeded stand-in of the ImageNet weights.
ALEX_SHAPES = {"features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
               "features.6.weight": (384, 192, 3, 3), "features.8.weight": (256, 384, 3, 3),
               "features.10.weight": (256, 256, 3, 3)}  # fmt: skip
ALEX_SHAPES.update({k.replace("weight", "bias"): (v[0],) for k, v in list(ALEX_SHAPES.items())})
UNWRITABLE = "/proc/keras-lpips-test"  # /proc takes no new files, even for root


@dataclasses.dataclass(frozen=True)
class Cli:
    """One command line of a case; `message` defaults to the case's (None: it must succeed)."""

    args: tuple
    message: Optional[str] = "case"
    stdout: Optional[str] = None  # also printed on stdout (data verify lists the problems there)
    check: Optional[Callable] = None  # check(files, completed process) for a success

    @property
    def name(self):
        return "-".join(a for a in self.args[:2] if not a.startswith(("@", "-")))


@dataclasses.dataclass(frozen=True)
class Case:
    api: Optional[Callable] = None  # api(files) -> result; raises for an error case
    cli: tuple = ()
    error: Optional[type] = None  # the exact class the API raises
    message: object = None  # what the API's (and by default the command's) message contains: str or tuple of str
    check: Optional[Callable] = None  # check(files, api result) for a success
    env: tuple = ()  # (name, value) pairs for both


# --- the input files -----------------------------------------------------------------------------


class Files:
    """The folder of inputs; `files("x.png")` is its path, `files.resolve("@x.png")` too."""

    def __init__(self, root):
        self.root = root

    def __call__(self, name):
        return self.root / name

    def resolve(self, arg):
        return str(self.root / arg[1:]) if arg.startswith("@") else arg


def _smooth(rng, height=SIZE, width=SIZE):
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float64)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def _png16(array, path):
    """A 16-bit PNG written by hand (Pillow writes 16-bit grayscale only): (H, W, 1|3|4) uint16."""
    height, width, channels = array.shape
    colour = {1: 0, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _odd_images(folder, rng):
    """Each odd-but-valid file `<case>.<ext>` beside `<case>_plain.png`, the plain 8-bit RGB image
    it must read as, plus `ref.png`; all 64x64 so that one `matrix` compares them all."""
    Image.fromarray(_smooth(rng)).save(folder / "ref.png")
    rgb = _smooth(rng)

    gray = rgb[..., 0]
    Image.fromarray(np.uint16(gray) * 257).save(folder / "png16_gray.png")  # Pillow: mode I;16
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(folder / "png16_gray_plain.png")

    _png16(np.uint16(rgb) * 257, folder / "png16_rgb.png")
    Image.fromarray(rgb).save(folder / "png16_rgb_plain.png")

    Image.fromarray(gray).save(folder / "grayscale.png")
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(folder / "grayscale_plain.png")

    alpha = rng.integers(0, 256, rgb.shape[:2] + (1,), dtype=np.uint8)  # alpha is dropped, not composited
    Image.fromarray(np.concatenate([rgb, alpha], -1)).save(folder / "rgba.png")
    Image.fromarray(rgb).save(folder / "rgba_plain.png")

    palette = Image.fromarray(rgb).quantize(64)
    palette.save(folder / "palette.png")
    palette.convert("RGB").save(folder / "palette_plain.png")

    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to display
    image.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    with Image.open(folder / "exif_rotated.jpg") as stored:  # Pillow's open does not apply EXIF
        Image.fromarray(np.rot90(np.asarray(stored.convert("RGB")), k=-1)).save(folder / "exif_rotated_plain.png")

    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    with Image.open(folder / "cmyk.jpg") as stored:
        assert stored.mode == "CMYK"
        stored.convert("RGB").save(folder / "cmyk_plain.png")
    np.save(folder / "cmyk_source.npy", rgb)


def _tampered_home(folder, fake_imagenet_home):
    """A KERAS_HOME whose cache holds the stand-in AlexNet 'ImageNet' features (conftest's
    `fake_imagenet_home`, their digest pinned), the features' bytes changed afterwards."""
    cache = folder / "keras_lpips"
    cache.mkdir(parents=True)
    name = "alex-imagenet-features.npz"
    shutil.copyfile(fake_imagenet_home / "keras_lpips" / name, cache / name)
    data = bytearray((cache / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (cache / name).write_bytes(bytes(data))


def _hostile_keras_file(path, marker):
    """A .keras model whose Lambda layer would create `marker` if its code ran."""
    import keras

    target = str(marker)
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: (open(target, "w").close(), x)[1])(inputs)
    keras.Model(inputs, outputs).save(path)
    marker.unlink()  # building the model ran it once; loading must not


def _broken_bapps(root):
    """A tiny BAPPS layout: 2afc train/val `traditional` valid; each data fault in its own subset."""
    make_tiny_bapps(root, n_train=4, n_val=2, n_jnd=0)
    good = root / "2afc" / "val" / "traditional"
    for subset in ("missing_judge", "judge_outside"):
        shutil.copytree(good, root / "2afc" / "val" / subset)
    (root / "2afc/val/missing_judge/judge/000001.npy").unlink()
    np.save(root / "2afc/val/judge_outside/judge/000000.npy", np.array([1.5]))
    shutil.copytree(root / "2afc/train/traditional", root / "2afc/train/count_mismatch")
    np.save(root / "2afc/train/count_mismatch/judge/000009.npy", np.array([0.4]))  # a judge with no triplet
    for name in ("ref", "p0", "p1", "judge"):
        (root / "2afc/val/empty" / name).mkdir(parents=True)
    for subset in ("npz_judge", "huge_judge", "device_judge", "folder_png"):
        shutil.copytree(good, root / "2afc/val" / subset)
    shutil.copytree(root / "2afc/train/traditional", root / "2afc/train/folder_png")
    npz = io.BytesIO()
    np.savez(npz, judge=np.array([0.5]))
    (root / "2afc/val/npz_judge/judge/000000.npy").write_bytes(npz.getvalue())  # an .npz renamed .npy
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"  # 745 GiB, says the header
    header += b" " * (117 - len(header)) + b"\n"
    (root / "2afc/val/huge_judge/judge/000000.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(8))
    (root / "2afc/val/device_judge/judge/000000.npy").unlink()
    (root / "2afc/val/device_judge/judge/000000.npy").symlink_to("/dev/zero")  # endless
    for split in ("train", "val"):
        for name in ("ref", "p0", "p1"):
            (root / "2afc" / split / "folder_png" / name / "000009.png").mkdir()  # a folder named as an image
        np.save(root / "2afc" / split / "folder_png/judge/000009.npy", np.array([0.5]))


@pytest.fixture(scope="module")
def files(tmp_path_factory, fake_imagenet_home):
    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    (root / "odd").mkdir()
    _odd_images(root / "odd", rng)
    for name, (height, width) in {"a": (SIZE, SIZE), "b": (SIZE, SIZE), "wide": (48, SIZE), "tiny": (30, 30),
                                  "tiny2": (30, 30), "min": (31, 31), "min2": (31, 31)}.items():  # fmt: skip
        Image.fromarray(_smooth(rng, height, width)).save(root / f"{name}.png")
    (root / "text.png").write_text("not an image\n")
    (root / "truncated.png").write_bytes((root / "a.png").read_bytes()[:400])
    floats = rng.random((SIZE, SIZE)).astype(np.float32)
    Image.fromarray(np.where(np.arange(SIZE) == 7, np.nan, floats).astype(np.float32)).save(root / "nan.tif")
    Image.fromarray(floats * 255).save(root / "float255.tif")

    np.savez(root / "seeded_alex.npz", **seeded_state_dict(ALEX_SHAPES, 1))
    damaged = seeded_state_dict(ALEX_SHAPES, 1)
    damaged["features.6.weight"][3, 2, 1, 0] = np.nan
    np.savez(root / "nan_weights.npz", **damaged)
    np.savez(root / "text_weights.npz", **{**seeded_state_dict(ALEX_SHAPES, 1), "features.0.bias": np.array(["x"] * 64)})
    (root / "corrupt.npz").write_bytes((root / "seeded_alex.npz").read_bytes()[:5000])
    (root / "truncated.pth").write_bytes((ROOT / "tests/fixtures/tiny_zip.pth").read_bytes()[:600])
    _tampered_home(root / "home_tampered", fake_imagenet_home)
    _hostile_keras_file(root / "lambda.keras", marker=root / "pwned")
    (root / "damaged.keras").write_bytes((root / "lambda.keras").read_bytes()[:700])
    (root / "home_empty").mkdir()
    for name, text in STUDY_CONFIGS.items():
        (root / name).write_text(text)

    _broken_bapps(root / "bapps")
    make_tiny_bapps(root / "jnd_only", n_train=0, n_val=0, n_jnd=4)
    (root / "folder_a").mkdir()
    (root / "folder_a" / "a.png").write_bytes((root / "a.png").read_bytes())
    return Files(root)


# --- API helpers -------------------------------------------------------------------------------


@functools.cache
def metric():
    from keras_lpips import LPIPS

    return LPIPS(net="alex", backbone_weights=None, lin_weights="v0.1", seed=0, input_range=(0.0, 1.0))


def distance(img0, img1):
    return float(np.asarray(metric()([img0[None], img1[None]]))[0])


def score(ref, other):
    """The API path of `keras-lpips score REF OTHER`: read both files, one distance."""

    def call(f):
        from keras_lpips.images import read_image

        return distance(read_image(f(ref)), read_image(f(other)))

    return call


def matrix_of(*names):
    """The API path of `keras-lpips matrix`: all pairs of the files."""

    def call(f):
        from keras_lpips.images import read_image
        from keras_lpips.pairwise import distance_matrix

        return distance_matrix(metric(), [read_image(f(n)) for n in names])

    return call


def tensors(make):
    """A metric call on arrays `make(rng)` returns."""
    return lambda f: np.asarray(metric()(make(np.random.default_rng(1))))


def uniform(n=1, height=SIZE, width=SIZE, low=0.0, high=1.0, channels=3):
    return lambda rng: rng.uniform(low, high, (n, height, width, channels)).astype(np.float32)


def with_value(value, index=0):
    def make(rng):
        pair = [uniform()(rng), uniform()(rng)]
        pair[index][0, 5, 7, 1] = value
        return pair

    return make


def lpips(**kwargs):
    def build(f):
        from keras_lpips import LPIPS

        arguments = {"net": "alex", "input_range": (0.0, 1.0), **kwargs}
        return LPIPS(**{k: f.resolve(v) if isinstance(v, str) else v for k, v in arguments.items()})

    return build


def no_distances(files, distances):
    """An empty batch, as the reference scores it: no distances, no error."""
    assert distances.shape == (0,), distances.shape


def finite_positive(f, value):
    assert np.all(np.isfinite(value)) and np.all(np.asarray(value) > 0), value


# --- the odd-but-valid image files ---------------------------------------------------------------


def same_as_plain(name):
    """API: the odd file reads as its plain RGB twin, and its distance to ref.png is the twin's."""

    def api(f):
        from keras_lpips.images import read_image

        odd, plain, ref = (read_image(f(f"odd/{n}")) for n in (ODD_FILES[name], f"{name}_plain.png", "ref.png"))
        np.testing.assert_allclose(odd, plain, atol=1e-7, rtol=0)
        return distance(ref, odd), distance(ref, plain)

    return api


def check_same_as_plain(f, distances):
    odd, plain = distances
    assert plain > 0 and odd == pytest.approx(plain, rel=1e-6, abs=1e-7)


def check_matrix(name):
    """CLI: in `keras-lpips matrix` of the folder, d(ref, odd) equals d(ref, plain) and d(odd, plain) is 0."""

    def check(f, result):
        with open(f("odd.csv"), newline="") as table:
            rows = list(csv.reader(table))
        names = rows[0][1:]
        d = {(row[0], other): float(value) for row in rows[1:] for other, value in zip(names, row[1:])}
        odd, plain = ODD_FILES[name], f"{name}_plain.png"
        assert d[("ref.png", plain)] > 0 and d[("ref.png", odd)] == d[("ref.png", plain)], d
        assert d[(odd, plain)] == 0.0

    return check


ODD_FILES = {"png16_gray": "png16_gray.png", "png16_rgb": "png16_rgb.png", "grayscale": "grayscale.png",
             "rgba": "rgba.png", "palette": "palette.png", "exif_rotated": "exif_rotated.jpg", "cmyk": "cmyk.jpg"}  # fmt: skip
MATRIX = ("matrix", "@odd", "--out", "@odd.csv", "--overwrite", *RANDOM)  # each run (API, CLI, installed) rewrites it


def cmyk_is_close_to_its_source(f, distances):
    """Pillow's CMYK to RGB is the plain twin; it must also be close to the RGB the JPEG was made from."""
    from keras_lpips.images import read_image

    check_same_as_plain(f, distances)
    assert np.abs(read_image(f("odd/cmyk.jpg")) - np.load(f("odd/cmyk_source.npy")) / 255.0).mean() < 0.02


def check_score_ok(f, result):
    value = float(result.stdout.split("=")[-1])
    assert np.isfinite(value) and value > 0, result.stdout


def verify(stdout):
    """`keras-lpips data verify` on the broken BAPPS copy: lists every problem, then exits 2."""
    return Cli(("data", "verify", "@bapps"), message="problems found in", stdout=stdout)


def eval_(*args, message="case"):
    return Cli(("eval", "--data", "@bapps", *RANDOM, "--no-baselines", "--quiet", "--load-size", "32", *args), message)


def fit(*args, message="case"):
    small = ("--layers", "2", "--load-size", "32", "--epochs", "1", "--decay-epochs", "0", "--batch-size", "2",
             "--mixed-precision", "off", "--quiet", "--val-subsets", "traditional")  # fmt: skip
    return Cli(("fit", "--data", "@bapps", *RANDOM, *small, *args), message)


def load_model_file(name):
    """`resolve.load_metric` (what --model and eval use); the Lambda's code must never run."""

    def call(f):
        from keras_lpips.resolve import load_metric

        try:
            return load_metric(f(name))
        finally:
            assert not f("pwned").exists()

    return call


def list_twoafc(split, subset):
    def call(f):
        from keras_lpips.data import list_twoafc

        return list_twoafc(f("bapps"), split, subset)

    return call


def fit_run(out, **options):
    def call(f):
        from keras_lpips.training import fit_run

        run = dict(layers=2, load_size=32, backbone_weights="random", epochs=1, decay_epochs=0, batch_size=2,
                   mixed_precision="off", subsets="traditional", val_subsets="traditional", progress=False)  # fmt: skip
        return fit_run(f("bapps"), f.resolve(out), **{**run, **options})

    return call


def check_jnd_only(f, result):
    """eval on a dataset of JND pairs only: their mAP, and a note that 2AFC was skipped."""
    assert "JND mAP (val):" in result.stdout and f"note: skipped 2AFC: no 2afc/val folder in {f('jnd_only')}" in result.stderr


def write_results(path):
    def call(f):
        from keras_lpips.reports import write_results

        return write_results({"model": "m", "data": "d", "columns": ["model"], "2afc": {}, "counts": {"2afc": {}}}, path)

    return call


def export(kind, path):
    def call(f):
        from keras_lpips import export

        return getattr(export, f"export_{kind}")(metric(), path)

    return call


def synthesize(out):
    def call(f):
        from keras_lpips.data import synthesize

        return synthesize(out, n_train=2, n_val=2, n_jnd=0)

    return call


def save_png(path):
    def call(f):
        from keras_lpips.pictures import save_png

        return save_png(np.zeros((4, 4, 3), np.uint8), path)

    return call


def uint8(rng):
    return rng.integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.uint8)


def uint8_distances(f):
    """Integer images are accepted, converted to float32: uint8 in (0, 255) as the same images in (0, 1)."""
    from keras_lpips import LPIPS

    rng = np.random.default_rng(3)
    pair = [uint8(rng), uint8(rng)]
    on_255 = LPIPS(net="alex", backbone_weights=None, seed=0, input_range=(0.0, 255.0))
    return float(np.asarray(on_255(pair))[0]), distance(pair[0][0] / np.float32(255.0), pair[1][0] / np.float32(255.0))


def same_as_float(f, distances):
    assert distances[0] > 0 and distances[0] == pytest.approx(distances[1], rel=1e-5), distances


def keras_object(kind, **kwargs):
    """`keras_lpips.<kind>(net="alex", untrained, input_range=(0, 1), **kwargs)`, as a case's API call."""

    def build(f=None):
        import keras_lpips

        arguments = {"net": "alex", "backbone_weights": None, "seed": 0, "input_range": (0.0, 1.0), **kwargs}
        return getattr(keras_lpips, kind)(**arguments)

    return build


@functools.cache
def loss_function():
    return keras_object("LPIPSLoss")()


@functools.cache
def mean_metric():
    return keras_object("MeanLPIPS")()


def loss_of(make):
    """`LPIPSLoss(...)(y_true, y_pred)` on what `make(rng)` returns."""
    return lambda f: np.asarray(loss_function()(*make(np.random.default_rng(1))))


def metric_update(make):
    """`MeanLPIPS(...).update_state(y_true, y_pred)` on what `make(rng)` returns."""
    return lambda f: mean_metric().update_state(*make(np.random.default_rng(1)))


ROW = 'name = "sq"\nbackbone = "squeeze"\ndistance = "lpips"\n'
STUDY_CONFIGS = {  # study TOMLs (keras-lpips study --config) with one fault each
    "study_missing.toml": '[[run]]\nname = "a"\nbackbone = "alex"\ndistance = "lpips"\n[[run]]\nname = "sq"\nbackbone = "squeeze"\n',
    "study_unknown.toml": f"[[run]]\n{ROW}layer = 3\n",
    "study_type.toml": f'[[run]]\n{ROW}layers = "3"\n',
    "study_net.toml": '[[run]]\nname = "sq"\nbackbone = "resnet"\ndistance = "lpips"\n',
    "study_noname.toml": '[[run]]\nbackbone = "squeeze"\ndistance = "lpips"\n',
    "study_train.toml": "[train]\nepoch = 3\n",
    "study_seeds.toml": 'seeds = [0, "1"]\n',
    "study_path_name.toml": '[[run]]\nname = "../../evil"\nbackbone = "squeeze"\ndistance = "lpips"\n',
}


def study_config(name):
    def call(f):
        from keras_lpips.study_config import load_config

        return load_config(f(name))

    return call


def study_cli(name):
    return Cli(("study", "--data", "@bapps", "--out", "@study_out", "--config", f"@{name}"))


def score_cli(*args, message="case", check=None):
    """`keras-lpips score ARGS`, with an untrained backbone unless ARGS name one."""
    named = {"--backbone-weights", "--model", "--preset"} & set(args)  # --model and --preset take no other metric option
    return Cli(("score", *args, *(() if named else RANDOM)), message, check=check)


CASES = {
    # --- image files -------------------------------------------------------------------------
    "missing_image": Case(score("a.png", "missing.png"), (score_cli("@a.png", "@missing.png"),), InputError, "No such image file: "),
    "not_an_image": Case(score("a.png", "text.png"), (score_cli("@a.png", "@text.png"),), DataError, "Not an image (or a format Pillow cannot read): "),
    "truncated_png": Case(score("a.png", "truncated.png"), (score_cli("@a.png", "@truncated.png"),), DataError, "Cannot decode image "),
    "float_tiff_nan": Case(score("a.png", "nan.tif"), (score_cli("@a.png", "@nan.tif"),), DataError, "has NaN or infinite pixel values"),
    "float_tiff_0_255": Case(score("a.png", "float255.tif"), (), DataError, "holds floating-point pixels in ["),
    **{name: Case(same_as_plain(name), (Cli(MATRIX, None, check=check_matrix(name)),),
                  check=cmyk_is_close_to_its_source if name == "cmyk" else check_same_as_plain)
       for name in ODD_FILES},
    "different_sizes": Case(score("a.png", "wide.png"), (score_cli("@a.png", "@wide.png", message="is 64x48 but"),),
                            InputError, "The two images must have the same shape"),
    "different_sizes_resized": Case(None, (score_cli("@a.png", "@wide.png", "--resize", message=None, check=check_score_ok),)),
    "smaller_than_minimum": Case(score("tiny.png", "tiny2.png"), (score_cli("@tiny.png", "@tiny2.png"),), InputError,
                                 "Images of 30x30 are too small for this network: it needs at least 31x31"),
    "smaller_than_minimum_matrix": Case(matrix_of("tiny.png", "tiny2.png"), (), InputError,
                                        "Images of 30x30 are too small for this network: it needs at least 31x31"),
    "exactly_minimum": Case(score("min.png", "min2.png"), (score_cli("@min.png", "@min2.png", message=None, check=check_score_ok),),
                            check=finite_positive),
    # --- tensors (Python only) ------------------------------------------------------------------
    "nan_in_tensor": Case(tensors(with_value(np.nan)), (), InputError, "img0 contains NaN or infinite values"),
    "inf_in_tensor": Case(tensors(with_value(-np.inf, 1)), (), InputError, "img1 contains NaN or infinite values"),
    "rank_3": Case(tensors(lambda r: [uniform()(r)[0]] * 2), (), InputError, "Expected images of shape (N, H, W, 3)"),
    "rank_5": Case(tensors(lambda r: [uniform()(r)[None]] * 2), (), InputError, "Expected images of shape (N, H, W, 3)"),
    "one_channel": Case(tensors(lambda r: [uniform(channels=1)(r)] * 2), (), InputError, "Received img0 of shape (1, 64, 64, 1)"),
    "four_channels": Case(tensors(lambda r: [uniform(channels=4)(r)] * 2), (), InputError, "Received img0 of shape (1, 64, 64, 4)"),
    "not_a_pair": Case(tensors(lambda r: [uniform()(r)]), (), InputError, "Expected a pair [img0, img1]"),
    "empty_batch": Case(tensors(lambda r: [uniform(n=0)(r)] * 2), check=no_distances),
    "values_0_255_for_0_1": Case(tensors(lambda r: [uniform(high=255.0)(r), uniform()(r)]), (), InputError,
                                 "outside input_range=(0, 1)"),
    "below_range_by_more_than_tolerance": Case(tensors(with_value(-0.02, 1)), (), InputError,
                                               "img1 has values in [-0.02, "),
    "outside_range_within_tolerance": Case(tensors(with_value(1.009)), (), check=finite_positive),
    # --- Python API: arguments and images of the wrong kind --------------------------------------
    "none_as_image": Case(tensors(lambda r: [None, uniform()(r)]), (), InputError,
                          "img0 must be an (N, H, W, 3) array or tensor of pixel values. Received: None"),
    "paths_as_images": Case(tensors(lambda r: ["a.png", "b.png"]), (), InputError,
                            "read image files with keras_lpips.images.read_image. Received: 'a.png'"),
    "dict_as_pair": Case(tensors(lambda r: {"img0": uniform()(r), "img1": uniform()(r)}), (), InputError,
                         "Expected a pair [img0, img1] of (N, H, W, 3) images. Received: dict"),
    "one_batch_as_pair": Case(tensors(lambda r: uniform(n=2)(r)), (), InputError, "Expected a pair [img0, img1] of (N, H, W, 3) images. Received: ndarray"),
    "ragged_list": Case(tensors(lambda r: [[[0.5], [0.5, 0.5]], uniform()(r)]), (), InputError, "img0 is not an array of numbers ("),
    "bool_images": Case(tensors(lambda r: [uniform()(r) > 0.5] * 2), (), InputError,
                        "img0 must hold real pixel values (a float or integer dtype). Received: ndarray of dtype bool"),
    "complex_images": Case(tensors(lambda r: [uniform()(r).astype(np.complex64)] * 2), (), InputError, "Received: ndarray of dtype complex64"),
    "string_array": Case(tensors(lambda r: [np.full((1, SIZE, SIZE, 3), "0.5"), uniform()(r)]), (), InputError, "img0 must hold real pixel values"),
    "python_lists_of_floats": Case(tensors(lambda r: [uniform()(r).tolist(), uniform()(r).tolist()]), (), check=finite_positive),
    "uint8_for_0_1": Case(tensors(lambda r: [uint8(r), uint8(r)]), (), InputError, "img0 has values in [0, 255], outside input_range=(0, 1)"),
    "uint8_for_0_255": Case(uint8_distances, (), check=same_as_float),
    "input_range_one_number": Case(lpips(input_range=(1,)), (), InputError, "input_range must be one of ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)). Received: input_range=(1,)"),
    "input_range_string": Case(lpips(input_range="0,1"), (), InputError, "Received: input_range='0,1'"),
    "input_range_reversed": Case(lpips(input_range=(1, 0)), (), InputError, "Received: input_range=(1, 0)"),
    "input_range_none": Case(lpips(input_range=None), (), InputError, "Received: input_range=None"),
    "dropout_out_of_range": Case(lpips(backbone_weights=None, dropout=1.5), (), InputError, "dropout must be a number from 0 to less than 1. Received: dropout=1.5"),
    "seed_not_an_integer": Case(lpips(backbone_weights=None, seed="x"), (), InputError, "seed must be an integer from 0 to 4294967295 or None. Received: seed='x'"),
    "weights_not_a_path": Case(lpips(backbone_weights=3), (), InputError, "backbone_weights must be a name, a path or None. Received: backbone_weights=3"),
    "unknown_argument": Case(lpips(backbone_weights=None, colour=True), (), InputError, "Unrecognized keyword arguments passed to LPIPS: {'colour': True}"),
    "loss_none": Case(loss_of(lambda r: (None, uniform()(r))), (), InputError, "y_true must be an (N, H, W, 3) array or tensor of pixel values"),
    "loss_paths": Case(loss_of(lambda r: ("a.png", "b.png")), (), InputError, "y_true must be an (N, H, W, 3) array or tensor of pixel values; read image files"),
    "loss_batches_differ": Case(loss_of(lambda r: (uniform(n=2)(r), uniform()(r))), (), InputError,
                                "The two images must have the same shape. Received y_true of shape (2, 64, 64, 3) and y_pred of shape (1, 64, 64, 3)"),
    "loss_values_outside_range": Case(loss_of(lambda r: (uniform()(r), uniform(high=255.0)(r))), (), InputError,
                                      "y_pred has values in [0.0"),  # the loss's argument named, not img1
    "loss_one_channel": Case(loss_of(lambda r: (uniform()(r), uniform(channels=1)(r))), (), InputError, "Received y_pred of shape (1, 64, 64, 1)"),
    "loss_bad_input_range": Case(keras_object("LPIPSLoss", input_range="0,1"), (), InputError, "Received: input_range='0,1'"),
    "loss_half_dtype": Case(keras_object("LPIPSLoss", dtype="mixed_bfloat16"), (), InputError,
                            ('LPIPSLoss would round the images to bfloat16', "Received: dtype='mixed_bfloat16'")),
    **{f"metric_dtype_{dtype}": Case(keras_object("MeanLPIPS", dtype=dtype), (), InputError,  # running totals in half precision
                                     (f"MeanLPIPS would round the distances and its running totals to {dtype.removeprefix('mixed_')}: ",
                                      "mixed policy", f"Received: dtype='{dtype}'"))
       for dtype in ("float16", "mixed_float16", "bfloat16", "mixed_bfloat16")},
    "loss_unknown_reduction": Case(keras_object("LPIPSLoss", reduction="avg"), (), InputError, "reduction"),
    "metric_none": Case(metric_update(lambda r: (uniform()(r), None)), (), InputError, "y_pred must be an (N, H, W, 3) array or tensor of pixel values"),
    "metric_one_channel": Case(metric_update(lambda r: (uniform()(r), uniform(channels=1)(r))), (), InputError,
                               "Expected images of shape (N, H, W, 3) (RGB, channels last). Received y_pred of shape (1, 64, 64, 1)"),
    "metric_values_outside_range": Case(metric_update(lambda r: (uniform(low=-1.0)(r), uniform()(r))), (), InputError, ("y_true has values in [-0.9", "outside input_range=(0, 1)")),
    "metric_bad_input_range": Case(keras_object("MeanLPIPS", input_range=(1,)), (), InputError, "Received: input_range=(1,)"),
    # --- study config files ----------------------------------------------------------------------
    "study_row_missing_field": Case(study_config("study_missing.toml"), (study_cli("study_missing.toml"),), InputError,
                                    "study_missing.toml: [[run]] row 2 ('sq'): missing field 'distance' (every row needs name, backbone, distance)"),
    "study_row_unknown_field": Case(study_config("study_unknown.toml"), (study_cli("study_unknown.toml"),), InputError,
                                    "[[run]] row 1 ('sq'): unknown field 'layer'; expected one of name, backbone, distance, layers, backbone_weights, mode. Received: layer = 3"),
    "study_row_wrong_type": Case(study_config("study_type.toml"), (), InputError, "[[run]] row 1 ('sq'): field 'layers' must be an integer. Received: layers = '3'"),
    "study_row_unknown_net": Case(study_config("study_net.toml"), (), InputError, "[[run]] row 1 ('sq'): Unknown net 'resnet'"),
    "study_row_without_name": Case(study_config("study_noname.toml"), (), InputError, "[[run]] row 1: missing field 'name'"),
    "study_unknown_train_option": Case(study_config("study_train.toml"), (), InputError, "[train]: unknown option 'epoch'; expected one of "),
    "study_row_name_is_a_path": Case(study_config("study_path_name.toml"), (study_cli("study_path_name.toml"),), InputError,
                                     "[[run]] row 1 ('../../evil'): a name is letters, digits, '.', '_' and '-' (it names the folder runs/NAME-seedS)"),
    "study_bad_seeds": Case(study_config("study_seeds.toml"), (), InputError, "seeds must be a non-empty list of non-negative integers. Received: seeds = [0, '1']"),
    # --- weight files ----------------------------------------------------------------------------
    "missing_weight_file": Case(lpips(backbone_weights="@missing.npz"), (), WeightsError, "Weight file not found: "),
    # the command line says it before anything loads: a path the user typed (exit code 2)
    "missing_weight_file_typed": Case(None, (score_cli("@a.png", "@b.png", "--backbone-weights", "@missing.npz", message="Weight file not found: "),
                                             score_cli("@a.png", "@b.png", "--lin-weights", "@missing.npz", message="Weight file not found: "))),
    "truncated_npz": Case(lpips(backbone_weights="@corrupt.npz"), (), WeightsError, "Cannot read weight file "),
    "truncated_pth": Case(lpips(backbone_weights="@truncated.pth"), (score_cli("@a.png", "@b.png", "--backbone-weights", "@truncated.pth"),),
                          WeightsError, "Cannot read weights from "),
    "image_as_lin_weights": Case(lpips(backbone_weights=None, lin_weights="@a.png"), (score_cli("@a.png", "@b.png", "--lin-weights", "@a.png"),),
                                 WeightsError, "Cannot read weights from "),
    "nan_in_weights": Case(lpips(backbone_weights="@nan_weights.npz"), (), WeightsError, "features.6.weight has NaN or infinite values"),
    "text_in_weights": Case(lpips(backbone_weights="@text_weights.npz"), (), WeightsError, "'features.0.bias' has dtype <U1, not numeric"),
    "checksum_mismatch": Case(lpips(), (Cli(("score", "@a.png", "@b.png")),), ChecksumError, "Checksum mismatch for ",
                              env=(("KERAS_HOME", "@home_tampered"),)),
    "offline_nothing_cached": Case(lpips(), (Cli(("score", "@a.png", "@b.png")), Cli(("weights", "fetch", "--net", "alex"))),
                                   WeightsUnavailableError, ("No ImageNet weights for net 'alex' in ", "Run `keras-lpips weights fetch --net alex`"),
                                   env=(("KERAS_HOME", "@home_empty"),)),
    "lambda_in_keras_file": Case(load_model_file("lambda.keras"), (score_cli("@a.png", "@b.png", "--model", "@lambda.keras"),),
                                 UnsafeFileError, "refusing to load "),
    "damaged_keras_file": Case(load_model_file("damaged.keras"), (), WeightsError, "Cannot load model file "),
    # the command refuses --net resnet while parsing (a choice): tests/test_cli_conventions.py
    "unknown_net": Case(lpips(net="resnet"), (), InputError,
                        "Unknown net 'resnet': expected one of alex, vgg, squeeze, alexnet"),
    # --- BAPPS data -------------------------------------------------------------------------------
    "missing_judge": Case(list_twoafc("val", "missing_judge"), (eval_("--subsets", "missing_judge"), verify("Missing judge file ")),
                          DataError, ("has mismatched folders (ref 2, p0 2, p1 2, judge 1); first missing file: ", "judge/000001.npy")),
    "judge_count_mismatch": Case(list_twoafc("train", "count_mismatch"),
                                 (fit("--subsets", "count_mismatch", "--out", "@run_mismatch"), verify("has mismatched folders (ref 4, p0 4, p1 4, judge 5)")),
                                 DataError, "has mismatched folders (ref 4, p0 4, p1 4, judge 5)"),
    "judge_outside_0_1": Case(list_twoafc("val", "judge_outside"), (verify("holds 1.5, outside [0, 1]"),),
                              DataError, "holds 1.5, outside [0, 1]"),
    "empty_subset": Case(list_twoafc("val", "empty"), (verify("is empty: no files in ref, p0, p1, judge"),),
                         DataError, "Subset 2afc/val/empty ("),
    "unknown_subset": Case(list_twoafc("val", "deblur"), (), InputError, "Subset 2afc/val/deblur not found"),
    "judge_npz_renamed": Case(list_twoafc("val", "npz_judge"), (eval_("--subsets", "npz_judge"), verify("not a .npy file")),
                              DataError, "000000.npy: not a .npy file (it does not start with the .npy magic bytes)"),
    "judge_header_huge": Case(list_twoafc("val", "huge_judge"),
                              (eval_("--subsets", "huge_judge"), fit("--subsets", "traditional", "--val-subsets", "huge_judge", "--out", "@run_huge")),
                              DataError, "should hold one number, holds a float64 array of shape (100000000000,)"),
    "judge_device": Case(list_twoafc("val", "device_judge"), (eval_("--subsets", "device_judge"), verify("is not a regular file")),
                         DataError, "000000.npy is not a regular file (a device, pipe or socket)"),
    "folder_named_png": Case(list_twoafc("train", "folder_png"),
                             (fit("--subsets", "folder_png", "--out", "@run_folder_png"), eval_("--subsets", "folder_png"), verify("is a folder, not a file")),
                             DataError, "000009.png is a folder, not a file"),
    "jnd_only": Case(None, (Cli(("eval", "--data", "@jnd_only", *RANDOM, "--no-baselines", "--quiet", "--load-size", "32"), None, check=check_jnd_only),)),
    # --- fit's options and output -----------------------------------------------------------------
    "batch_size_zero": Case(fit_run("@run_batch", batch_size=0),
                            (fit("--subsets", "traditional", "--out", "@run_batch", "--batch-size", "0", message="Invalid value for '--batch-size': "),
                             eval_("--subsets", "traditional", "--batch-size", "0", message="Invalid value for '--batch-size': ")),
                            InputError, "batch_size must be an integer from 1 to 65536. Received: batch_size=0"),
    "lr_nan": Case(fit_run("@run_lr", lr=float("nan")), (fit("--subsets", "traditional", "--out", "@run_lr", "--lr", "nan"),),
                   InputError, "lr must be a positive finite number. Received: lr=nan"),
    "out_inside_data": Case(fit_run("@bapps/2afc/val/myrun"), (fit("--subsets", "traditional", "--out", "@bapps/2afc/val/myrun"),),
                            InputError, ("Refusing to write ", "2afc/val/myrun: it is inside ")),
    # --- outputs -----------------------------------------------------------------------------------
    "unwritable_map": Case(save_png(f"{UNWRITABLE}.png"), (score_cli("@a.png", "@b.png", "--map", f"{UNWRITABLE}.png"),),
                           OutputError, f"Cannot write {UNWRITABLE}.png"),
    "unwritable_csv": Case(None, (Cli(("pairs", "@folder_a", "@folder_a", "--out", f"{UNWRITABLE}.csv", *RANDOM), f"Cannot write {UNWRITABLE}.csv"),)),
    "unwritable_results": Case(write_results(f"{UNWRITABLE}.md"), (eval_("--subsets", "traditional", "--output", f"{UNWRITABLE}.md"),),
                               OutputError, f"Cannot write {UNWRITABLE}.md"),
    "unwritable_run_dir": Case(fit_run(f"{UNWRITABLE}/run"), (fit("--subsets", "traditional", "--out", f"{UNWRITABLE}/run"),), OutputError,
                               f"Cannot create run directory {UNWRITABLE}/run"),
    "unwritable_savedmodel": Case(export("savedmodel", f"{UNWRITABLE}/model"), (), OutputError, f"Cannot write {UNWRITABLE}/model"),
    "unwritable_tflite": Case(export("tflite", f"{UNWRITABLE}.tflite"), (), OutputError, f"Cannot write {UNWRITABLE}.tflite"),
    "unwritable_synth": Case(synthesize(f"{UNWRITABLE}/synth"),
                             (Cli(("data", "synth", "--out", f"{UNWRITABLE}/synth", "--train", "2", "--val", "2")),),
                             OutputError, f"Cannot write {UNWRITABLE}/synth"),
    "missing_output_folder": Case(write_results("/nonexistent-folder/results.md"),
                                  (score_cli("@a.png", "@b.png", "--map", "/nonexistent-folder/map.png"),),
                                  InputError, "Output folder does not exist: /nonexistent-folder"),
    "not_a_folder": Case(None, (Cli(("matrix", "@a.png", *RANDOM), "Not a folder: "),)),
}  # fmt: skip

# The cases whose command fails at run time, exit code 1 (a bad file found while working, an output
# that cannot be written, weights unavailable, damaged or unsafe); every other error is a usage
# error, exit code 2 (`keras_lpips.errors`: the error class's `exit_code`).
FAILS_AT_RUN_TIME = {
    "not_an_image", "truncated_png", "float_tiff_nan", "float_tiff_0_255",
    "missing_weight_file", "truncated_npz", "truncated_pth", "image_as_lin_weights", "nan_in_weights", "text_in_weights",
    "checksum_mismatch", "offline_nothing_cached", "lambda_in_keras_file", "damaged_keras_file",
    "missing_judge", "judge_count_mismatch", "judge_outside_0_1", "empty_subset", "judge_npz_renamed", "judge_header_huge",
    "judge_device", "folder_named_png",
    "unwritable_map", "unwritable_csv", "unwritable_results", "unwritable_run_dir", "unwritable_savedmodel",
    "unwritable_tflite", "unwritable_synth",
}  # fmt: skip


def exit_code(name):
    return 1 if name in FAILS_AT_RUN_TIME else 2


API_IDS = [name for name, case in CASES.items() if case.api is not None]
CLI_ROWS = {f"{name}-{cli.name}": (name, cli) for name, case in CASES.items() for cli in case.cli}


# --- the tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", API_IDS)
def test_api(files, monkeypatch, name):
    case = CASES[name]
    for variable, value in case.env:
        monkeypatch.setenv(variable, files.resolve(value))
    if case.error is None:
        case.check(files, case.api(files))
        return
    with pytest.raises(Exception) as caught:
        case.api(files)
    assert type(caught.value) is case.error, repr(caught.value)
    assert case.error.exit_code == exit_code(name), f"{name}: a {case.error.__name__} exits {case.error.exit_code}"
    assert contains(str(caught.value), case.message), str(caught.value)
    assert "\n" not in str(caught.value)


def contains(text, message):
    return all(part in text for part in ((message,) if isinstance(message, str) else message))


def _command(files, name, cli):
    """(arguments, environment) of a command line: an empty weight cache, offline, unless the case says."""
    env = {"KERAS_HOME": str(files("home_empty")), "KERAS_LPIPS_OFFLINE": "1"}
    env.update({variable: files.resolve(value) for variable, value in CASES[name].env})
    return tuple(files.resolve(a) for a in cli.args), tuple(sorted(env.items()))


def _state(root):
    """{path: (size, mtime)} of the files under `root` (outputs, the marker the hostile model would
    write, the weight caches of the KERAS_HOME folders), but Keras' own settings file, which a
    fresh interpreter writes into an empty KERAS_HOME on import."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and p.name != "keras.json"}  # fmt: skip


def _changes(before, after):
    return sorted(path for path in before.keys() | after.keys() if before.get(path, "absent") != after.get(path, "absent"))


def _run(runner, files, row):
    """(result, paths under the files folder created, changed or removed) of a row's command line."""
    args, env = _command(files, *CLI_ROWS[row])
    before = _state(files.root)
    result = runner(*args, env=dict(env))
    return result, _changes(before, _state(files.root))


@pytest.fixture(scope="module")
def cli_results(files):
    """row -> its command line's (result, changes) in this process; identical command lines run once."""
    done = {}

    def result(row):
        command = _command(files, *CLI_ROWS[row])
        if command not in done:
            done[command] = _run(run_cli, files, row)
        return done[command]

    return result


def _message(row):
    """What the row's one error line contains (None: the command must succeed)."""
    name, cli = CLI_ROWS[row]
    return CASES[name].message if cli.message == "case" else cli.message


def check_cli(files, row, result, changes):
    """Success and its check, or the exit code (`exit_code`), one `error: ` line holding the message,
    and nothing written."""
    cli, message = CLI_ROWS[row][1], _message(row)
    assert "Traceback" not in result.stderr, result.stderr
    if message is None:
        assert result.returncode == 0, result.stderr
        cli.check(files, result)
        return
    expected = exit_code(CLI_ROWS[row][0])
    assert result.returncode == expected, f"exit code {result.returncode}, expected {expected} (FAILS_AT_RUN_TIME): {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and contains(lines[0], message), result.stderr
    if cli.stdout is not None:
        assert cli.stdout in result.stdout, result.stdout
    assert changes == [], f"an error wrote files: {changes}"


@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_cli(files, cli_results, row):
    check_cli(files, row, *cli_results(row))


# One command line per command family also runs as the installed command: the real console
# script, a fresh interpreter, TensorFlow's start-up and C++ logging, the process's own exit.
INSTALLED = {
    "missing_image-score": (),
    "png16_gray-matrix": (pytest.mark.slow,),
    "unwritable_csv-pairs": (pytest.mark.slow,),
    "missing_judge-eval": (pytest.mark.slow,),
    "judge_count_mismatch-fit": (pytest.mark.slow,),
    "missing_judge-data-verify": (pytest.mark.slow,),
    "unwritable_synth-data-synth": (pytest.mark.slow,),
    "offline_nothing_cached-weights-fetch": (pytest.mark.slow,),
    "study_row_missing_field-study": (pytest.mark.slow,),
}


@pytest.fixture(scope="module")
def installed_results(files, request):
    """row -> (result, changes) of the selected installed-command rows. Rows that succeed (and
    write) run alone; the error rows then run two at a time (each pays TensorFlow's start-up), and
    a change to the files folder while they ran is blamed on each of them (none may write)."""
    selected = [item.callspec.params["row"] for item in request.session.items
                if item.module is request.module and item.originalname == "test_installed"]  # fmt: skip
    writers = [row for row in selected if _message(row) is None]
    quiet = [row for row in selected if _message(row) is not None]
    results = {row: _run(run_installed, files, row) for row in writers}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        commands = {row: _command(files, *CLI_ROWS[row]) for row in quiet}
        before = _state(files.root)
        outcomes = dict(zip(quiet, pool.map(lambda row: run_installed(*commands[row][0], env=dict(commands[row][1])), quiet)))
        changes = _changes(before, _state(files.root))
    results.update({row: (outcome, changes) for row, outcome in outcomes.items()})
    return results


@pytest.mark.parametrize("row", [pytest.param(row, marks=marks) for row, marks in INSTALLED.items()])
def test_installed(files, installed_results, row):
    check_cli(files, row, *installed_results[row])


def test_every_error_class_is_public():
    """Each error (and the note) class `keras_lpips.errors` defines can be caught from the package
    itself, as docs/api.md lists them."""
    import inspect

    import keras_lpips
    from keras_lpips import errors

    defined = {
        name for name, cls in inspect.getmembers(errors, inspect.isclass)
        if cls.__module__ == errors.__name__ and issubclass(cls, (errors.KerasLPIPSError, errors.KerasLPIPSNote))
    }  # fmt: skip
    assert {"InUseError", "ResourceError"} <= defined <= set(keras_lpips.__all__)
    assert all(getattr(keras_lpips, name) is getattr(errors, name) for name in defined)
    api = (ROOT / "docs" / "api.md").read_text()
    assert all(f"{name}`" in api for name in defined)


def test_ragged_sparse_and_channel_less_images_are_one_clear_error():
    """Ragged and sparse tensors (tf.data's ragged_batch, a sparse conversion) are refused before
    the network, whose layers would fail on them; images whose channels a graph does not know
    (tf.io.decode_png without channels=) are told how to fix them."""
    import tensorflow as tf

    from keras_lpips import LPIPS

    lpips = LPIPS(net="alex", layers=1, backbone_weights=None, seed=0, input_range=(0, 1))
    dense = tf.random.uniform((2, 40, 40, 3))
    ragged, sparse = tf.RaggedTensor.from_tensor(dense), tf.sparse.from_dense(dense)
    for tensor, kind in [(ragged, "a ragged tensor (RaggedTensor)"), (sparse, "a sparse tensor (SparseTensor)")]:
        with pytest.raises(InputError, match=re.escape(f"img0 must be a dense (N, H, W, 3) array or tensor. Received: {kind}; make it dense first")):
            lpips([tensor, dense])
    traced = tf.function(lambda a, b: lpips([a, b]), input_signature=[tf.TensorSpec([1, None, None, None])] * 2)
    with pytest.raises(InputError, match=re.escape("its channels are unknown while tracing; decode with channels=3")):
        traced.get_concrete_function()
