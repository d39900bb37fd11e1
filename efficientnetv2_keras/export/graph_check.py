"""Proof that an exported graph is an inference graph: no random, training or variable-update ops.

Run on every export (not only in tests), on what was written: the reloaded SavedModel's signature
functions (their function library included: map_fn/while bodies live there), the TFLite model's
operator list and the ONNX graph's nodes. Exports that captured training-mode batch norm and the
random drop-connect op were the most reported export failure of the released code (google/automl
issues 994 and 1012, "Export tflite model", "Instructions to convert efficientnetv2 to TFLite"):
TFLite then needed TF-Select (Flex) ops or failed on mutable variables.
"""

from efficientnetv2_keras.export.interpreter import tflite_op_names

# Op-type prefixes that draw random numbers (dropout, stochastic depth, random crops).
RANDOM_OP_PREFIXES = (
    "Random",  # RandomUniform, RandomUniformInt, RandomStandardNormal, RandomShuffle, RandomGamma, ...
    "StatelessRandom",
    "StatelessTruncatedNormal",
    "StatelessMultinomial",
    "StatelessParameterizedTruncatedNormal",
    "StatelessSampleDistortedBoundingBox",
    "StatefulRandom",
    "StatefulUniform",
    "StatefulStandardNormal",
    "StatefulTruncatedNormal",
    "TruncatedNormal",
    "ParameterizedTruncatedNormal",
    "Multinomial",
    "RngReadAndSkip",
    "RngSkip",
    "NonDeterministicInts",
    "SampleDistortedBoundingBox",
)
# Ops that change state: batch-norm moving-statistics updates, optimizer steps, seed-generator updates.
STATE_CHANGING_OPS = (
    "AssignVariableOp",
    "AssignAddVariableOp",
    "AssignSubVariableOp",
    "Assign",
    "AssignAdd",
    "AssignSub",
    "ResourceScatterUpdate",
)
STATE_CHANGING_PREFIXES = ("ResourceApply", "ApplyGradient", "FusedBatchNormGrad")
FUSED_BATCH_NORM_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")

# TFLite operators: random ops, resource variables (the "mutable variable" failures: weights that
# were not frozen into constants), and TF-Select (Flex*) or custom ops that a plain runtime lacks.
TFLITE_FORBIDDEN_OPS = (
    "RANDOM_UNIFORM",
    "RANDOM_STANDARD_NORMAL",
    "MULTINOMIAL",
    "VAR_HANDLE",
    "READ_VARIABLE",
    "ASSIGN_VARIABLE",
    "CALL_ONCE",
)

# ONNX operators: random ops, and the training forms of dropout and batch norm. Ops outside the
# standard domains ("" = ai.onnx, ai.onnx.ml) are custom ops a stock runtime lacks.
ONNX_RANDOM_OPS = ("RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Multinomial", "Bernoulli")
ONNX_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


class InferenceGraphError(ValueError):
    """The exported graph contains ops that do not belong in an inference graph."""


def _forbidden_tf_op(op_type, attrs):
    if op_type.startswith(RANDOM_OP_PREFIXES):
        return "random op (dropout / stochastic depth / augmentation traced in training mode?)"
    if op_type in STATE_CHANGING_OPS or op_type.startswith(STATE_CHANGING_PREFIXES):
        return "state-changing op (batch-norm statistics update or optimizer step: training mode?)"
    if op_type in FUSED_BATCH_NORM_OPS and attrs.get("is_training", False):
        return "batch norm in training mode"
    return None


