"""The `keras-lpips` command: results and files written (bad input and its one-line errors,
exit code 2: tests/test_bad_inputs.py).

Commands run in this process through the program's entry point (`run_cli`); the installed
command itself (`run_installed`, a fresh interpreter each time) runs where that is the point:
--help's start-up time, one scored triplet, the README's command.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import RANDOM, ROOT, one_error_line, run_cli, run_installed

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def test_help_is_instant_and_teaches_by_example():
    """--help must not import TensorFlow (seconds): the installed command answers in well under
    3 s even on a loaded machine, and no command's help loads TensorFlow or Keras."""
    start = time.perf_counter()
    result = run_installed("score", "--help")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0 and "keras-lpips score examples/ref.png" in result.stdout
    assert elapsed < 3.0, f"keras-lpips score --help took {elapsed:.1f} s"
    script = """
import json, sys
from keras_lpips.cli.app import main
for args in json.loads(sys.argv[1]):
    sys.argv = ["keras-lpips", *args, "--help"]
    try:
        main()
    except SystemExit as exit_:
        assert exit_.code == 0, (args, exit_.code)
print(json.dumps(sorted(m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules)), file=sys.stderr)
"""
    commands = [name.split() for name in click_commands()]
    checked = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stderr.strip().splitlines()[-1]) == []


def test_score_triplet_json_and_map(images, tmp_path):
    """The installed command scores (one run of the real console script end to end)."""
    out = tmp_path / "map.png"
    result = run_installed("score", images / "a.png", images / "b.png", images / "a.png", "--json", "--map", out, *RANDOM)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["pairs"][1]["distance"] == 0.0 and report["pairs"][0]["distance"] > 0
    assert report["closer"] == str(images / "a.png")
    assert (report["backbone_weights"], report["lin_weights"]) == (None, "v0.1")  # where the weights came from
    with Image.open(out) as picture:
        assert picture.size[0] > picture.size[1]  # images and maps side by side


def test_pairs_and_matrix_write_csv(images, tmp_path):
    matrix_csv, pairs_csv = tmp_path / "matrix.csv", tmp_path / "pairs.csv"
    folder = tmp_path / "same_size"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    assert run_cli("matrix", folder, "--out", matrix_csv, *RANDOM).returncode == 0
    assert run_cli("pairs", folder, images, "--out", pairs_csv, *RANDOM).returncode == 0
    rows = [line.split(",") for line in matrix_csv.read_text().splitlines()]
    assert rows[0] == ["", "a.png", "b.png", "c.png"] and rows[1][1] == "0.000000" and rows[1][2] == rows[2][1]
    pairs = [line.split(",") for line in pairs_csv.read_text().splitlines()]
    assert pairs[0] == ["name", "distance"] and [p[1] for p in pairs[1:]] == ["0.000000"] * 3


def click_commands():
    """{"score": click command, ..., "weights convert": ...} of the installed app."""
    import typer

    from keras_lpips.cli.app import app

    group = typer.main.get_command(app)
    commands = {}
    for name, command in group.commands.items():
        for sub, subcommand in getattr(command, "commands", {}).items():
            commands[f"{name} {sub}"] = subcommand
        if not hasattr(command, "commands"):
            commands[name] = command
    return commands


def test_every_command_teaches_by_example_and_shares_one_vocabulary():
    from typer.testing import CliRunner

    from keras_lpips.cli.app import app

    commands = click_commands()
    assert set(commands) >= {
        "score", "pairs", "matrix", "export", "fit", "eval", "study", "data download", "data synth",
        "data verify", "weights fetch", "weights list", "weights convert",
    }  # fmt: skip
    for name in commands:
        result = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert result.exit_code == 0 and f"keras-lpips {name} " in result.output, (name, result.output)
    shared = ["--net", "--lpips-version", "--distance", "--layers", "--lin-weights", "--backbone-weights", "--model"]
    helps = {}
    for name in ("score", "pairs", "matrix", "export", "eval"):
        options = {opt: param for param in commands[name].params for opt in param.opts}
        for opt in shared:
            assert opt in options, (name, opt)
            helps.setdefault(opt, set()).add(options[opt].help)
    assert all(len(texts) == 1 for texts in helps.values()), helps
    assert {"--net", "--distance", "--layers"} <= {opt for param in commands["fit"].params for opt in param.opts}
    assert {"--json"} <= {opt for param in commands["score"].params for opt in param.opts}


