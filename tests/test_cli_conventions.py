"""The conventions of Click/Typer programs, through the installed command where start-up is the
point: help, usage errors, `--version` and `weights list` answer without importing TensorFlow;
`-h`, choices listed in help, shell completion, `--json` on every command that prints results,
JSON numbers at float32 precision, advice that names the flags."""

import itertools
import json
import re
import time

import numpy as np
import pytest
from PIL import Image

import keras_lpips
from tests.helpers import RANDOM, ROOT, one_error_line, run_cli, run_installed

# Commands that print results, each with --json.
PRINTING = [
    "score", "pairs", "matrix", "eval", "embed", "nearest", "diversity", "export",
    "weights list", "weights fetch", "weights convert", "data verify",
]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def _imported(stderr):
    """Top-level module names in `python -X importtime` output (PYTHONPROFILEIMPORTTIME)."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


@pytest.mark.parametrize(
    "args,code",
    [
        (("--help",), 0),
        (("-h",), 0),
        (("score", "-h"), 0),
        (("--version",), 0),
        (("score", "a.png", "b.png", "--jsn"), 2),
        (("score", "a.png", "b.png", "--net", "resnet"), 2),
        (("weights", "list"), 0),
        (("weights", "list", "--json"), 0),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_answers_without_tensorflow(args, code):
    """No TensorFlow, Keras or model code before a command needs it: these answer in a fraction
    of a second (1.5 s leaves slack on a loaded machine; 0.2 s on an idle one)."""
    start = time.perf_counter()
    result = run_installed(*args, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode == code, result.stderr
    assert elapsed < 1.5, f"keras-lpips {' '.join(args)} took {elapsed:.2f} s"
    traced = run_installed(*args, env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    modules = _imported(traced.stderr)
    assert "typer" in modules, traced.stderr[-2000:]  # the trace is there
    heavy = {"tensorflow", "keras", "keras_lpips.model", "keras_lpips.backbones", "torch"} & modules
    assert not heavy, heavy


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, folder):
    """A working folder for usage errors: D0/ and D1/ of images, EMPTY/, r.png and a.png,
    exists.csv, and sm/ (an export's layout: sm/1/saved_model.pb)."""
    scratch = tmp_path_factory.mktemp("usage")
    for name in ("D0", "D1"):
        (scratch / name).mkdir()
        for image in folder.iterdir():
            (scratch / name / image.name).write_bytes(image.read_bytes())
    (scratch / "EMPTY").mkdir()
    (scratch / "r.png").write_bytes((folder / "a.png").read_bytes())
    (scratch / "a.png").write_bytes((folder / "b.png").read_bytes())
    (scratch / "exists.csv").write_text("name,distance\n")
    (scratch / "sm" / "1").mkdir(parents=True)
    (scratch / "sm" / "1" / "saved_model.pb").write_bytes(b"")
    return scratch


# Usage errors found without a model: each answers exit 2, one line (with these words), before
# TensorFlow or Keras is imported.
USAGE_ERRORS = [
    ("pairs nodir D1", "Not a folder: nodir"),
    ("pairs D0 D1 --out exists.csv", "exists.csv already exists; pass --overwrite"),
    ("matrix EMPTY", "Need at least two images in EMPTY; found 0"),
    ("matrix D0 --against EMPTY", "Need images in both D0 and EMPTY"),
    ("export --format savedmodel --out sm", "sm/1 already exists"),
    ("export --format savedmodel --out x --quantize fp16", "--quantize applies to --format tflite only"),
    ("export --format tflite --out q.tflite --max-pixels 100", "--max-pixels applies to --format savedmodel only"),
    ("export --format onnx --out q.onnx --model-version 3", "--model-version applies to --format savedmodel only"),
    ("export --format tflite --out q.tflite --model-version 1", "--model-version applies to --format savedmodel only"),
    ("export --format tflite --out x.onnx", "--format tflite writes a .tflite file: name it .tflite. Received: --out x.onnx"),
    ("export --format onnx --out x.tflite", "--format onnx writes a .onnx file"),
    ("export --format tflite --out x.txt", "Received: --out x.txt"),
    ("export --format savedmodel --out m.tflite", "--format savedmodel writes a folder"),
    ("export --format savedmodel --out new --model sm", "--model sm is already a SavedModel"),
    ("score r.png a.png --model nothere", "--model nothere does not exist"),
    ("score r.png a.png --layers 0", "--layers must be an integer from 1 to 5 for net 'alex'. Received: --layers 0"),
    ("score r.png a.png --layers -1", "Received: --layers -1"),
    ("score r.png a.png --net squeeze --layers 8", "from 1 to 7 for net 'squeeze'"),
    ("score r.png a.png --lin-weights v0.3", "--lin-weights v0.3 is neither a shipped version (official, v0.1, v0.0, random) nor a file"),
    ("score r.png a.png --backbone-weights foo", "--backbone-weights foo is neither a weight name (imagenet, keras-imagenet, random) nor a file"),
    ("nearest D1 D0 --projection 3", "--projection applies to a FAISS index"),
    ("diversity EMPTY", "No images"),
    ("diversity r.png", "Not a folder: r.png"),
    ("embed EMPTY --out e1.npz", "No images"),
    ("weights convert r.png out.pth", "DESTINATION must be a .npz or .safetensors file"),
    ("weights convert nothere.pth out.npz", "SOURCE nothere.pth is not a file"),
    ("eval --data nodir", "BAPPS root nodir is not a directory"),
    ("data verify nodir", "BAPPS root nodir is not a directory"),
    ("data verify D0", "D0 does not look like a BAPPS dataset"),
    ("eval --data D0", "D0 does not look like a BAPPS dataset: expected a 2afc/ or jnd/ folder in it"),
    ("fit --data nodir --out runx", "BAPPS root nodir is not a directory"),
    ("study --data nodir --out sx", "BAPPS root nodir is not a directory"),
]


@pytest.mark.parametrize("args,words", USAGE_ERRORS, ids=[args for args, _ in USAGE_ERRORS])
def test_usage_errors_answer_without_tensorflow(scratch, args, words):
    """A bad path, value or combination the user typed is found before anything heavy is
    imported: exit 2, one line naming the flags, no TensorFlow or Keras (what makes it fast: the
    times are benchmarks/startup.py's)."""
    result = run_installed(*args.split(), cwd=scratch, env={"KERAS_LPIPS_OFFLINE": "1"}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert words in one_error_line(result)
    traced = run_installed(*args.split(), cwd=scratch, env={"KERAS_LPIPS_OFFLINE": "1", "PYTHONPROFILEIMPORTTIME": "1"}, timeout=60)
    heavy = {"tensorflow", "keras", "keras_lpips.model", "keras_lpips.backbones", "torch"} & _imported(traced.stderr)
    assert not heavy, heavy
    assert sorted(p.name for p in scratch.iterdir()) == ["D0", "D1", "EMPTY", "a.png", "exists.csv", "r.png", "sm"]


def test_tap_counts_are_the_backbones():
    """`keras_lpips.resolve.TAPS` (light, for checking --layers) is each backbone's tap count."""
    from keras_lpips.backbones import get_backbone
    from keras_lpips.presets import NETS
    from keras_lpips.resolve import TAPS

    assert TAPS == {net: len(get_backbone(net).taps) for net in NETS}


def test_arguments_are_upper_case_in_usage_help_and_errors():
    """Click's convention (and the README's): `REF A [B]`, `Missing argument 'REF'`, never
    `{ref}`, in every command's usage line and help."""
    from tests.test_cli import click_commands

    for name, command in click_commands().items():
        text = run_cli(*name.split(), "-h", env={"COLUMNS": "400"}).stdout
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        arguments = [param for param in command.params if param.param_type_name == "argument"]
        shown = [param.name.upper() if param.required else f"[{param.name.upper()}]" for param in arguments]
        assert "{" not in usage and usage.split("[OPTIONS]")[1].split() == shown, (name, usage)
    assert "Usage: keras-lpips score [OPTIONS] REF A [B]" in run_cli("score", "-h", env={"COLUMNS": "400"}).stdout
    missing = run_cli("score")
    assert missing.returncode == 2 and "Missing argument 'REF'" in one_error_line(missing)


# The pages that write commands with their arguments (docs/embedding.md and docs/training.md aside).
ARGUMENT_DOCS = ("README.md", "docs/cli.md", "docs/weights.md", "docs/serving.md", "docs/embedding.md", "docs/training.md")


def test_the_docs_name_arguments_as_help_does():
    """Where the docs write a command with its positional arguments (`score REF A [B]`, `matrix
    FOLDER --against DIR2`, `weights convert SOURCE DESTINATION`), they are the names and brackets
    of its usage line; a missing-argument example is what the bare command prints."""
    from tests.test_cli import click_commands

    commands = click_commands()
    names = sorted(commands, key=len, reverse=True)  # "beam embed" before "embed"
    for doc in ARGUMENT_DOCS:
        text = (ROOT / doc).read_text().replace("``", "")  # a span within ``...`` stays a span
        for span in re.findall(r"`([^`]+)`", text):
            span = span.removeprefix("keras-lpips ")
            name = next((n for n in names if span == n or span.startswith(f"{n} ")), None)
            if name is None:
                continue
            words = span[len(name) :].split()
            written = list(itertools.takewhile(lambda w: re.fullmatch(r"\[?[A-Z][A-Z0-9_]*\]?", w), words))
            arguments = [param for param in commands[name].params if param.param_type_name == "argument"]
            shown = [param.name.upper() if param.required else f"[{param.name.upper()}]" for param in arguments]
            assert written == shown[: len(written)], f"{doc}: `{span}` names the arguments of {name!r} {written}, --help {shown}"
        for missing, name in re.findall(r"(Missing argument '[^']*'\.) \(see keras-lpips ([a-z ]+) --help\)", text):
            assert missing in one_error_line(run_cli(*name.split())), f"{doc}: {missing} (keras-lpips {name})"


def test_version_is_the_programs():
    result = run_installed("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"keras-lpips {keras_lpips.__version__}"


def test_help_option_h_everywhere_and_completion_installs():
    from tests.test_cli import click_commands

    for name in click_commands():
        result = run_cli(*name.split(), "-h")
        assert result.returncode == 0 and f"keras-lpips {name} " in result.stdout, (name, result.stderr)
    top = run_cli("-h", env={"COLUMNS": "200"})
    assert "--install-completion" in top.stdout and "--show-completion" in top.stdout
    assert "--version" in top.stdout



def _help_pages():
    """{"": the program, "data": the data group, "score": ..., "data verify": ...}: every group
    and command, by the words before `-h` that show its help, with its click object."""
    import typer

    from keras_lpips.cli.app import app
    from tests.test_cli import click_commands

    group = typer.main.get_command(app)
    return {"": group, **{name: c for name, c in group.commands.items() if hasattr(c, "commands")}, **click_commands()}


def _rendered_help(name):
    result = run_cli(*name.split(), "-h", env={"COLUMNS": "1000"})  # wide: no help text wraps across a table's rows
    assert result.returncode == 0, (name, result.stderr)
    return result.stdout


def test_help_keeps_square_brackets():
    """Rich reads `[faiss]` in a help text as markup and drops it (`pip install 'keras-lpips'`)
    unless written `\\[faiss]`: every bracketed text of every help string is shown, brackets
    and all, and no escaping backslash is."""
    for name, command in _help_pages().items():
        shown = re.sub(r"[\s│]", "", _rendered_help(name))
        texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        for text in texts:
            for bracketed in re.findall(r"\\?\[[^\[\]]*\]", text):
                assert re.sub(r"\s", "", bracketed.lstrip("\\")) in shown, (name, bracketed)
        assert "\\[" not in shown, name
    assert "pipinstall'keras-lpips[faiss]'" in re.sub(r"[\s│]", "", _rendered_help("nearest"))


def test_flags_show_no_value_in_help():
    """A flag takes no value, and --help shows none (Typer 0.2x writes `--json <bool>`, and
    `--resize true` would read `true` as an image): no command's help shows a `<bool>`, and a
    flag's row goes from its name straight to its help."""
    for name in _help_pages():
        text = _rendered_help(name)
        assert "<bool>" not in text, name
    score = _rendered_help("score")
    for flag, help_start in (("--resize", "Resize"), ("--json", "Print JSON"), ("--overwrite", "Replace")):
        assert re.search(rf"{flag}\s+{help_start}", score), flag
    assert re.search(r"--help\s+-h\s+Show this message", score)
    assert re.search(r"--baselines\s+--no-baselines\s+Also score", _rendered_help("eval"))


@pytest.mark.parametrize(
    "command,choices",
    [
        ("score", ["alex|vgg|squeeze|alexnet|vgg16|squeezenet", "0.1|0.0", "lpips|cosine", "alex-v0.1|alex-v0.0|vgg-v0.1"]),
        ("export", ["savedmodel|tflite|onnx", "none|fp16|dynamic"]),
        ("fit", ["lin|tune|scratch", "reference|ones", "auto|off|bf16|fp16", "auto|one-device|mirrored|multiworker|tpu"]),
        ("nearest", ["exact|flat|hnsw|ivf"]),
        ("data download", ["twoafc_train|twoafc_val|jnd"]),
    ],
)
def test_choices_are_listed_in_help_and_checked_while_parsing(command, choices):
    text = re.sub(r"\s+", "", run_cli(*command.split(), "-h", env={"COLUMNS": "400"}).stdout)
    for listed in choices:
        assert listed in text, (command, listed)


def test_choices_agree_with_the_library():
    import inspect
    import typing

    from keras_lpips import embedding_index, embedding_queries, export
    from keras_lpips.cli import embedding as embedding_command
    from keras_lpips.cli import export as export_command
    from keras_lpips.training import devices

    assert export_command.QUANTIZATIONS == export.QUANTIZATIONS
    assert devices.STRATEGIES == ("auto", "one-device", "mirrored", "multiworker", "tpu")
    assert devices.PRECISIONS == ("auto", "off", "bf16", "fp16")
    search = inspect.signature(embedding_command.nearest).parameters["search"].annotation  # Annotated[Literal[...], ...]
    assert typing.get_args(typing.get_args(search)[0]) == embedding_queries.SEARCHES == ("exact", *embedding_index.KINDS)


def test_bad_choice_is_one_usage_error_line():
    result = run_cli("export", "--out", "x.tflite", "--format", "torchscript")
    assert result.returncode == 2
    assert "'torchscript' is not one of 'savedmodel', 'tflite', 'onnx'" in one_error_line(result)
    missing = run_cli("export", "--out", "x.tflite")
    assert missing.returncode == 2 and "Missing option '--format'" in one_error_line(missing)


def test_lpips_version_renamed_old_spelling_still_accepted():
    import typer

    from keras_lpips.cli.app import app

    score = typer.main.get_command(app).commands["score"]
    for spelling in ("--lpips-version", "--version"):
        context = score.make_context("score", ["a.png", "b.png", spelling, "0.0"])
        assert context.params["version"] == "0.0", spelling


@pytest.mark.parametrize("name", PRINTING)
def test_every_printing_command_has_json(name):
    from tests.test_cli import click_commands

    options = {opt for param in click_commands()[name].params for opt in param.opts}
    assert "--json" in options, name


def _numbers(text):
    """The number literals of JSON text with a fraction or exponent (floats)."""
    return re.findall(r"(?<![\w\"])-?\d+\.\d+(?:[eE][-+]?\d+)?|(?<![\w\"])-?\d+[eE][-+]?\d+", text)


def _assert_float32_precision(text):
    numbers = _numbers(text)
    assert numbers, text
    for literal in numbers:
        assert literal == str(np.float32(literal)) or float(literal) == float(str(np.float32(literal))), literal


def test_score_pairs_matrix_json_at_float32_precision(folder):
    score = run_cli("score", folder / "a.png", folder / "b.png", folder / "c.png", "--json", *RANDOM)
    assert score.returncode == 0, score.stderr
    result = json.loads(score.stdout)
    assert len(result["pairs"]) == 2 and result["closer"] in (str(folder / "b.png"), str(folder / "c.png"))
    _assert_float32_precision(score.stdout)

    pairs = run_cli("pairs", folder, folder, "--json", *RANDOM)
    assert pairs.returncode == 0, pairs.stderr
    assert [p["name"] for p in json.loads(pairs.stdout)["pairs"]] == ["a.png", "b.png", "c.png"]
    assert all(p["distance"] == 0 for p in json.loads(pairs.stdout)["pairs"])

    matrix = run_cli("matrix", folder, "--json", *RANDOM)
    assert matrix.returncode == 0, matrix.stderr
    table = json.loads(matrix.stdout)
    assert table["rows"] == table["columns"] == ["a.png", "b.png", "c.png"]
    distances = np.array(table["distances"])
    assert distances.shape == (3, 3) and np.allclose(distances, distances.T)
    _assert_float32_precision(matrix.stdout)


def test_embed_and_data_verify_json(folder, tmp_path, tiny_bapps):
    embed = run_cli("embed", folder, "--out", tmp_path / "e.npz", "--json", *RANDOM)
    assert embed.returncode == 0, embed.stderr
    assert json.loads(embed.stdout) == {"out": str(tmp_path / "e.npz"), "embedded": 3, "dropped": 0, "total": 3}
    verify = run_cli("data", "verify", tiny_bapps, "--json")
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["problems"] == [] and report["counts"]


def test_dumps_writes_float32_shortest():
    from keras_lpips.reports import dumps

    value = float(np.float32(0.78))  # 0.7800000190734863 as a float64
    assert json.loads(dumps({"d": value, "l": [value, 1, None]})) == {"d": 0.78, "l": [0.78, 1, None]}
    assert "0.78" in dumps(value) and "0.78000" not in dumps(value)
    assert dumps(float(np.float32(1 / 3))) == "0.33333334"


def test_advice_names_flags_not_python_arguments():
    from keras_lpips.cli.messages import cli_spelling

    assert (
        cli_spelling("or pass backbone_weights=PATH to a torchvision .pth. Received: net='resnet'")
        == "or pass --backbone-weights PATH to a torchvision .pth. Received: --net 'resnet'"
    )
    assert cli_spelling("pass lin_weights=None or a file") == "pass --lin-weights none or a file"
    assert cli_spelling("Received: version='0.3'") == "Received: --lpips-version '0.3'"
    assert cli_spelling("model.net=1 keeps its dots") == "model.net=1 keeps its dots"
    assert cli_spelling("/runs/model=3/a and out-net=1 are paths") == "/runs/model=3/a and out-net=1 are paths"
    # True is the flag alone; an argument named alone (`name=` then a space, comma, ";", ")" or the end) too
    assert (
        cli_spelling("not empty: pass resume=True to continue (with resume=True), or choose a new out_dir=")
        == "not empty: pass --resume to continue (with --resume), or choose a new --out"
    )
    assert (
        cli_spelling("model=runs/x fixes the whole metric: drop preset=vgg-v0.0, version=, layers=; overwrite= never")
        == "--model runs/x fixes the whole metric: drop --preset vgg-v0.0, --lpips-version, --layers; --overwrite never"
    )
    assert cli_spelling("out= is a prefix. Received: 'out/'") == "--out is a prefix. Received: 'out/'"


def test_offline_error_names_the_flag(tmp_path, folder):
    """The library's offline message says `backbone_weights=PATH`; the program's, the flag."""
    result = run_cli("score", folder / "a.png", folder / "b.png", env={"KERAS_HOME": tmp_path, "KERAS_LPIPS_OFFLINE": "1"})
    assert result.returncode != 0, "offline with an empty cache, score found weights"
    line = one_error_line(result)
    assert "backbone_weights=" not in line
    assert "--backbone-weights PATH" in line, line


def test_eval_output_json_is_what_json_prints(tiny_bapps, tmp_path):
    """`eval --output r.json` writes the JSON `--json` prints, its floats (the baselines', float64
    in numpy) at float32 precision too: one writer (`keras_lpips.reports.dumps`)."""
    result = run_cli("eval", "--data", tiny_bapps, "--net", "alex", "--layers", "2", *RANDOM, "--load-size", "32",
                     "--json", "--output", tmp_path / "r.json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "r.json").read_text()
    assert written == result.stdout and json.loads(written)["columns"] == ["model", "l2", "ssim", "psnr"]
    _assert_float32_precision(written)


def test_library_notes_are_note_lines_on_stderr(capsys):
    """The library's `KerasLPIPSNote` warnings (fit's "nothing to resume", "1 replica") are shown
    by the CLI as one `note: MESSAGE` line each, as they are given; other warnings pass."""
    import warnings

    from keras_lpips.cli.messages import notes_as_lines
    from keras_lpips.errors import KerasLPIPSNote

    with notes_as_lines():
        warnings.warn("nothing to resume in runs/x (no run there): starting a new run", KerasLPIPSNote)
        warnings.warn("nothing to resume in runs/x (no run there): starting a new run", KerasLPIPSNote)
    assert capsys.readouterr().err.splitlines() == ["note: nothing to resume in runs/x (no run there): starting a new run"] * 2


def test_a_name_with_a_newline_stays_on_its_line(tmp_path):
    """A file name holding a newline (or another control character) is written escaped, in
    results and in errors: each stays one line."""
    rng = np.random.default_rng(0)
    odd = tmp_path / "new\nline\t.png"
    for path in (odd, tmp_path / "b.png"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path, format="PNG")
    result = run_installed("score", odd.name, "b.png", *RANDOM, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("d(new\\nline\\t.png, b.png) = ")
    missing = run_installed("score", "no\nsuch.png", "b.png", *RANDOM, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: No such image file: no\\nsuch.png"


def test_a_progress_bar_for_work_that_may_not_happen_appears_on_its_first_call(monkeypatch):
    """`progress_on_first_call` (a download, images to embed): no bar where it is never called;
    one bar, from the first call, counting to the total (or the bytes, with their speed)."""
    from keras_lpips.cli import options

    made = []

    class Bar:
        def __init__(self, length, label, item_show_func=None):
            self.length, self.label, self.pos, self.current_item = length, label, 0, None
            made.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, steps):
            self.pos += steps

    monkeypatch.setattr(options, "progress_bar", Bar)
    with options.progress_on_first_call("embedding"):
        pass
    assert made == []
    with options.progress_on_first_call("embedding") as progress:
        progress(3, 10)
        progress(10, 10)
    assert [(bar.label, bar.length, bar.pos) for bar in made] == [("embedding", 10, 10)]
    with options.progress_on_first_call("fetching", transfer=True) as progress:
        progress(5_000_000, 10_000_000)
    assert (made[1].length, made[1].pos) == (10_000_000, 5_000_000) and made[1].current_item.startswith("5.0/10.0 MB")
