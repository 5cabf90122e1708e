"""The wheel a user installs holds every module of the source tree, the licences and the shipped
weights, and nothing else; the sdist builds the same wheel and carries a test suite that runs."""

import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _source_copy(folder):
    """The files git tracks, copied to `folder` (a build in the checkout would leave, and reuse,
    its `build/` folder)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    return folder


def _wheel_files(wheel):
    """The wheel's files but its metadata folder."""
    return {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}


def _build(*args, cwd):
    subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "-q"], check=True, capture_output=True, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_wheel_holds_every_module_licence_and_weight_file_and_nothing_else(tmp_path):
    source = _source_copy(tmp_path / "source")
    _build("wheel", str(source), "-w", str(tmp_path / "dist"), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("keras_lpips-*.whl")
    names = _wheel_files(wheel)
    expected = {f"keras_lpips/{p.relative_to(ROOT / 'keras_lpips')}" for p in (ROOT / "keras_lpips").rglob("*.py")}
    expected |= {f"keras_lpips/cli/{p.name}" for p in (ROOT / "cli").glob("*.py")}
    shipped = [p for p in (ROOT / "saved_models").rglob("*") if p.suffix in (".npz", ".py") or p.name in ("SHA256SUMS", "LICENSE")]
    expected |= {f"keras_lpips/saved_models/{p.relative_to(ROOT / 'saved_models')}" for p in shipped}
    assert names == expected
    licences = [n for n in zipfile.ZipFile(wheel).namelist() if "licenses/" in n]
    assert len(licences) == 2, licences
    metadata = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))).decode()
    import keras_lpips

    assert f"Version: {keras_lpips.__version__}" in metadata.splitlines()


@pytest.mark.slow
def test_the_sdist_builds_the_same_wheel_and_carries_a_runnable_suite(tmp_path):
    source = _source_copy(tmp_path / "source")
    subprocess.run([sys.executable, "-c", "import setuptools.build_meta as b; b.build_sdist('../sdist')"],
                   check=True, capture_output=True, timeout=600, cwd=source)  # fmt: skip
    (sdist,) = (tmp_path / "sdist").glob("keras_lpips-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    for needed in ("tests/conftest.py", "tests/helpers.py", "tests/fixtures/reference_parity.npz", "data_tools/seeded_weights.py"):
        assert (unpacked / needed).is_file(), needed
    _build("wheel", str(unpacked), "-w", str(tmp_path / "from_sdist"), cwd=tmp_path)
    _build("wheel", str(source), "-w", str(tmp_path / "from_source"), cwd=tmp_path)
    (from_sdist,), (from_source,) = (tmp_path / "from_sdist").glob("*.whl"), (tmp_path / "from_source").glob("*.whl")
    assert _wheel_files(from_sdist) == _wheel_files(from_source)
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_layers.py"],
                               capture_output=True, text=True, timeout=300, cwd=unpacked)  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]


def test_source_tree_has_no_module_outside_the_installed_packages():
    """pyproject.toml lists packages explicitly: a new sub-package must be added there."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"keras_lpips." + ".".join(p.parent.relative_to(ROOT / "keras_lpips").parts) for p in (ROOT / "keras_lpips").rglob("__init__.py")}
    found = {name.rstrip(".") for name in found}
    assert found - listed == set()