def test_model_option_takes_run_folder_keras_file_and_savedmodel(images, tmp_path):
    """score --model gives the same distances from a fit run folder, its .keras file and its
    SavedModel export; matrix --model on an export prints only the CSV on stdout."""
    from keras_lpips import LPIPS
    from keras_lpips.export import export_savedmodel
    from keras_lpips.images import read_image

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", input_range=(0, 1))
    (tmp_path / "run").mkdir()
    metric.save(tmp_path / "run" / "model.keras")
    export_savedmodel(metric, tmp_path / "served")
    ref, a, b = (read_image(images / f"{n}.png")[None] for n in ("a", "b", "c"))
    want = np.asarray(metric([np.concatenate([ref, ref]), np.concatenate([a, b])]))
    for model in ("run", "run/model.keras", "served", "served/1"):
        result = run_cli("score", images / "a.png", images / "b.png", images / "c.png", "--json", "--model", tmp_path / model)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        np.testing.assert_allclose([p["distance"] for p in report["pairs"]], want, rtol=0, atol=1e-5, err_msg=model)
        assert report["net"] == "alex" and report["model"] == str(tmp_path / model)
    assert run_cli("score", images / "a.png", images / "b.png", "--model", tmp_path / "served", "--map", tmp_path / "m.png").returncode == 0
    assert (tmp_path / "m.png").is_file()

    folder = tmp_path / "three"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.png").write_bytes((images / f"{name}.png").read_bytes())
    result = run_cli("matrix", folder, "--model", tmp_path / "served")
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()]
    assert rows[0] == ["", "a.png", "b.png", "c.png"] and len(rows) == 4  # no progress label mixed in
    np.testing.assert_allclose([float(rows[1][2]), float(rows[1][3])], want, rtol=0, atol=2e-6)

    for model, message in [(images, "neither model.keras"), (images / "a.png", "takes a fit run folder")]:
        result = run_cli("score", images / "a.png", images / "b.png", "--model", model)
        assert result.returncode == 2 and message in one_error_line(result)


