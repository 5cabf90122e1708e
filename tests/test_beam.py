"""The Apache Beam pipelines (keras_lpips.beam_pipelines, `keras-lpips beam`) on DirectRunner.

apache-beam pins Pillow < 13 and protobuf < 7, so these run in their own environment (the
`beam` extra; .ci/run makes it: docs/development.md); where Beam is not installed, only the
one-line refusal of `keras-lpips beam` is tested."""

import glob
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_cli as run_cli_process

try:
    import apache_beam  # noqa: F401

    HAVE_BEAM = True
except ImportError:
    HAVE_BEAM = False


def run_cli(*args, cwd=None):
    """(exit code, stdout, stderr) of `keras-lpips ARGS` (tests.helpers.run_cli)."""
    result = run_cli_process(*args, cwd=cwd)
    return result.returncode, result.stdout, result.stderr


needs_beam = pytest.mark.skipif(not HAVE_BEAM, reason="apache-beam is not installed (the beam extra: its own venv in .ci/run)")


@pytest.mark.skipif(HAVE_BEAM, reason="tests the refusal where apache-beam is missing")
def test_beam_commands_without_apache_beam_say_how_to_install_it(tmp_path):
    code, out, err = run_cli("beam", "embed", tmp_path, tmp_path, "--out", tmp_path / "e")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: The Beam pipelines need Apache Beam: pip install 'keras-lpips[beam]' (in an environment of its own: "
        "it pins Pillow < 13 and protobuf < 7)"
    ]


def test_beam_commands_exist_in_help():
    code, out, _ = run_cli("beam", "--help")
    assert code == 0 and "embed" in out and "pairs" in out