def _node_defs(graph):
    """Every NodeDef of a graph and of the functions in its library (loop bodies, called functions)."""
    graph_def = graph.as_graph_def()
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def tf_graph_problems(concrete_function, forbidden_variables=()):
    """Problems (strings) in one traced TensorFlow function; empty when it is an inference graph."""
    problems = []
    for node in _node_defs(concrete_function.graph):
        attrs = {"is_training": node.attr["is_training"].b} if "is_training" in node.attr else {}
        reason = _forbidden_tf_op(node.op, attrs)
        if reason:
            problems.append(f"{node.op} ({node.name}): {reason}")
    if forbidden_variables:
        # Keras variables wrap a tf.Variable in `.value`; compare the underlying resources.
        forbidden = {id(getattr(v, "value", v)): v for v in forbidden_variables}
        for variable in concrete_function.variables:
            if id(variable) in forbidden:
                problems.append(
                    f"reads {forbidden[id(variable)].path}: a dropout / stochastic-depth rate "
                    "(the layer ran with training=True)"
                )
    return problems


def check_inference_graph(functions, forbidden_variables=(), what="exported graph"):
    """Raises `InferenceGraphError` when any traced function has a random or training op.

    functions: a concrete function, a list of them, a loaded SavedModel (`tf.saved_model.load`),
      or the path of a SavedModel directory (its signatures are checked).
    forbidden_variables: variables that must not be read (the regularization rate variables).
    Returns the sorted op types found, for reports.
    """
    import tensorflow as tf

    if isinstance(functions, (str, bytes)) or hasattr(functions, "__fspath__"):
        functions = tf.saved_model.load(str(functions))
    if hasattr(functions, "signatures"):
        functions = list(functions.signatures.values())
    if not isinstance(functions, (list, tuple)):
        functions = [functions]
    problems, op_types = [], set()
    for function in functions:
        op_types.update(node.op for node in _node_defs(function.graph))
        problems += tf_graph_problems(function, forbidden_variables)
    _raise_if(problems, what)
    return sorted(op_types)


def check_tflite_ops(model_content, what="TFLite model"):
    """Raises `InferenceGraphError` for random, variable or TF-Select ops; returns the op names."""
    names = tflite_op_names(model_content)
    problems = [
        f"{name}: {'TF-Select/custom op' if name.startswith('Flex') else 'random or variable op'}"
        for name in names
        if name in TFLITE_FORBIDDEN_OPS or name.startswith("Flex")
    ]
    _raise_if(problems, what)
    return names


def _onnx_nodes(graph):
    """Every node of an ONNX graph and of its subgraphs (If / Loop / Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _onnx_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _onnx_nodes(subgraph)


def check_onnx_ops(model_proto, what="ONNX model"):
    """Raises `InferenceGraphError` for random, training-mode or custom-domain ops; returns the op types."""
    problems, op_types = [], set()
    for node in _onnx_nodes(model_proto.graph):
        op_types.add(node.op_type)
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if node.op_type in ONNX_RANDOM_OPS:
            problems.append(f"{node.op_type} ({node.name}): random op (dropout / stochastic depth traced in training mode?)")
        elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            problems.append(f"Dropout ({node.name}): dropout with a training_mode input")
        elif node.op_type == "BatchNormalization" and (
            len(node.output) > 1 or ("training_mode" in attributes and attributes["training_mode"].i)
        ):
            problems.append(f"BatchNormalization ({node.name}): batch norm in training mode")
        elif node.domain not in ONNX_STANDARD_DOMAINS:
            problems.append(f"{node.op_type} ({node.name}): custom op of domain {node.domain!r}")
    _raise_if(problems, what)
    return sorted(op_types)


def _raise_if(problems, what):
    """Groups the problems by kind (the part after ': '), with a count and a few examples each."""
    if problems:
        kinds = {}
        for problem in problems:
            where, _, kind = problem.partition(": ")
            kinds.setdefault(kind, []).append(where)
        shown = "\n  ".join(
            f"{kind}: {len(found)}x, e.g. {', '.join(found[:3])}" for kind, found in kinds.items()
        )
        raise InferenceGraphError(
            f"The {what} is not a pure inference graph:\n  {shown}\n"
            "Export traces model(images, training=False); a layer that ignores `training` (or a "
            "custom layer that draws random numbers or updates variables at inference) causes this."
        )