@pytest.mark.parametrize("input_range", [(-1.0, 1.0), (0.0, 255.0)])
def test_a_keras_model_of_any_input_range_scores_and_exports_0_1_images(images, tiny_bapps, tmp_path, input_range):
    """A .keras model built for images in (-1, 1) or (0, 255) serves the command line's [0, 1]
    images, rescaled: score, matrix and eval take it, and its SavedModel and TFLite exports give
    the Python metric's distances on the same images rescaled into its range."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_lpips import LPIPS
    from keras_lpips.exported_metric import load_savedmodel
    from keras_lpips.images import read_image

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", input_range=input_range)
    metric.save(tmp_path / "m.keras")
    ref, a, b = (read_image(images / f"{n}.png")[None] for n in ("a", "b", "c"))
    low, high = input_range
    want = np.asarray(metric([np.concatenate([ref, ref]) * (high - low) + low, np.concatenate([a, b]) * (high - low) + low]))

    result = run_cli("score", images / "a.png", images / "b.png", images / "c.png", "--json", "--model", tmp_path / "m.keras")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose([p["distance"] for p in json.loads(result.stdout)["pairs"]], want, rtol=0, atol=1e-5)
    result = run_cli("matrix", images, "--model", tmp_path / "m.keras")
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()]
    np.testing.assert_allclose([float(rows[1][2]), float(rows[1][3])], want, rtol=0, atol=1e-5)
    result = run_cli("eval", "--data", tiny_bapps, "--model", tmp_path / "m.keras", "--no-baselines", "--quiet", "--json")
    assert result.returncode == 0, result.stderr

    result = run_cli("export", "--format", "savedmodel", "--out", tmp_path / "served", "--model", tmp_path / "m.keras")
    assert result.returncode == 0, result.stderr
    served = load_savedmodel(tmp_path / "served")
    np.testing.assert_allclose(np.asarray(served([np.concatenate([ref, ref]), np.concatenate([a, b])])), want, rtol=0, atol=1e-5)
    result = run_cli("export", "--format", "tflite", "--out", tmp_path / "m.tflite", "--model", tmp_path / "m.keras", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == str(tmp_path / "m.keras") and report["bytes"] == (tmp_path / "m.tflite").stat().st_size
    run = Interpreter(model_path=str(tmp_path / "m.tflite")).get_signature_runner("serving_default")
    got = run(img0=np.concatenate([ref, ref]), img1=np.concatenate([a, b]))["distance"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_load_metric_rebuilds_a_keras_model_for_the_range_asked_and_refuses_it_of_an_export(fake_imagenet_home, monkeypatch, tmp_path):
    """`load_metric(model, input_range)`: a .keras metric built for another range comes back
    for the range asked (same weights, none read from a source: offline, with an empty cache);
    an export, which takes [0, 1] only, is refused for another range with what to pass."""
    from keras_lpips import LPIPS
    from keras_lpips.errors import InputError
    from keras_lpips.export import export_savedmodel
    from keras_lpips.resolve import load_metric

    monkeypatch.setenv("KERAS_HOME", str(fake_imagenet_home))
    metric = LPIPS(net="alex", layers=2, lin_weights="v0.1", input_range=(0, 255))
    metric.save(tmp_path / "m.keras")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_home"))
    images = np.random.default_rng(1).random((2, 2, 32, 32, 3)).astype(np.float32)
    for input_range in ((0.0, 255.0), (-1.0, 1.0), (0.0, 1.0)):
        loaded = load_metric(tmp_path / "m.keras", input_range)
        low, high = input_range
        assert loaded.input_range == input_range
        np.testing.assert_allclose(np.asarray(loaded(list(images * (high - low) + low))), np.asarray(metric(list(images * 255))), rtol=0, atol=1e-5)
    export_savedmodel(metric, tmp_path / "served")
    assert load_metric(tmp_path / "served", (0, 1)).input_range == (0.0, 1.0)
    with pytest.raises(InputError, match=r"is an exported SavedModel, which takes images in \[0, 1\] only: pass them in \[0, 1\]"):
        load_metric(tmp_path / "served", (0, 255))


@pytest.mark.slow
@pytest.mark.real_weights
def test_docs_quote_what_export_prints(tmp_path):
    """docs/cli.md's export examples print what it quotes, file sizes included: with the official
    weights, each in a fresh process as users run it (sizes shift by kilobytes with the weights'
    values and with the names a process has already given out)."""
    import importlib.util
    import re
    import shlex

    for net in ("alex", "vgg"):
        needs_imagenet_weights(net)
    text = (ROOT / "docs" / "cli.md").read_text()
    block = re.search(r"^## Export\n.*?```\n(.*?)```", text, re.S | re.M).group(1)
    examples = re.findall(r"^\$ keras-lpips (.*)\n((?:[^$].*\n)*)", block, re.M)
    assert examples and len(examples) == block.count("$ keras-lpips "), block
    for command, quoted in examples:
        args = shlex.split(command)
        if "onnx" in args and importlib.util.find_spec("tf2onnx") is None:
            continue  # the onnx extra
        result = run_installed(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == quoted, command


def test_weights_convert_linear_and_backbone_files(tmp_path):
    from typer.testing import CliRunner

    from keras_lpips import LPIPS, WeightsError
    from keras_lpips.backbones import get_backbone
    from keras_lpips.cli.app import app

    shipped = np.load(ROOT / "saved_models" / "lpips_lin" / "v0.1" / "alex.npz")
    lpips_format = {f"lin{k}.model.1.weight": shipped[f"lin{k}"].reshape(1, -1, 1, 1) for k in range(5)}
    np.savez(tmp_path / "lin_lpips.npz", **lpips_format)
    reference = LPIPS(net="alex", backbone_weights=None, seed=3, lin_weights=None)
    spec = get_backbone("alex")
    state = {"classifier.1.weight": np.zeros((4, 4), np.float32)}
    for layer, prefix in spec.torchvision_names.items():
        kernel, bias = reference.backbone.get_layer(layer).get_weights()
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = kernel.transpose(3, 2, 0, 1), bias
    np.savez(tmp_path / "torchvision.npz", **state)

    runner = CliRunner()
    result = runner.invoke(app, ["weights", "convert", str(tmp_path / "lin_lpips.npz"), str(tmp_path / "lin.npz")])
    assert result.exit_code == 0 and "linear weights for alex: 1,152 parameters" in result.output, result.output
    converted = np.load(tmp_path / "lin.npz")
    assert sorted(converted.files) == [f"lin{k}" for k in range(5)]
    for k in range(5):
        np.testing.assert_array_equal(converted[f"lin{k}"], shipped[f"lin{k}"])
    result = runner.invoke(app, ["weights", "convert", str(tmp_path / "torchvision.npz"), str(tmp_path / "bb.npz"), "--net", "alexnet"])
    assert result.exit_code == 0 and "backbone weights for alex: 2,469,696 parameters" in result.output, result.output
    assert "classifier.1.weight" not in np.load(tmp_path / "bb.npz").files
    rebuilt = LPIPS(net="alex", backbone_weights=str(tmp_path / "bb.npz"), lin_weights=str(tmp_path / "lin.npz"))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 2, 48, 48, 3)).astype(np.float32)
    reference = LPIPS(net="alex", backbone_weights=str(tmp_path / "torchvision.npz"), lin_weights="v0.1")
    np.testing.assert_allclose(np.asarray(rebuilt(list(x))), np.asarray(reference(list(x))), rtol=0, atol=1e-7)

    def error(*args):
        return runner.invoke(app, ["weights", "convert", *map(str, args)]).exception

    assert "already exists" in str(error(tmp_path / "lin_lpips.npz", tmp_path / "lin.npz"))
    assert isinstance(error(tmp_path / "lin_lpips.npz", tmp_path / "vgg.npz", "--net", "vgg"), WeightsError)
    assert "neither lpips linear weights" in str(error(ROOT / "tests" / "fixtures" / "tiny_zip.pth", tmp_path / "x.npz"))
    assert "must be a .npz" in str(error(tmp_path / "lin_lpips.npz", tmp_path / "x.pth"))


def needs_imagenet_weights(net):
    """Caches torchvision's weights for `net` as users get them; skips where they are out of
    reach, except under CI (as tests/test_real_weights.py)."""
    from keras_lpips import WeightsUnavailableError
    from keras_lpips.weights.pretrained import imagenet_state_dict

    try:
        imagenet_state_dict(net)
    except WeightsUnavailableError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"ImageNet weights not cached and not reachable: {error}")


@pytest.mark.real_weights
@pytest.mark.parametrize("net,version", [("alex", "0.1"), ("alex", "0.0"), ("vgg", "0.1"), ("vgg", "0.0")])
def test_score_reproduces_the_reference_on_the_example_triplet(net, version):
    """score with official weights: the reference lpips 0.1.4's distances (fixture)."""
    needs_imagenet_weights(net)
    official = json.loads((ROOT / "tests" / "fixtures" / "reference_official.json").read_text())[net][f"v{version}"]
    triplet = [EXAMPLES / f"{name}.png" for name in ("ref", "p0", "p1")]
    result = run_cli("score", *triplet, "--net", net, "--lpips-version", version, "--lin-weights", f"v{version}", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    got = [pair["distance"] for pair in report["pairs"]]
    np.testing.assert_allclose(got, [official["ref_p0"], official["ref_p1"]], rtol=0, atol=1e-5)
    assert report["closer"] == str(triplet[2])


@pytest.mark.real_weights
def test_readme_main_command_prints_the_reference_distances(tmp_path):
    """The README's first command (run from the repository root), word for word but the map's path."""
    official = json.loads((ROOT / "tests" / "fixtures" / "reference_official.json").read_text())["alex"]["v0.1"]
    needs_imagenet_weights("alex")
    out = tmp_path / "distance_map.png"
    result = run_installed("score", "examples/ref.png", "examples/p0.png", "examples/p1.png", "--map", out, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"d(examples/ref.png, examples/p0.png) = {official['ref_p0']:.4f}",
        f"d(examples/ref.png, examples/p1.png) = {official['ref_p1']:.4f}",
        "examples/p1.png is closer to examples/ref.png",
        f"distance map written to {out}",
    ]
    assert out.is_file()


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["score", "a.png"], 2, "error: Missing argument 'A'. (see keras-lpips score --help)"),
        (["score", "a.png", "b.png", "--nett", "vgg"], 2, "error: No such option: --nett (Possible options: --net)"),
        (["export", "--out", "x"], 2, "error: Missing option '--format'. Choose from: savedmodel, tflite, onnx (see keras-lpips export --help)"),
        (["nope"], 2, "error: No such command 'nope'."),
        (["score", "examples/ref.png", "examples/p0.png", "--preset", "vgg-v0.0", "--net", "alex"], 2,
         "error: --preset vgg-v0.0 fixes the whole metric: drop --net"),  # alex is the default: given all the same
        (["matrix", "examples", "--model", "runs/x", "--lpips-version", "0.1", "--layers", "2"], 2,
         "error: --model runs/x fixes the whole metric: drop --lpips-version, --layers"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, code, message):
    """Typer's own errors (arguments, options) read like keras-lpips' errors: one line, exit 2."""
    result = run_cli(*args)
    assert result.returncode == code and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr


