"""The installed `keras-lpips` command: results, files written, and one-line errors (exit 2)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = pathlib.Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
COMMAND = str(pathlib.Path(sys.executable).parent / "keras-lpips")
RANDOM = ["--backbone-weights", "random"]


def run(*args, env=None):
    return subprocess.run([COMMAND, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def assert_user_error(result, message):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / "other_size.png")
    Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(folder / "tiny.png")
    (folder / "truncated.png").write_bytes((folder / "a.png").read_bytes()[:300])
    (folder / "text.png").write_text("not an image")
    return folder


def test_help_is_instant_and_teaches_by_example():
    result = run("score", "--help")
    assert result.returncode == 0 and "keras-lpips score examples/ref.png" in result.stdout


def test_score_triplet_json_and_map(images, tmp_path):
    out = tmp_path / "map.png"
    result = run("score", images / "a.png", images / "b.png", images / "a.png", "--json", "--map", out, *RANDOM)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pairs"][1]["distance"] == 0.0 and report["pairs"][0]["distance"] > 0
    assert report["closer"] == str(images / "a.png")
    with Image.open(out) as picture:
        assert picture.size[0] > picture.size[1]  # images and maps side by side


def test_score_different_sizes_needs_resize(images):
    assert_user_error(run("score", images / "a.png", images / "other_size.png", *RANDOM), "pass --resize")
    assert run("score", images / "a.png", images / "other_size.png", "--resize", *RANDOM).returncode == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["score", "{d}/a.png", "{d}/missing.png"], "No such image file"),
        (["score", "{d}/a.png", "{d}/text.png"], "Not an image"),
        (["score", "{d}/a.png", "{d}/truncated.png"], "Cannot decode image"),
        (["score", "{d}/tiny.png", "{d}/tiny.png"], "too small for this network: it needs at least 31x31"),
        (["score", "{d}/a.png", "{d}/b.png", "--net", "resnet"], "Unknown net 'resnet'"),
        (["score", "{d}/a.png", "{d}/b.png", "--map", "/nonexistent/dir/map.png"], "Output folder does not exist"),
        (["score", "{d}/a.png", "{d}/b.png", "--lin-weights", "{d}/text.png"], "weights"),
        (["matrix", "{d}/missing_folder"], "Not a folder"),
    ],
)
def test_user_errors_are_one_line_exit_2(images, args, message):
    assert_user_error(run(*[a.format(d=images) for a in args], *RANDOM), message)


def test_offline_without_cached_weights(images, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KERAS_HOME": str(tmp_path), "KERAS_LPIPS_OFFLINE": "1"}
    assert_user_error(run("score", images / "a.png", images / "b.png", env=env), "keras-lpips weights fetch --net alex")


def test_pairs_and_matrix_write_csv(images, tmp_path):
    matrix_csv, pairs_csv = tmp_path / "matrix.csv", tmp_path / "pairs.csv"
    folder = tmp_path / "same_size"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    assert run("matrix", folder, "--out", matrix_csv, *RANDOM).returncode == 0
    assert run("pairs", folder, images, "--out", pairs_csv, *RANDOM).returncode == 0
    rows = [line.split(",") for line in matrix_csv.read_text().splitlines()]
    assert rows[0] == ["", "a.png", "b.png", "c.png"] and rows[1][1] == "0.000000" and rows[1][2] == rows[2][1]
    pairs = [line.split(",") for line in pairs_csv.read_text().splitlines()]
    assert pairs[0] == ["name", "distance"] and [p[1] for p in pairs[1:]] == ["0.000000"] * 3
