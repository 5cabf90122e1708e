"""Outputs never destroy files (issue 12, part 4): no command writes over one of its inputs, even
with --overwrite, and none replaces an existing file without --overwrite. One rule,
`keras_lpips.files.check_output`, applied by every command before any work; `overwrite=False`
writes also refuse a file that appeared meanwhile (tests/test_concurrency.py races them).

`INPUT_CASES` and `EXISTING_CASES` go through every output option (score --map, pairs/matrix
--out, eval --output, weights convert, export --out, embed --out, fit/study --out), in this
process (`run_cli`); a few also run as the installed command. Each refused case checks the one
error line and that the file it would have destroyed is byte for byte unchanged.
"""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from keras_lpips import files
from keras_lpips.errors import InputError
from keras_lpips.weights.loading import shipped_lin_path
from tests.helpers import RANDOM, one_error_line, run_cli, run_installed

NO_LIN = ("--lin-weights", "none")


@pytest.fixture(scope="module")
def place(tmp_path_factory, tiny_bapps):
    """A folder with images d0/{a,b,c}.png and d1/{a,b}.png, linear weights w.npz, existing
    outputs (old.png, old.csv, old.md, old.npz, old.tflite, models/1/), links to d0/a.png, and
    the tiny BAPPS set as `bapps`. Tests copy it before writing (`work`)."""
    root = tmp_path_factory.mktemp("outputs")
    rng = np.random.default_rng(0)
    for folder, names in (("d0", "abc"), ("d1", "ab")):
        (root / folder).mkdir()
        for name in names:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / folder / f"{name}.png")
    shutil.copyfile(shipped_lin_path("v0.1", "alex"), root / "w.npz")
    for name in ("old.png", "old.csv", "old.md", "old.npz", "old.tflite"):
        (root / name).write_bytes(b"precious " + name.encode())
    (root / "models" / "1").mkdir(parents=True)
    (root / "models" / "1" / "saved_model.pb").write_bytes(b"precious model")
    os.symlink(root / "d0" / "a.png", root / "link.png")
    os.link(root / "d0" / "a.png", root / "hard.png")
    shutil.copytree(tiny_bapps, root / "bapps")
    return root


@pytest.fixture
def work(place, tmp_path, monkeypatch):
    """A fresh copy of `place` (links kept), as the working directory."""
    copy = tmp_path / "place"
    shutil.copytree(place, copy, symlinks=True)
    (copy / "hard.png").unlink()
    os.link(copy / "d0" / "a.png", copy / "hard.png")
    os.unlink(copy / "link.png")
    os.symlink(copy / "d0" / "a.png", copy / "link.png")
    monkeypatch.chdir(copy)
    return copy


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# (command line, victim): the output is an input of the command; refused even with --overwrite.
INPUT_CASES = {
    "score_map_is_ref": (("score", "d0/a.png", "d0/b.png", "--map", "d0/a.png", "--overwrite", *RANDOM), "d0/a.png"),
    "score_map_is_third": (("score", "d0/a.png", "d0/b.png", "d0/c.png", "--map", "d0/c.png", "--overwrite", *RANDOM), "d0/c.png"),
    "score_map_via_symlink": (("score", "d0/a.png", "d0/b.png", "--map", "link.png", "--overwrite", *RANDOM), "d0/a.png"),
    "score_map_via_hard_link": (("score", "d0/a.png", "d0/b.png", "--map", "hard.png", "--overwrite", *RANDOM), "d0/a.png"),
    "score_map_is_lin_weights": (("score", "d0/a.png", "d0/b.png", "--map", "w.npz", "--overwrite", "--lin-weights", "w.npz", *RANDOM), "w.npz"),
    "pairs_out_is_image": (("pairs", "d0", "d1", "--out", "d0/a.png", "--overwrite", *RANDOM), "d0/a.png"),
    "matrix_out_is_image": (("matrix", "d0", "--out", "./d0/b.png", "--overwrite", *RANDOM), "d0/b.png"),
    "matrix_against_out_is_image": (("matrix", "d0", "--against", "d1", "--out", "d1/a.png", "--overwrite", *RANDOM), "d1/a.png"),
    "eval_output_is_lin_weights": (("eval", "--data", "bapps", "--output", "w.npz", "--overwrite", "--lin-weights", "w.npz", *RANDOM), "w.npz"),
    "convert_onto_source": (("weights", "convert", "w.npz", "w.npz", "--overwrite"), "w.npz"),
    "export_onto_lin_weights": (("export", "--format", "tflite", "--out", "w.npz", "--overwrite", "--lin-weights", "w.npz", *RANDOM), "w.npz"),
    "export_savedmodel_is_model": (("export", "--format", "savedmodel", "--out", "models", "--overwrite", "--model", "models/1"),
                                   "models/1/saved_model.pb"),
    "embed_out_is_image": (("embed", "d0", "--out", "d0/c.png", *RANDOM, *NO_LIN), "d0/c.png"),
    "fit_out_is_data": (("fit", "--data", "bapps", "--out", "bapps", "--resume", *RANDOM), "bapps/2afc/train/traditional/judge/000000.npy"),
    "synth_out_is_images": (("data", "synth", "--out", "d0", "--train", "2", "--val", "2", "--images", "d0"), "d0/a.png"),
    "study_out_is_data": (("study", "--data", "bapps", "--out", "bapps", "--quick"), "bapps/2afc/val/traditional/judge/000000.npy"),
}  # fmt: skip