@pytest.mark.parametrize(
    "case,code",
    [("unknown_option", 2), ("bad_value", 2), ("missing_file", 2), ("not_an_image", 1), ("refused_by_system", 1),
     ("interrupted", 130), ("interrupted_in_a_callback", 130), ("interrupted_into_another_error", 130),
     ("terminated", 143), ("terminated_in_a_callback", 143), ("terminated_into_another_error", 143)],
)  # fmt: skip
def test_exit_codes_follow_the_convention(tmp_path, monkeypatch, case, code):
    """2: the command line is wrong (Click's errors, `InputError`); 1: a failure at run time (here a
    file that is no image, found while working; a file the system refuses); 130: Ctrl-C, also one
    that lands where Python cannot raise it (a `__del__`, jax's GC hook) or inside a C call that
    fails with another error for it (a SystemError from a TensorFlow training step, seen); 143:
    SIGTERM, likewise. See keras_lpips/errors.py."""
    import signal

    image, text = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (32, 32), (40, 90, 200)).save(image)
    text.write_text("not an image\n")

    class StoppedWhenCollected:
        def __del__(self):
            if case == "interrupted_in_a_callback":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # its handler raises here, in the __del__

    def stopped(*args, **kwargs):
        if case == "interrupted":
            raise KeyboardInterrupt
        if case.endswith("_into_another_error"):  # a real signal, which a C call turns into another error
            try:
                os.kill(os.getpid(), signal.SIGINT if case.startswith("interrupted") else signal.SIGTERM)
                time.sleep(5)
            except BaseException:
                raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None
        if case == "refused_by_system":
            raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))
        if case.endswith("_in_a_callback"):
            StoppedWhenCollected()  # dropped at once: what it raises is "unraisable"
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5  # the command working on in Python: a signal delivered again
        while time.monotonic() < deadline:  # from a thread waits for the main thread's next bytecode
            pass  # (a sleep would hold it off to the end)
        raise AssertionError("the command went on")

    if case.startswith(("interrupted", "terminated")) or case == "refused_by_system":
        from keras_lpips import images

        monkeypatch.setattr(images, "read_images", stopped)
    args = {
        "unknown_option": (image, image, "--colour"),
        "bad_value": (image, image, "--net", "resnet"),
        "missing_file": (image, tmp_path / "missing.png"),
        "not_an_image": (image, text),
    }.get(case, (image, image))
    result = run_cli("score", *args, *RANDOM)
    assert result.returncode == code, (result.returncode, result.stderr)
    if code in (130, 143):
        assert result.stderr.strip() == ("interrupted" if code == 130 else "terminated"), result.stderr
    else:
        one_error_line(result)
    if case == "refused_by_system":
        assert result.stderr == f"error: {tmp_path / 'locked'}: Permission denied\n"


