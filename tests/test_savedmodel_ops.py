"""A SavedModel is checked before it is loaded (keras_lpips/savedmodel_ops.py).

keras-lpips' own exports pass, and use no op outside the allow-lists (a TensorFlow that traces
them with a new op fails here, naming it). Hostile SavedModels shaped like an export (the three
signatures `ExportedMetric` calls, the metadata file) are refused with one line, through the
Python API and the CLI, and what they would have written is never written. A damaged metadata
file is one `DataError` line, not a traceback.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_lpips import LPIPS, exported_metric, savedmodel_ops
from keras_lpips.errors import DataError, UnsafeFileError
from keras_lpips.export import export_savedmodel
from keras_lpips.exported_metric import METADATA, load_savedmodel
from keras_lpips.savedmodel_ops import ADVICE, CHECKPOINT_OPS, COMPUTE_OPS, EXPORT_OPS, check_savedmodel, read_savedmodel
from tests.helpers import one_error_line, run_cli

ROOT = Path(__file__).parent.parent
PAIR = (ROOT / "examples" / "ref.png", ROOT / "examples" / "p0.png")
IMAGE = tf.TensorSpec([None, None, None, 3], tf.float32)
INFO = {"net": "alex", "version": "0.1", "distance": "lpips", "layers": 5, "min_input_size": 16, "input_range": [0.0, 1.0]}


def op_types(directory):
    """Every op type in a SavedModel's graphs and function library."""
    saved = read_savedmodel(Path(directory) / "saved_model.pb")
    graphs = saved.meta_graphs
    return {node.op for graph in graphs for node in graph.graph_def.node} | {
        node.op for graph in graphs for function in graph.graph_def.library.function for node in function.node_def
    }


def assert_allowed(directory):
    check_savedmodel(directory)
    new = op_types(directory) - COMPUTE_OPS - CHECKPOINT_OPS
    assert not new, f"keras-lpips exports now use op(s) {sorted(new)}: add them to savedmodel_ops.EXPORT_OPS if they are safe"


# --- keras-lpips' own exports ------------------------------------------------------------------


@pytest.mark.parametrize("config", [dict(net="alex", layers=2), dict(net="squeeze", layers=2, distance="cosine"), dict(net="vgg", layers=1)])
def test_exports_pass_the_check(tmp_path, config):
    metric = LPIPS(**config, backbone_weights=None, seed=0)
    assert_allowed(export_savedmodel(metric, tmp_path / "lpips"))


@pytest.mark.slow
def test_the_allow_list_is_exactly_what_the_three_nets_use(tmp_path):
    """No op is allowed that this version's exports do not use (the list was derived from every
    configuration; all layers of the three nets use each op of it)."""
    used = set()
    for net in ("alex", "squeeze", "vgg"):
        directory = export_savedmodel(LPIPS(net=net, backbone_weights=None, seed=0), tmp_path / net)
        assert_allowed(directory)
        used |= op_types(directory)
    expected = EXPORT_OPS | CHECKPOINT_OPS
    assert used == expected, f"allowed but unused: {sorted(expected - used)}; used but not in EXPORT_OPS: {sorted(used - expected)}"


# --- hostile SavedModels -----------------------------------------------------------------------


def mean_distance(img0, img1):
    return tf.reduce_mean(tf.square(img0 - img1), axis=[1, 2, 3])


def save_like_an_export(directory, distance, **extra):
    """A SavedModel shaped like a keras-lpips export (serving_default, rank and spatial; the
    metadata file), whose serving_default is `distance`; `extra` become attributes of its module
    (functions the object graph holds)."""

    @tf.function(input_signature=[IMAGE, IMAGE])
    def spatial(img0, img1):
        return {"map": tf.reduce_mean(tf.square(img0 - img1), axis=-1)}

    @tf.function(input_signature=[IMAGE, IMAGE, IMAGE])
    def rank(ref, p0, p1):
        d0, d1 = mean_distance(ref, p0), mean_distance(ref, p1)
        return {"d0": d0, "d1": d1, "p1_preferred": tf.cast(d1 < d0, tf.float32)}

    module = tf.Module()
    module.scale = tf.Variable(1.0)  # so that the SavedModel has a saver and its functions
    module.distance, module.spatial, module.rank = distance, spatial, rank
    for name, value in extra.items():
        setattr(module, name, value)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": distance, "rank": rank, "spatial": spatial})
    (directory / METADATA).parent.mkdir(exist_ok=True)
    (directory / METADATA).write_text(json.dumps(INFO))
    return directory