# (command line, existing output): refused without --overwrite.
EXISTING_CASES = {
    "score_map": (("score", "d0/a.png", "d0/b.png", "--map", "old.png", *RANDOM), "old.png"),
    "pairs_out": (("pairs", "d0", "d1", "--out", "old.csv", *RANDOM), "old.csv"),
    "matrix_out": (("matrix", "d0", "--out", "old.csv", *RANDOM), "old.csv"),
    "eval_output": (("eval", "--data", "bapps", "--output", "old.md", *RANDOM), "old.md"),
    "convert_destination": (("weights", "convert", "w.npz", "old.npz"), "old.npz"),
    "export_tflite": (("export", "--format", "tflite", "--out", "old.tflite", *RANDOM), "old.tflite"),
    "export_savedmodel_version": (("export", "--format", "savedmodel", "--out", "models", *RANDOM), "models/1/saved_model.pb"),
}  # fmt: skip


def assert_refused(result, expected, before, work):
    line = one_error_line(result)
    assert result.returncode == 2 and expected in line, (result.returncode, line)
    assert snapshot(work) == before  # nothing written, nothing changed


@pytest.mark.parametrize("case", INPUT_CASES)
def test_an_output_is_never_an_input(work, case):
    args, victim = INPUT_CASES[case]
    assert (work / victim).is_file()
    before = snapshot(work)
    assert_refused(run_cli(*args), "an input of this command (even --overwrite never replaces an input)", before, work)


@pytest.mark.parametrize("case", EXISTING_CASES)
def test_an_existing_output_needs_overwrite(work, case):
    args, existing = EXISTING_CASES[case]
    assert (work / existing).is_file()
    before = snapshot(work)
    assert_refused(run_cli(*args), "already exists; pass --overwrite", before, work)


@pytest.mark.parametrize("command", [
    ("score", "d0/a.png", "d0/b.png", "--map", "old.png", "--overwrite", *RANDOM),
    ("matrix", "d0", "--out", "old.csv", "--overwrite", *RANDOM),
    ("weights", "convert", "w.npz", "old.npz", "--overwrite"),
])  # fmt: skip
def test_overwrite_replaces_an_output_that_is_not_an_input(work, command):
    output = command[command.index("--map") + 1] if "--map" in command else command[command.index("--out") + 1] if "--out" in command else command[3]
    inputs = {k: v for k, v in snapshot(work).items() if k != output}
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert not (work / output).read_bytes().startswith(b"precious")
    assert {k: v for k, v in snapshot(work).items() if k != output} == inputs


def test_installed_command_never_writes_over_its_input(work):
    """The reported case: `score --map` onto one of its images, as the installed command."""
    before = snapshot(work)
    result = run_installed("score", "d0/a.png", "d0/b.png", "--map", "d0/b.png", "--overwrite", *RANDOM, cwd=work)
    assert_refused(result, "Refusing to write d0/b.png: it is d0/b.png, an input of this command", before, work)


@pytest.mark.slow
def test_installed_command_refuses_an_existing_output(work):
    before = snapshot(work)
    result = run_installed("matrix", "d0", "--out", "old.csv", *RANDOM, cwd=work)
    assert_refused(result, "old.csv already exists; pass --overwrite", before, work)