def test_metric_options_are_declared_once_and_packed_into_one_metric_spec():
    """@metric_options puts the eight metric options where a command declares its `MetricSpec`
    parameter, with MetricSpec's defaults, and hands the command one MetricSpec; every command
    that takes a metric lists the same eight."""
    import dataclasses
    import pathlib
    from typing import Annotated

    import typer
    from typer.testing import CliRunner

    from keras_lpips.cli.options import METRIC_OPTIONS, metric_options
    from keras_lpips.errors import InputError
    from keras_lpips.resolve import MetricSpec

    received = []

    @metric_options
    def command(image: Annotated[pathlib.Path, typer.Argument()], *, metric: MetricSpec, flag: bool = False):
        received.append((image, metric, flag))

    app = typer.Typer()
    app.command()(command)
    app.callback()(lambda: None)  # keep `command` a subcommand
    assert CliRunner().invoke(app, ["command", "x.png"]).exit_code == 0
    args = ["command", "x.png", "--net", "vgg", "--layers", "2", "--backbone-weights", "random", "--flag"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert received == [
        (pathlib.Path("x.png"), MetricSpec(), False),
        (pathlib.Path("x.png"), MetricSpec(net="vgg", layers=2, backbone_weights="random"), True),
    ]
    refused = CliRunner().invoke(app, ["command", "x.png", "--preset", "vgg-v0.0", "--net", "alex"])
    assert isinstance(refused.exception, InputError) and len(received) == 2  # --net given, if only its default
    assert list(METRIC_OPTIONS) == [field.name for field in dataclasses.fields(MetricSpec)]

    commands = click_commands()
    for name in ("score", "pairs", "matrix", "export", "eval"):
        options = {opt: param for param in commands[name].params for opt in param.opts}
        assert "--preset" in options and options["--net"].default == "alex", name


@pytest.mark.real_weights
def test_preset_scores_as_its_net_options():
    """--preset alex-v0.0 is --net alex --lpips-version 0.0 (and the official weights)."""
    needs_imagenet_weights("alex")
    triplet = [EXAMPLES / f"{name}.png" for name in ("ref", "p0", "p1")]
    by_preset = run_cli("score", *triplet, "--preset", "alex-v0.0", "--json")
    by_options = run_cli("score", *triplet, "--net", "alex", "--lpips-version", "0.0", "--lin-weights", "v0.0", "--json")
    assert by_preset.returncode == 0 and by_options.returncode == 0, by_preset.stderr + by_options.stderr
    assert json.loads(by_preset.stdout) == json.loads(by_options.stdout)
    assert json.loads(by_preset.stdout)["lin_weights"] == "v0.0"


def test_a_model_with_nan_weights_is_refused_on_load(images, tmp_path):
    """A diverged training run saves NaN weights: --model refuses it (.keras and SavedModel)
    instead of printing d = nan."""
    from keras_lpips import LPIPS
    from keras_lpips.export import export_savedmodel

    metric = LPIPS(net="alex", backbone_weights=None, seed=0, lin_weights="v0.1", input_range=(0, 1))
    metric.heads[0].kernel.assign(np.full(metric.heads[0].kernel.shape, np.nan, np.float32))
    metric.save(tmp_path / "nan.keras")
    export_savedmodel(metric, tmp_path / "served")
    for model in (tmp_path / "nan.keras", tmp_path / "served"):
        result = run_cli("score", images / "a.png", images / "b.png", "--model", model)
        assert result.returncode == 1, result.stderr
        assert "holds NaN or infinite weights (a diverged training run?)" in one_error_line(result)


def test_the_program_runs_from_another_thread():
    """main() in a thread (an embedding application, a test runner) works: signals are the main
    thread's, and only there does the command take them over."""
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(run_cli("--version")))
    thread.start()
    thread.join()
    assert results[0].returncode == 0 and results[0].stdout.startswith("keras-lpips "), results[0].stderr