def plain_distance():
    @tf.function(input_signature=[IMAGE, IMAGE])
    def distance(img0, img1):
        return {"distance": mean_distance(img0, img1)}

    return distance


# Hostile SavedModels: each `case(directory, target)` saves one in `directory` that would write
# `target` (or read a file) when loaded and called.


def writes_file(directory, target):
    @tf.function(input_signature=[IMAGE, IMAGE])
    def distance(img0, img1):
        tf.io.write_file(str(target), tf.strings.as_string(tf.reduce_sum(img0)))
        return {"distance": mean_distance(img0, img1)}

    return save_like_an_export(directory, distance)


def reads_file(directory, target):
    secret = target.parent / "secret.txt"
    secret.write_text("secret")

    @tf.function(input_signature=[IMAGE, IMAGE])
    def distance(img0, img1):
        leaked = tf.cast(tf.strings.length(tf.io.read_file(str(secret))), tf.float32)
        return {"distance": mean_distance(img0, img1) + 0.0 * leaked}

    return save_like_an_export(directory, distance)


def writes_in_a_nested_function(directory, target):
    @tf.function
    def inner(x):
        tf.io.write_file(str(target), tf.strings.as_string(tf.reduce_sum(x)))
        return x * 1.0

    @tf.function
    def middle(x):
        return inner(x) + 0.0

    @tf.function(input_signature=[IMAGE, IMAGE])
    def distance(img0, img1):
        return {"distance": mean_distance(middle(img0), img1)}

    return save_like_an_export(directory, distance)


def saves_a_checkpoint(directory, target):
    @tf.function(input_signature=[IMAGE, IMAGE])
    def distance(img0, img1):
        tf.raw_ops.SaveV2(prefix=str(target), tensor_names=["x"], shape_and_slices=[""], tensors=[img0])
        return {"distance": mean_distance(img0, img1)}

    return save_like_an_export(directory, distance)


def calls_a_function_named_like_the_saver(directory, target):
    @tf.function
    def _traced_save(x):  # traced as __inference__traced_save_N, as the saver's own function
        tf.raw_ops.SaveV2(prefix=str(target), tensor_names=["x"], shape_and_slices=[""], tensors=[x])
        return x * 1.0

    @tf.function(input_signature=[IMAGE, IMAGE])
    def distance(img0, img1):
        return {"distance": mean_distance(_traced_save(img0), img1)}

    return save_like_an_export(directory, distance)


def holds_a_writer_outside_the_signatures(directory, target):
    @tf.function(input_signature=[])
    def leftover():
        tf.io.write_file(str(target), "x")
        return tf.constant(0.0)

    leftover.get_concrete_function()  # saved with the object graph: a loaded object's method
    return save_like_an_export(directory, plain_distance(), leftover=leftover)


def rewired(edit):
    """A case: a harmless SavedModel whose saved_model.pb `edit(graph)` changes (graphs
    `tf.function` would not trace, but a file can hold)."""

    def case(directory, target):
        save_like_an_export(directory, plain_distance())
        saved = read_savedmodel(directory / "saved_model.pb")
        edit(saved.meta_graphs[0])
        (directory / "saved_model.pb").write_bytes(saved.SerializeToString())
        return directory

    return case


def call_node(graph, tensor):
    """The graph node computing `tensor` (a StatefulPartitionedCall, in these SavedModels)."""
    (node,) = [node for node in graph.graph_def.node if node.name == tensor.split(":")[0]]
    return node


def serving_default_calls_the_saver(graph):
    distance = call_node(graph, graph.signature_def["serving_default"].outputs["distance"].name)
    distance.attr["f"].func.name = call_node(graph, graph.saver_def.save_tensor_name).attr["f"].func.name