@pytest.mark.parametrize("command,output,message", [
    (("score", "d0/a.png", "d0/b.png", "--map", "pipe.png", "--overwrite", *RANDOM), "pipe.png", "it is a named pipe, not a file"),
    (("matrix", "d0", "--out", "d1/m.png", *RANDOM), "d1/m.png", "it is inside d1, a folder this command reads"),
    (("eval", "--data", "bapps", "--output", "bapps/2afc/val/traditional/ref/000000.png", "--overwrite", *RANDOM), None, "it is inside bapps"),
    (("pairs", "d0", "d1", "--out", "missing/p.csv", *RANDOM), None, "Output folder does not exist: missing"),
    (("export", "--format", "savedmodel", "--out", "old.png", "--overwrite", *RANDOM), "old.png", "it is a file, not a folder"),
    (("score", "d0/a.png", "d0/b.png", "--map", "m.jpg", *RANDOM), None, "--map writes a PNG: name it .png"),
])  # fmt: skip
def test_outputs_that_would_break_something_are_refused_up_front(work, command, output, message):
    """Not a regular file (a FIFO, a device), inside a folder the command reads, in a missing
    folder, of the wrong kind: refused in one line before any work, nothing written."""
    if output == "pipe.png":
        os.mkfifo(work / "pipe.png")
    if command[0] == "matrix":  # the folders read are d0 and, as --against, d1
        command = (*command[:2], "--against", "d1", *command[2:])
    before = snapshot(work)
    assert_refused(run_cli(*command), message, before, work)
    if output == "pipe.png":
        assert (work / "pipe.png").is_fifo()


# (command line): each output option, into the folder "ro" that this process cannot write.
UNWRITABLE_CASES = {
    "score_map": ("score", "d0/a.png", "d0/b.png", "--map", "ro/m.png", *RANDOM),
    "pairs_out": ("pairs", "d0", "d1", "--out", "ro/p.csv", *RANDOM),
    "matrix_out": ("matrix", "d0", "--out", "ro/m.csv", *RANDOM),
    "eval_output": ("eval", "--data", "bapps", "--output", "ro/r.md", *RANDOM),
    "convert_destination": ("weights", "convert", "w.npz", "ro/w.npz"),
    "export_tflite": ("export", "--format", "tflite", "--out", "ro/sub/x.tflite", *RANDOM),
    "export_savedmodel": ("export", "--format", "savedmodel", "--out", "ro/models", *RANDOM),
    "embed_out": ("embed", "d0", "--out", "ro/e.npz", *RANDOM, *NO_LIN),
    "fit_out": ("fit", "--data", "bapps", "--out", "ro/run", *RANDOM),
}  # fmt: skip


@pytest.mark.parametrize("case", UNWRITABLE_CASES)
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(work, monkeypatch, case):
    """A read-only place (a read-only mount; simulated here, as root may write anywhere): one
    line, exit 1, before anything is computed."""
    (work / "ro").mkdir()
    unwritable = str(work / "ro")
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: os.path.abspath(path) != unwritable and access(path, mode, **kw))
    before = snapshot(work)
    result = run_cli(*UNWRITABLE_CASES[case])
    line = one_error_line(result)
    assert result.returncode == 1 and line.startswith("error: Cannot write ro/") and line.endswith(": ro is not writable"), line
    assert result.stdout == "" and snapshot(work) == before


def test_writability_is_asked_of_the_folder_written_in(tmp_path, monkeypatch):
    """An output folder that exists is filled in place: it must be writable, not its parent (a
    run folder of one's own in a read-only place); a file, or a folder still to create, needs the
    nearest existing folder above it. A missing folder or an existing output is said as such
    first."""
    from keras_lpips.errors import OutputError

    (tmp_path / "ro" / "mine").mkdir(parents=True)
    (tmp_path / "ro" / "old.csv").write_text("old")
    unwritable = str(tmp_path / "ro")
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: os.path.abspath(path) != unwritable and access(path, mode, **kw))
    files.check_output(tmp_path / "ro" / "mine", overwrite=True, kind="folder")
    for path, kind in ((tmp_path / "ro" / "new", "folder"), (tmp_path / "ro" / "new.csv", "file"), (tmp_path / "ro" / "a" / "b", None)):
        with pytest.raises(OutputError, match=f"^Cannot write {path}: {unwritable} is not writable$"):
            files.check_output(path, kind=kind)
    with pytest.raises(InputError, match="Output folder does not exist"):
        files.check_output(tmp_path / "ro" / "missing" / "x.csv", kind="file")
    with pytest.raises(InputError, match="already exists; pass overwrite=True"):
        files.check_output(tmp_path / "ro" / "old.csv", kind="file")


