"""The ops a SavedModel may run, checked before TensorFlow loads it.

A SavedModel is a program: `tf.saved_model.load` rebuilds its functions, and a signature runs
whatever ops they hold, file reads and writes included. So a SavedModel a user names
(`--model`, `load_savedmodel`) is loaded only once `check_savedmodel` has read its
saved_model.pb and found nothing that keras-lpips' own exports do not run:

- `COMPUTE_OPS` anywhere: in what the signatures reach, and in every other graph node and
  library function (initialisers and the object graph's functions included);
- `SAVE_OPS` as well in the function that saves the variables, and `RESTORE_OPS` in the one that
  restores them (those the meta graph's saver_def reaches), which nothing else may call or take
  an input from (an init op that TF Serving runs after a save, say): loading a SavedModel may
  restore its variables, never write a file;
- a TF1-format SavedModel (no object graph, which TensorFlow loads by running its init ops) is
  refused whole: keras-lpips exports are TF2.

Calls are followed through the graph's nodes (a signature's tensors, back through their inputs)
and the function library: call ops (`StatefulPartitionedCall`'s `f`), any function-valued
attribute (`While`'s body, `If`'s branches, lists of them) and ops named after a library
function. A function attribute naming no library function runs the op of that name, so it is
checked as one (TensorFlow refuses a library function named after an op). Anything else is
refused with one `UnsafeFileError` line naming the op and where it is, before any of it runs,
as the weight reader refuses a pickle's unknown globals.

The lists are the op types of every configuration `export_savedmodel` writes (each net, version,
distance and precision, all layers or one, every input range, mixed precision policies) on
TensorFlow 2.21, with those of earlier keras-lpips versions' exports, so that these still load;
tests/test_savedmodel_ops.py checks fresh exports against them, so an op a new TensorFlow or a
change to the exported graphs brings is named there.
"""

from pathlib import Path

from keras_lpips.errors import DataError, UnsafeFileError
from keras_lpips.files import read_bounded

# Ops of this version's exports: their signatures, image decoding and input checks, graph plumbing.
EXPORT_OPS = frozenset({
    "Abs", "AddV2", "All", "Any", "ArgMax", "AsString", "Assert", "BatchMatMulV2", "BiasAdd",
    "BitwiseAnd", "Cast", "ConcatV2", "Const", "Conv2D", "DecodeBmp", "DecodeJpeg", "DecodePng",
    "DecodeRaw", "DecodeWebP", "Equal", "ExtractJpegShape", "Fill", "FloorDiv", "FloorMod",
    "GatherV2", "Greater", "GreaterEqual", "Identity", "If", "IsFinite", "IsNan", "Less",
    "LessEqual", "LogicalAnd", "LogicalNot", "LogicalOr", "MatMul", "Max", "MaxPool", "Maximum",
    "Mean", "Min", "Minimum", "Mul", "NoOp", "NotEqual", "OneHot", "Pack", "Pad", "PadV2",
    "Placeholder", "Prod", "Range", "ReadVariableOp", "RealDiv", "ReduceJoin", "Relu", "Reshape",
    "RightShift", "SelectV2", "Shape", "Size", "Sqrt", "Square", "Squeeze",
    "StatefulPartitionedCall", "StatelessIf", "StatelessWhile", "StridedSlice", "StringJoin",
    "StringLength", "Sub", "Substr", "Sum", "TensorListFromTensor", "TensorListGetItem",
    "TensorListReserve", "TensorListSetItem", "TensorListStack", "Transpose", "Unpack",
    "VarHandleOp", "While",
})
# Ops that exports of earlier keras-lpips versions run, this version's no longer: DecodeImage
# (the bytes signatures' GIF and BMP decoding, until encoded_images decoded each format itself).
EARLIER_EXPORT_OPS = frozenset({"DecodeImage"})
# Function calls, whose callees are checked as any function: keras-lpips exports' calls read
# variables (StatefulPartitionedCall); a stateless function is called with a PartitionedCall.
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
COMPUTE_OPS = EXPORT_OPS | EARLIER_EXPORT_OPS | CALL_OPS
# Ops the functions `tf.saved_model.save` writes to save and to restore the variables add:
# checkpoint writes, and checkpoint reads.
SAVE_OPS = frozenset({"DisableCopyOnRead", "MergeV2Checkpoints", "SaveV2", "Select", "ShardedFilename", "StaticRegexFullMatch"})
RESTORE_OPS = frozenset({"AssignVariableOp", "RestoreV2"})
CHECKPOINT_OPS = SAVE_OPS | RESTORE_OPS
# The largest saved_model.pb read: a keras-lpips export's is under 2 MB (squeezenet, all layers: 1.9 MB).
MAX_GRAPH_BYTES = 16 * 10**6
SAVER_CALL = "the function that saves or restores its variables, which keras-lpips exports never do"
ADVICE = "a SavedModel is a program: load only models you trust, or export one with keras-lpips export"