def serving_default_calls_an_op(graph):
    call_node(graph, graph.signature_def["serving_default"].outputs["distance"].name).attr["f"].func.name = "WriteFile"


def restoring_saves(graph):
    restore = call_node(graph, graph.saver_def.restore_op_name).attr["f"].func.name
    (function,) = [function for function in graph.graph_def.library.function if function.signature.name == restore]
    function.node_def.add(name="save", op="SaveV2")  # inputs aside: nothing of it runs


def init_op_after_a_save(graph):
    """TF Serving's loader runs saved_model_main_op: here one that first runs the saver's save."""
    graph.graph_def.node.add(name="after_save", op="Identity", input=[graph.saver_def.save_tensor_name])
    graph.collection_def["saved_model_main_op"].node_list.value[:] = ["after_save"]


def without_object_graph(graph):
    """A TF1-format SavedModel: loading it runs its init ops (here, anything the main op reaches)."""
    graph.ClearField("object_graph_def")


# Case -> (what builds it, what its refusal says after "Refusing SavedModel DIR: ").
HOSTILE = {
    "write_file": (writes_file, r"function __inference_distance_\d+ of its signature 'serving_default' runs op 'WriteFile'"),
    "read_file": (reads_file, r"function __inference_distance_\d+ of its signature 'serving_default' runs op 'ReadFile'"),
    "nested": (writes_in_a_nested_function, r"function __inference_inner_\d+ of its signature 'serving_default' runs op 'WriteFile'"),
    "save_v2": (saves_a_checkpoint, r"function __inference_distance_\d+ of its signature 'serving_default' runs op 'SaveV2'"),
    "named_like_the_saver": (calls_a_function_named_like_the_saver,
                             r"function __inference__traced_save_\d+ of its signature 'serving_default' runs op 'SaveV2'"),
    "outside_the_signatures": (holds_a_writer_outside_the_signatures, r"its function __inference_leftover_\d+ runs op 'WriteFile'"),
    "signature_calls_the_saver": (rewired(serving_default_calls_the_saver),
                                  r"its signature 'serving_default' calls __inference__traced_save_\d+, the function that saves or restores"),
    "op_as_a_function": (rewired(serving_default_calls_an_op), r"its signature 'serving_default' runs op 'WriteFile'"),
    "init_op_after_a_save": (rewired(init_op_after_a_save), r"its graph node after_save takes an input from StatefulPartitionedCall(_\d+)?, a node of its saver"),
    "tf1_format": (rewired(without_object_graph), r"a TF1-format SavedModel \(no object graph\)"),
    "restoring_saves": (rewired(restoring_saves),
                        r"its saver's function __inference__traced_restore_\d+ runs op 'SaveV2', which keras-lpips exports run only to save variables"),
}


def hostile(tmp_path, case):
    """(the SavedModel of HOSTILE[case], the path it would write)."""
    target = tmp_path / "written" / "stolen.txt"
    target.parent.mkdir()
    return HOSTILE[case][0](tmp_path / "evil", target), target


def assert_nothing_written(target):
    assert not list(target.parent.glob(f"{target.name}*")), list(target.parent.iterdir())


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_savedmodels_are_refused_before_they_run(tmp_path, case):
    directory, target = hostile(tmp_path, case)
    expected = rf"Refusing SavedModel {re.escape(str(directory))}: {HOSTILE[case][1]}.*\({re.escape(ADVICE)}\)$"
    with pytest.raises(UnsafeFileError, match=f"^{expected}"):
        load_savedmodel(directory)
    result = run_cli("score", *PAIR, "--model", directory)
    assert result.returncode == 1 and result.stdout == ""
    assert re.fullmatch(f"error: {expected}", one_error_line(result))
    assert_nothing_written(target)


