"""The wheel a user installs holds every module of the source tree, the licences and the shipped weights."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_holds_every_module_licence_and_weight_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("keras_lpips-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"keras_lpips/{p.relative_to(ROOT / 'keras_lpips')}" for p in (ROOT / "keras_lpips").rglob("*.py")}
    expected |= {f"keras_lpips/cli/{p.name}" for p in (ROOT / "cli").glob("*.py")}
    expected |= {f"keras_lpips/saved_models/{p.relative_to(ROOT / 'saved_models')}" for p in (ROOT / "saved_models").rglob("*.npz")}
    assert expected - names == set()
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any(n.startswith("cli/") for n in names), "no generic top-level 'cli' package"


def test_source_tree_has_no_module_outside_the_installed_packages():
    """pyproject.toml lists packages explicitly: a new sub-package must be added there."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"keras_lpips." + ".".join(p.parent.relative_to(ROOT / "keras_lpips").parts) for p in (ROOT / "keras_lpips").rglob("__init__.py")}
    found = {name.rstrip(".") for name in found}
    assert found - listed == set()