def test_a_map_of_identical_images_is_dark(work):
    result = run_cli("score", "d0/a.png", "d0/a.png", "--map", "same.png", *RANDOM)
    assert result.returncode == 0 and "= 0.0000" in result.stdout, result.stderr
    from keras_lpips.pictures import _RAMP

    dark = _RAMP[0].astype(np.uint8)
    assert (np.asarray(Image.open(work / "same.png"))[:, -1] == dark).all()  # the rightmost tile: the map


# --- the API ----------------------------------------------------------------------------------


def test_check_output_rule(work):
    files.check_output(work / "new.csv", [work / "d0"])  # a new file beside an input folder: fine
    files.check_output(work / "d0" / "new.csv", [work / "d0"])  # inside it, if no listing would read it back
    files.check_output(work / "dangling.png", [], overwrite=True)  # a broken link is replaced
    files.check_output(work / "old.csv", [work / "d0"], overwrite=True)
    files.check_output(work / "new.csv", [None, work / "missing.png"])  # absent inputs are skipped
    files.check_output(work / "models", overwrite=True, kind="folder")
    os.mkfifo(work / "pipe.png")
    (work / "dangling.png").symlink_to(work / "nowhere.png")
    for output, inputs, overwrite, message in [
        (work / "old.csv", [], False, "already exists; pass overwrite=True to replace it$"),
        (work / "d0" / "new.png", [work / "d0"], False, r"it is inside \S*d0, a folder this command reads"),
        (work / "pipe.png", [], True, "it is a named pipe, not a file"),
        (work / "dangling.png", [], False, "already exists"),
        (work / "old.csv", [], True, "it is a file, not a folder"),
        (work / "models", [], True, "it is a folder, not a file"),
        (work / "missing" / "x.csv", [], True, "Output folder does not exist: "),
        (work / "d0" / "a.png", [work / "d0" / "a.png"], True, r"it is \S*a.png, an input of this command \(even overwrite=True never"),
        (work / "d0" / ".." / "d0" / "a.png", [work / "d0" / "a.png"], True, "it is"),
        (work / "link.png", [work / "d0" / "a.png"], True, "it is"),
        (work / "hard.png", [work / "d0" / "a.png"], True, "it is"),
        (work / "d0", [work / "d0" / "a.png"], True, "it holds"),
        (work, [work / "bapps"], True, "it holds"),
    ]:
        kind = "folder" if "not a folder" in message else "file" if "not a file" in message or "Output folder" in message else None
        with pytest.raises(InputError, match=message):
            files.check_output(output, inputs, overwrite, kind=kind)


def test_an_output_folder_inside_the_dataset_names_the_argument(work):
    """The library names its own argument (`fit_run`'s out_dir, `run_study`'s out); the program, --out."""
    from keras_lpips.training.fit import check_outside_inputs

    with pytest.raises(InputError, match=r"inside the dataset bapps .*; choose an out_dir= outside it$"):
        check_outside_inputs("bapps/runs/a", "bapps")
    with pytest.raises(InputError, match=r"; choose an out= outside it$"):
        check_outside_inputs("bapps/study", "bapps", argument="out")


def test_writers_without_overwrite_refuse_an_existing_file(work):
    from keras_lpips.pictures import save_png
    from keras_lpips.reports import write_results
    from keras_lpips.weights.rewrite import convert_weight_file

    before = snapshot(work)
    with pytest.raises(FileExistsError):
        files.atomic_write(work / "old.csv", "new", overwrite=False)
    with pytest.raises(InputError, match="already exists"):
        files.atomic_write(work / "old.csv", "new", overwrite=False, as_input_error=True)
    with pytest.raises(InputError, match="already exists"):
        save_png(np.zeros((4, 4, 3), np.uint8), work / "old.png", overwrite=False)
    with pytest.raises(InputError, match="already exists"):
        write_results({"model": "m", "data": "d", "columns": ["model"], "2afc": {}, "counts": {"2afc": {}}}, work / "old.md", overwrite=False)
    with pytest.raises(InputError, match="already exists"):
        convert_weight_file(work / "w.npz", work / "old.npz", "alex")
    with pytest.raises(InputError, match="an input of this command"):
        convert_weight_file(work / "w.npz", work / "w.npz", "alex", overwrite=True)
    assert snapshot(work) == before
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]


def test_publish_new_creates_or_refuses(tmp_path):
    tmp, target = tmp_path / "t", tmp_path / "target"
    tmp.write_text("one")
    files.publish_new(tmp, target)
    assert target.read_text() == "one" and not tmp.exists()
    tmp.write_text("two")
    with pytest.raises(FileExistsError):
        files.publish_new(tmp, target)
    assert target.read_text() == "one" and tmp.read_text() == "two"