def test_a_refused_savedmodel_would_have_written(tmp_path):
    """The fixtures are hostile indeed: loaded without the check, this one's serving_default writes."""
    directory, target = hostile(tmp_path, "write_file")
    images = np.zeros((1, 8, 8, 3), np.float32)
    tf.saved_model.load(str(directory)).signatures["serving_default"](img0=images, img1=images)
    assert target.exists()


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])  # a SavedModel is not exported as one: refused before it is read
def test_export_refuses_a_hostile_savedmodel(tmp_path, fmt):
    directory, target = hostile(tmp_path, "write_file")
    result = run_cli("export", "--format", fmt, "--out", tmp_path / f"out.{fmt}", "--model", directory)
    assert result.returncode == 1 and "runs op 'WriteFile'" in one_error_line(result)
    assert_nothing_written(target)
    assert not (tmp_path / f"out.{fmt}").exists()


def test_eval_refuses_a_hostile_savedmodel(tmp_path, tiny_bapps):
    directory, target = hostile(tmp_path, "write_file")
    result = run_cli("eval", "--data", tiny_bapps, "--model", directory, "--no-baselines", "--quiet", "--load-size", "32")
    assert result.returncode == 1 and "runs op 'WriteFile'" in one_error_line(result)
    assert_nothing_written(target)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"\x08\x01\x12\xff\xff", "not a SavedModel ("),
        (b"", "it holds no meta graph"),
    ],
)
def test_an_unreadable_graph_is_one_data_error(tmp_path, content, message):
    (tmp_path / "saved_model.pb").write_bytes(content)
    with pytest.raises(DataError, match=rf"^Cannot read {tmp_path / 'saved_model.pb'}: {re.escape(message)}"):
        load_savedmodel(tmp_path)
    result = run_cli("score", *PAIR, "--model", tmp_path)
    assert result.returncode == 1 and message in one_error_line(result)


def test_an_oversized_graph_is_not_read(tmp_path, monkeypatch):
    directory = save_like_an_export(tmp_path / "plain", plain_distance())
    check_savedmodel(directory)
    monkeypatch.setattr(savedmodel_ops, "MAX_GRAPH_BYTES", 1000)
    with pytest.raises(DataError, match="saved_model.pb: it has more than 1,000 bytes"):
        check_savedmodel(directory)


# --- the metadata file -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A harmless SavedModel shaped like an export, with a valid metadata file."""
    return save_like_an_export(tmp_path_factory.mktemp("plain") / "model", plain_distance())


def test_a_valid_metadata_file_describes_the_model(plain):
    served = load_savedmodel(plain)
    assert (served.net, served.version, served.distance, served.layers_kept, served.min_input_size) == ("alex", "0.1", "lpips", 5, 16)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"{not json", "not JSON (Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "expected a JSON object. Received: [1, 2]"),
        (b'{"min_input_size": "big"}', 'its \'min_input_size\' must be a positive integer. Received: "big"'),
        (b'{"min_input_size": 0}', "its 'min_input_size' must be a positive integer. Received: 0"),
        (b'{"layers": true}', "its 'layers' must be a positive integer. Received: true"),
        (b'{"net": 3}', "its 'net' must be a string. Received: 3"),
        (b'{"net": "\xff"}', "not JSON ('utf-8' codec can't decode byte 0xff"),
        (b"[" * 100000, "not JSON (maximum recursion depth exceeded"),
    ],
)
def test_a_damaged_metadata_file_is_one_data_error(plain, tmp_path, content, message):
    directory = shutil.copytree(plain, tmp_path / "model")
    (directory / METADATA).write_bytes(content)
    with pytest.raises(DataError) as error:
        load_savedmodel(directory)
    assert str(error.value).startswith(f"Cannot read {directory / METADATA}: {message}") and "\n" not in str(error.value)
    result = run_cli("score", *PAIR, "--model", directory)
    assert result.returncode == 1 and f"Cannot read {directory / METADATA}: {message}" in one_error_line(result)


def test_an_oversized_or_unreadable_metadata_file_is_one_data_error(plain, tmp_path, monkeypatch):
    directory = shutil.copytree(plain, tmp_path / "model")
    monkeypatch.setattr(exported_metric, "METADATA_BYTES", 10)
    with pytest.raises(DataError, match="keras_lpips.json: it has more than 10 bytes"):
        load_savedmodel(directory)
    (directory / METADATA).unlink()
    (directory / METADATA).mkdir()
    with pytest.raises(DataError, match="keras_lpips.json: Is a directory"):
        load_savedmodel(directory)