def test_a_fit_run_that_has_not_finished_says_how_to_finish_it(images, tiny_bapps, tmp_path):
    """--model on a run folder without model.keras yet (fit interrupted: run.json and checkpoint/
    written, the model not): the run is unfinished and `fit --resume --out RUN` completes it, in
    score and eval alike (the library's one loader); a folder that is no run still hears of both
    kinds of --model folder."""
    from keras_lpips.errors import InputError
    from keras_lpips.resolve import load_metric

    for name, files in (("after-start", ["run.json"]), ("after-epoch", ["run.json", "checkpoint/latest.json"])):
        run = tmp_path / name
        for file in files:
            (run / file).parent.mkdir(parents=True, exist_ok=True)
            (run / file).write_text("{}")
        expected = (f"error: --model {run} is a fit run that has not finished: it has no model.keras yet (fit writes "
                    f"it after the last epoch); fit with --resume and --out {run} completes it")  # fmt: skip
        for command in (["score", images / "a.png", images / "b.png"], ["eval", "--data", tiny_bapps, "--quiet"]):
            result = run_cli(*command, "--model", run)
            assert result.returncode == 2 and one_error_line(result) == expected, result.stderr
        with pytest.raises(InputError, match=r"fit with resume=True and out_dir=\S+ completes it$"):
            load_metric(run)
    result = run_cli("score", images / "a.png", images / "b.png", "--model", images)
    assert result.returncode == 2 and "neither model.keras (a fit run) nor saved_model.pb" in one_error_line(result)