# --- with apache-beam ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(metric, SavedModel base folder): an AlexNet LPIPS with a seeded random backbone and the
    shipped v0.1 linear weights, on [0, 1] images."""
    from keras_lpips.export import export_savedmodel
    from keras_lpips.model import LPIPS

    metric = LPIPS(net="alex", backbone_weights=None, seed=3, input_range=(0, 1))
    folder = tmp_path_factory.mktemp("beam_model") / "lpips"
    export_savedmodel(metric, folder)
    return metric, folder


@pytest.fixture
def photos(tmp_path):
    """A folder of five 64x64 PNGs, one 48x40 in a subfolder, a 1x1 near-duplicate pair, an 8x8 too
    small for AlexNet, a file that is no image and a hidden file (skipped)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    base = rng.integers(0, 250, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(base).save(folder / "near_a.png")
    Image.fromarray(base + np.eye(64, dtype=np.uint8)[..., None]).save(folder / "near_b.png")
    Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(folder / "sub" / "odd.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / ".hidden.png").write_bytes(b"skipped")
    return folder


def _image(path):
    from keras_lpips.images import read_image

    return read_image(path)[None]


def _errors(pattern):
    lines = [line for path in glob.glob(str(pattern)) for line in pathlib.Path(path).read_text().splitlines()]
    return dict(line.split("\t", 1) for line in lines)


@needs_beam
def test_embed_pipeline_gives_the_metrics_embeddings_and_lists_what_failed(exported, photos, tmp_path):
    from keras_lpips.beam_pipelines import embed_images, read_embedding_records

    metric, model = exported
    counts = embed_images(photos, model, tmp_path / "out", ["--direct_num_workers", "1"], batch_size=3)
    assert (counts.written, counts.failed) == (8, 2)
    by_size = read_embedding_records(counts.output)
    assert set(by_size) == {(64, 64), (48, 40)}
    names, vectors = by_size[(64, 64)]
    assert names == ["0.png", "1.png", "2.png", "3.png", "4.png", "near_a.png", "near_b.png"]
    for name, vector in zip(names, vectors):
        np.testing.assert_allclose(vector, np.asarray(metric.embed(_image(photos / name)))[0], rtol=0, atol=1e-6)
    # Squared distances of the records are the metric's distances (near-duplicates included).
    for a, b in [(0, 1), (5, 6), (2, 4)]:
        direct = float(metric([_image(photos / names[a]), _image(photos / names[b])])[0])
        assert abs(float(np.sum((vectors[a].astype(np.float64) - vectors[b]) ** 2)) - direct) <= 1e-5
    odd_names, odd = by_size[(48, 40)]
    assert odd_names == ["sub/odd.png"] and odd.shape == (1, metric.embedding_size(48, 40))
    errors = _errors(counts.errors)
    assert set(errors) == {"broken.png", "tiny.png"}
    assert "Not an image" in errors["broken.png"] and "smaller than" in errors["tiny.png"]


@needs_beam
def test_embed_pipeline_takes_a_file_pattern_and_leaves_no_errors_file_when_nothing_failed(exported, photos, tmp_path):
    from keras_lpips.beam_pipelines import embed_images, read_embedding_records

    metric, model = exported
    counts = embed_images(f"{photos}/[0-2].png", model / "1", tmp_path / "out")
    assert (counts.written, counts.failed) == (3, 0)
    names, vectors = read_embedding_records(counts.output)[(64, 64)]
    assert names == [str(photos / f"{i}.png") for i in range(3)]
    np.testing.assert_allclose(vectors[2], np.asarray(metric.embed(_image(photos / "2.png")))[0], rtol=0, atol=1e-6)
    assert glob.glob(counts.errors) == []


@needs_beam
def test_pairs_pipeline_scores_each_row_like_the_metric(exported, photos, tmp_path):
    import csv

    from keras_lpips.beam_pipelines import score_pairs

    metric, model = exported
    rows = [("0.png", "1.png"), ("near_a.png", "near_b.png"), ("near_a.png", "near_a.png"), (str(photos / "3.png"), "4.png")]
    bad = [("0.png", "sub/odd.png"), ("0.png", "missing.png"), ("tiny.png", "tiny.png")]
    table = photos / "pairs.csv"
    table.write_text("img0,img1\n" + "".join(f"{a},{b}\n" for a, b in rows + bad) + "lonely\n\n")
    counts = score_pairs(table, model, tmp_path / "out")
    assert (counts.written, counts.failed) == (4, 4)
    (shard,) = glob.glob(counts.output)
    with open(shard) as f:
        written = list(csv.reader(f))
    assert written[0] == ["img0", "img1", "distance"]
    scored = {(a, b): float(d) for a, b, d in written[1:]}
    assert set(scored) == set(rows)
    for a, b in rows:
        direct = float(metric([_image(photos / a), _image(photos / b)])[0])
        assert abs(scored[(a, b)] - direct) <= 1e-5
    assert scored[("near_a.png", "near_a.png")] == 0.0
    errors = _errors(counts.errors)
    assert "different sizes" in errors["0.png,sub/odd.png"]
    assert "missing.png" in errors["0.png,missing.png"]
    assert "smaller than" in errors["tiny.png,tiny.png"]
    assert "not a row of two image names" in errors["lonely"]


@needs_beam
def test_a_savedmodel_that_could_run_more_than_an_export_is_refused_before_any_worker_loads_it(tmp_path):
    from keras_lpips import beam_arguments
    from keras_lpips.errors import UnsafeFileError
    from tests.test_savedmodel_ops import assert_nothing_written, hostile

    directory, target = hostile(tmp_path, "write_file")
    with pytest.raises(UnsafeFileError, match=r"^Refusing SavedModel .* runs op 'WriteFile'"):
        beam_arguments.savedmodel_for(directory, "embed")
    assert_nothing_written(target)


@needs_beam
@pytest.mark.parametrize("metadata", ['{"min_input_size": "big"}', "[1, 2]", "{not json", " " * 200_000])
def test_damaged_export_metadata_is_one_data_error(exported, tmp_path, metadata):
    from keras_lpips import beam_arguments
    from keras_lpips.errors import DataError
    from keras_lpips.exported_metric import METADATA

    model = tmp_path / "lpips"
    shutil.copytree(exported[1], model)
    (version,) = [path for path in model.iterdir() if path.is_dir()]
    (version / METADATA).write_text(metadata)
    with pytest.raises(DataError, match=f"^Cannot read {version / METADATA}: "):
        beam_arguments.savedmodel_for(model, "embed")


@needs_beam
def test_what_the_savedmodel_refuses_goes_to_the_errors_alone(exported, photos, tmp_path, monkeypatch):
    from keras_lpips import beam_arguments, beam_pipelines

    _, model = exported
    checked = beam_arguments.savedmodel_for
    monkeypatch.setattr(beam_arguments, "savedmodel_for", lambda path, signature: (checked(path, signature)[0], 1))  # no size check first
    counts = beam_pipelines.embed_images(photos, model, tmp_path / "out", batch_size=4)
    assert (counts.written, counts.failed) == (8, 2)  # tiny.png's batch-mates are written
    errors = _errors(counts.errors)
    assert set(errors) == {"broken.png", "tiny.png"}
    assert errors["tiny.png"].startswith("Images of 8x8 are too small for this network: it needs at least 31x31")


@needs_beam
def test_a_batch_runinference_cannot_run_is_listed_one_line_per_image(exported, photos, tmp_path, monkeypatch):
    from keras_lpips import beam_pipelines

    def broken(self, batch, model, inference_args=None):
        raise RuntimeError("out of memory\nsecond line")

    _, model = exported
    monkeypatch.setattr(beam_pipelines.SavedModelHandler, "run_inference", broken)
    counts = beam_pipelines.embed_images(photos / "sub", model, tmp_path / "out")
    assert (counts.written, counts.failed) == (0, 1)
    (errors_file,) = glob.glob(counts.errors)
    assert pathlib.Path(errors_file).read_text() == "odd.png\tRuntimeError('out of memory\\nsecond line')\n"


@needs_beam
def test_nan_from_the_savedmodel_is_an_error_not_a_result(photos, tmp_path):
    from keras_lpips.beam_pipelines import embed_images
    from keras_lpips.export import export_savedmodel
    from keras_lpips.model import LPIPS

    metric = LPIPS(net="alex", backbone_weights=None, seed=3, input_range=(0, 1))
    metric.heads[0].kernel.assign(-metric.heads[0].kernel)  # negative weights: no embedding, NaN served
    model = export_savedmodel(metric, tmp_path / "negative")
    counts = embed_images(photos / "sub", model, tmp_path / "out")
    assert (counts.written, counts.failed) == (0, 1)
    assert "gave NaN" in _errors(counts.errors)["odd.png"]


@needs_beam
def test_beam_cli_runs_end_to_end_and_refuses_in_one_line(exported, photos, tmp_path):
    _, model = exported
    out = tmp_path / "results"
    out.mkdir()
    code, stdout, err = run_cli("beam", "embed", photos, model, "--out", out / "e", "--", "--direct_num_workers", "1")
    assert code == 1
    assert "8 images embedded" in stdout
    assert err.strip().splitlines()[-1].startswith("error: 2 images could not be used; the reasons are in ")
    assert "Traceback" not in err
    code, _, err = run_cli("beam", "embed", photos, model, "--out", out / "e")
    assert code == 2 and "pass --overwrite" in err
    table = photos / "pairs.csv"
    table.write_text("img0,img1\n0.png,1.png\n")
    headless = photos / "headless.csv"
    headless.write_text("0.png,1.png\n")
    header_only = photos / "header_only.csv"
    header_only.write_text("img0,img1\n\n")
    keras_run = tmp_path / "run"  # a fit run folder: a Keras model, to export before Beam serves it
    keras_run.mkdir()
    (keras_run / "model.keras").write_bytes(b"PK")
    code, stdout, err = run_cli("beam", "pairs", table, model, "--out", out / "p")
    assert code == 0 and "1 pairs scored" in stdout, err
    refusals = [
        (("beam", "pairs", photos / "none.csv", model, "--out", out / "q"), "Cannot read the pairs CSV"),
        (("beam", "pairs", photos / "0.png", model, "--out", out / "q"), "is not a CSV (UTF-8 text)"),
        (("beam", "pairs", headless, model, "--out", out / "q"), "must start with the header img0,img1"),
        (("beam", "pairs", table, photos, "--out", out / "q"), "holds no saved_model.pb"),
        (("beam", "embed", photos, model, "--out", tmp_path / "nowhere" / "e"), "Output folder does not exist"),
        (("beam", "embed", photos / "sub" / "odd.png", model, "--out", out / "q"), "Not a folder"),
        (("beam", "embed", f"{photos}/*.jpg", model, "--out", out / "q"), "No images match"),
        (("beam", "embed", photos, model, "--out", out / "q", "--", "--batch-size", "2"), "goes before --"),
        (("beam", "embed", photos, model, "--out", out / "q", "--overwirte"), "Unknown option or extra argument '--overwirte'"),
        (("beam", "embed", photos, model, "extra", "--out", out / "q"), "Unknown option or extra argument 'extra'"),
        (("beam", "pairs", header_only, model, "--out", out / "q"), "has no rows after its header"),
        (("beam", "embed", photos, model / "1" / "variables", "--out", out / "q"), "holds no saved_model.pb"),
        (("beam", "embed", photos, keras_run, "--out", out / "q"), "is a Keras model (model.keras), not a SavedModel: export it first"),
        (("beam", "embed", photos, "nosuchfs://bucket/model", "--out", out / "q"), "Unable to get filesystem"),
    ]
    for args, message in refusals:
        code, _, err = run_cli(*args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (args, err)


@needs_beam
def test_overwrite_replaces_this_prefix_only_and_only_once_the_arguments_are_checked(exported, photos, tmp_path):
    _, model = exported
    out = tmp_path / "results"
    out.mkdir()
    sub = photos / "sub"
    assert run_cli("beam", "embed", sub, model, "--out", out / "e")[0] == 0
    assert run_cli("beam", "embed", sub, model, "--out", out / "x")[0] == 0
    before = sorted(p.name for p in out.iterdir())
    assert before == ["e-00000-of-00001.tfrecord", "x-00000-of-00001.tfrecord"]  # no empty errors shards
    code, _, err = run_cli("beam", "embed", sub, photos, "--out", out / "e", "--overwrite")  # not a SavedModel
    assert code == 2 and sorted(p.name for p in out.iterdir()) == before, err
    code, _, err = run_cli("beam", "embed", sub, model, "--out", out / "e", "--overwrite", "--", "--runner", "NoSuchRunner")
    assert code == 2 and "Bad Beam pipeline options" in err and sorted(p.name for p in out.iterdir()) == before, err
    assert run_cli("beam", "embed", sub, model, "--out", out / "e", "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == before
    # e-2's shards do not match e's pattern, but Beam's sink for e would delete them
    # (e-*-of-00001.tfrecord matches e-2-00000-of-00001.tfrecord): refused, even with --overwrite.
    assert run_cli("beam", "embed", sub, model, "--out", out / "e-2")[0] == 0
    code, _, err = run_cli("beam", "embed", sub, model, "--out", out / "e", "--overwrite")
    assert code == 2 and "Beam would delete" in err and "e-2-00000-of-00001.tfrecord" in err, err
    assert sorted(p.name for p in out.iterdir()) == sorted(before + ["e-2-00000-of-00001.tfrecord"])


@needs_beam
def test_prefix_forms_folder_names_and_failures_while_running(exported, photos, tmp_path):
    _, model = exported
    odd_folder = tmp_path / "photos [2024]"
    shutil.copytree(photos / "sub", odd_folder)
    work = tmp_path / "work"
    work.mkdir()
    code, stdout, err = run_cli("beam", "embed", odd_folder, model, "--out", "res", cwd=work)
    assert code == 0 and "1 images embedded" in stdout, err
    assert [p.name for p in work.iterdir()] == ["res-00000-of-00001.tfrecord"]  # a bare prefix, no empty errors shard
    for bad_out, message in [("sub/", "not a folder"), ("", "not a folder"), ("r[1]", "pattern characters")]:
        code, _, err = run_cli("beam", "embed", odd_folder, model, "--out", bad_out, cwd=work)
        assert code == 2 and message in err, (bad_out, err)
    table = tmp_path / "pairs.csv"
    table.write_bytes(b"img0,img1\n\xff\xfe,x.png\n")  # a row that is not UTF-8: the job itself fails
    code, _, err = run_cli("beam", "pairs", table, model, "--out", work / "p")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: The Beam pipeline failed: "), err
    assert "Traceback" not in err and not list(work.glob("beam-temp-*"))


@pytest.fixture
def animated(tmp_path):
    """A folder of a 3-frame animated GIF (anim.gif) and its frame 1 saved as a PNG by Pillow
    (still.png), 64x64, with a pairs CSV of the two (pairs.csv)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "animated"
    folder.mkdir()
    first, *others = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    first.save(folder / "anim.gif", save_all=True, append_images=others)
    with Image.open(folder / "anim.gif") as gif:
        gif.seek(1)
        gif.convert("RGB").save(folder / "still.png")
    (folder / "pairs.csv").write_text("img0,img1\nanim.gif,still.png\n")
    return folder


REFUSED = "has 3 frames (an animated or multi-page image); choose one with {}, K from 0 to 2"


@needs_beam
def test_the_frame_asked_reaches_the_workers(exported, animated, tmp_path):
    from keras_lpips.beam_pipelines import embed_images, read_embedding_records, score_pairs
    from keras_lpips.errors import InputError

    metric, model = exported
    counts = embed_images(animated, model, tmp_path / "none")
    assert (counts.written, counts.failed) == (1, 1)
    gif = animated / "anim.gif"
    assert _errors(counts.errors) == {"anim.gif": f"{gif} {REFUSED.format('frame=K')}"}  # the library's words
    assert counts.first_error == f"anim.gif\t{gif} {REFUSED.format('frame=K')}"
    counts = embed_images(animated, model, tmp_path / "one", frame=1)
    assert (counts.written, counts.failed, counts.first_error) == (2, 0, None)
    names, vectors = read_embedding_records(counts.output)[(64, 64)]
    assert names == ["anim.gif", "still.png"]
    np.testing.assert_allclose(vectors[0], vectors[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(vectors[1], np.asarray(metric.embed(_image(animated / "still.png")))[0], rtol=0, atol=1e-6)
    counts = score_pairs(animated / "pairs.csv", model, tmp_path / "pairs", frame=1)
    assert (counts.written, counts.failed) == (1, 0)
    (shard,) = glob.glob(counts.output)
    assert pathlib.Path(shard).read_text().splitlines()[1] == "anim.gif,still.png,0"
    with pytest.raises(InputError, match=r"Received: frame=-1"):
        embed_images(animated, model, tmp_path / "bad", frame=-1)


@needs_beam
def test_beam_cli_names_the_frame_flag_and_passes_it(exported, animated, tmp_path):
    _, model = exported
    code, stdout, err = run_cli("beam", "embed", animated, model, "--out", tmp_path / "e")
    assert code == 1 and "1 images embedded" in stdout
    assert err.strip().splitlines()[-1] == (
        f"error: 1 images could not be used; the reasons are in {tmp_path / 'e'}-errors-?????-of-?????.txt, "
        f"e.g. anim.gif: {animated / 'anim.gif'} {REFUSED.format('--frame K')}"
    )
    code, stdout, err = run_cli("beam", "embed", animated, model, "--out", tmp_path / "f", "--frame", "1")
    assert code == 0 and "2 images embedded" in stdout, err
    code, stdout, err = run_cli("beam", "pairs", animated / "pairs.csv", model, "--out", tmp_path / "p", "--frame", "2")
    assert code == 0 and "1 pairs scored" in stdout, err
    code, _, err = run_cli("beam", "embed", animated, model, "--out", tmp_path / "g", "--", "--frame", "1")
    assert code == 2 and "--frame goes before --" in err, err


@needs_beam
def test_the_pipelines_module_imports_neither_tensorflow_nor_keras():
    code = "import sys, keras_lpips.beam_pipelines; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout.strip() == "[]", child.stderr[-1000:]