def check_savedmodel(directory):
    """Refuses (`UnsafeFileError`) the SavedModel in `directory` when it could run an op that
    keras-lpips exports never run; `DataError` when its saved_model.pb is unreadable, larger than
    `MAX_GRAPH_BYTES` or not a SavedModel. Nothing of it is loaded or run."""
    check_ops(read_savedmodel(Path(directory) / "saved_model.pb"), directory)


def read_savedmodel(path):
    """The `SavedModel` protocol buffer in the file `path`, read without running anything."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    data = read_bounded(path, MAX_GRAPH_BYTES, "a keras-lpips export's graph")
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(data)
    except DecodeError as error:
        raise DataError(f"Cannot read {path}: not a SavedModel ({error})") from None
    if not saved.meta_graphs:
        raise DataError(f"Cannot read {path}: it holds no meta graph")
    return saved


def check_ops(saved, where):
    """Refuses (`UnsafeFileError`) a parsed `SavedModel` (`saved_model_pb2.SavedModel`) whose
    meta graphs could run an op outside `COMPUTE_OPS`, or `CHECKPOINT_OPS` outside its saver's
    functions, or call those from anywhere else. `where` names it in the message."""
    for graph in saved.meta_graphs:
        _check_meta_graph(graph, where)


def _check_meta_graph(graph, where):
    """`check_ops` for one `MetaGraphDef`: what its signatures reach first (named by signature,
    as a user knows them), then every other graph node and library function, then the saver's."""
    if not graph.object_graph_def.nodes:  # TensorFlow loads such a one by running its init ops
        raise UnsafeFileError(f"Refusing SavedModel {where}: a TF1-format SavedModel (no object graph), which keras-lpips exports never are ({ADVICE})")
    library = {function.signature.name: function for function in graph.graph_def.library.function}
    nodes = {node.name: node for node in graph.graph_def.node}
    saver_def = graph.saver_def
    saves = _upstream(nodes, (saver_def.filename_tensor_name, saver_def.save_tensor_name))
    restores = _upstream(nodes, (saver_def.filename_tensor_name, saver_def.restore_op_name))
    signatures = {key: _upstream(nodes, _tensor_names(signature)) for key, signature in graph.signature_def.items()}
    strict_nodes = (set(nodes) - saves - restores).union(*signatures.values())  # a node signatures share is theirs
    saver_nodes = [node for node in graph.graph_def.node if node.name not in strict_nodes]
    save_functions = _reachable(library, [node for node in saver_nodes if node.name in saves])
    restore_functions = _reachable(library, [node for node in saver_nodes if node.name in restores])

    def check(place, node_defs, allowed=COMPUTE_OPS, saver=False):
        """Refuses the first op of `node_defs` outside `allowed`, or (unless `saver`: the saver's
        own nodes and functions) a call of a saver function."""
        for node in node_defs:
            for name in (node.op, *_called(node)):
                if name not in library and name not in allowed:
                    raise UnsafeFileError(
                        f"Refusing SavedModel {where}: {place} runs op {name!r}, which keras-lpips exports {_use(name)} ({ADVICE})"
                    )
                if not saver and (name in save_functions or name in restore_functions):
                    raise UnsafeFileError(f"Refusing SavedModel {where}: {place} calls {name}, {SAVER_CALL} ({ADVICE})")

    checked = set()
    for key, names in signatures.items():
        reached = [node for node in graph.graph_def.node if node.name in names]
        check(f"its signature {key!r}", reached)
        for name in _reachable(library, reached):
            if name not in checked:
                check(f"function {name} of its signature {key!r}", library[name].node_def)
                checked.add(name)
    check("its graph", [node for node in graph.graph_def.node if node.name in strict_nodes])
    # What saves or restores (the saver_def's tensors, its calls of the saver's functions) is
    # nobody else's input: e.g. an init op (TF Serving runs saved_model_main_op) run after a save.
    savers = {_node_name(saver_def.save_tensor_name), _node_name(saver_def.restore_op_name)} | {
        node.name for node in saver_nodes if {node.op, *_called(node)} & (save_functions.keys() | restore_functions.keys())
    }
    for node in graph.graph_def.node:
        used = next((_node_name(tensor) for tensor in node.input if _node_name(tensor) in savers), None)
        if node.name in strict_nodes and used is not None:
            raise UnsafeFileError(f"Refusing SavedModel {where}: its graph node {node.name} takes an input from {used}, a node of its saver, which keras-lpips exports never do ({ADVICE})")
    for name, function in library.items():
        if name not in checked and name not in save_functions and name not in restore_functions:
            check(f"its function {name}", function.node_def)
    for name in _object_functions(graph.object_graph_def):
        if name in save_functions or name in restore_functions:
            raise UnsafeFileError(f"Refusing SavedModel {where}: its objects call {name}, {SAVER_CALL} ({ADVICE})")
    check("its saver", saver_nodes, saver=True)
    for name in {**save_functions, **restore_functions}:
        # a function that both saves and restores may do neither
        allowed = COMPUTE_OPS | (set() if name in restore_functions else SAVE_OPS) | (set() if name in save_functions else RESTORE_OPS)
        check(f"its saver's function {name}", library[name].node_def, allowed, saver=True)


def _use(op):
    """How keras-lpips exports use `op`, refused where it was found."""
    if op in SAVE_OPS:
        return "run only to save variables"
    return "run only to restore variables" if op in RESTORE_OPS else "never use"


def _node_name(tensor):
    """The graph node a tensor name ("node:0") or control input ("^node") refers to."""
    return tensor.lstrip("^").split(":")[0]


def _tensor_names(signature):
    """The names of every tensor a `SignatureDef` feeds or fetches (dense, sparse and composite)."""
    def names(info):
        sparse = info.coo_sparse
        yield from (info.name, sparse.values_tensor_name, sparse.indices_tensor_name, sparse.dense_shape_tensor_name)
        for component in info.composite_tensor.components:
            yield from names(component)

    return [name for info in (*signature.inputs.values(), *signature.outputs.values()) for name in names(info) if name]


def _upstream(nodes, tensors):
    """Names of the graph nodes computing `tensors` and of every node they take an input from."""
    found, todo = set(), [_node_name(tensor) for tensor in tensors if tensor]
    while todo:
        name = todo.pop()
        if name in nodes and name not in found:
            found.add(name)
            todo.extend(_node_name(tensor) for tensor in nodes[name].input)
    return found


def _called(node):
    """The names of the functions a node's attributes call (`f`, `body`, `then_branch`, lists of
    them): library functions, or else ops of that name."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(function.name for function in value.list.func)
    return names


def _reachable(library, node_defs):
    """Names of the library functions `node_defs` call, directly or through other functions, each
    after a function that calls it (a dict used as an ordered set)."""
    found = {}
    todo = [name for node in node_defs for name in (node.op, *_called(node)) if name in library]
    while todo:
        name = todo.pop(0)
        if name not in found:
            found[name] = None
            todo.extend(callee for node in library[name].node_def for callee in (node.op, *_called(node)) if callee in library)
    return found


def _object_functions(object_graph):
    """Names of the functions a `SavedObjectGraph` lets the loaded object call."""
    names = set(object_graph.concrete_functions)
    for node in object_graph.nodes:
        names.update(node.function.concrete_functions)
        if node.bare_concrete_function.concrete_function_name:
            names.add(node.bare_concrete_function.concrete_function_name)
    return names
