"""ONNX export: the same inference graph as the SavedModel, converted by tf2onnx, checked on ONNX Runtime.

`pip install "efficientnetv2-keras[onnx]"` (tf2onnx, onnx, onnxruntime). The traced function is
the one every export uses (`model(images, training=False)`, EMA weights when the optimizer keeps
them); its variables are frozen into constants, then tf2onnx converts the graph. Keras'
`model.export(format="onnx")` also goes through tf2onnx on the TensorFlow backend, but traces the
model's current weights and has no parity check.

Input "images": float32 pixels [batch, S, S, 3] in [0, 255], channels last like the Keras model;
output "predictions". The file is checked with `onnx.checker`, for random/training ops and for ops
outside the standard ONNX domains (`graph_check.check_onnx_ops`), and against the Keras model on
ONNX Runtime's CPU provider, before it is renamed into place.
"""

import contextlib
import logging

import numpy as np

from efficientnetv2_keras.export import common, graph_check, parity, steps
from efficientnetv2_keras.export.common import INPUT_NAME, OUTPUT_NAME
from efficientnetv2_keras.files import atomic_output

BATCH_DIM = "batch"  # the name of the dynamic batch dimension in the file
DEFAULT_NUM_PARITY_SAMPLES = 64
_INSTALL_HINT = 'pip install "efficientnetv2-keras[onnx]" (tf2onnx, onnx, onnxruntime)'


def _require(module):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"ONNX export needs {module} ({error}): {_INSTALL_HINT}.") from None


def make_session(path_or_bytes, num_threads=None):
    """An ONNX Runtime CPU session; num_threads=None lets the runtime choose (all cores)."""
    onnxruntime = _require("onnxruntime")
    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def run_onnx(session, images, batch_size=None, chunk=32):
    """Runs the exported model on `images` [N, S, S, 3]; a fixed batch gets its last chunk padded."""

    def run(part):
        return session.run([OUTPUT_NAME], {INPUT_NAME: part})[0]

    return common.run_in_chunks(run, np.asarray(images, np.float32), batch_size, chunk)


@contextlib.contextmanager
def _quiet_conversion():
    """tf2onnx logs every graph rewrite at INFO and TF1-API deprecations: keep warnings only."""
    import tensorflow as tf

    loggers = [logging.getLogger("tf2onnx"), tf.get_logger()]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def convert(concrete_function, name, opset=None):
    """The ONNX ModelProto of a traced inference function (one image input, one output)."""
    _require("onnx")
    tf2onnx = _require("tf2onnx")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # Frozen first: tf2onnx's from_function keeps tensors the function captures (the Normalization
    # layer's mean and variance) as extra graph inputs; the frozen graph has constants there.
    frozen = convert_variables_to_constants_v2(concrete_function)
    (input_tensor,), (output_tensor,) = frozen.inputs, frozen.outputs
    with _quiet_conversion():
        model_proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            name=name,
            input_names=[input_tensor.name],
            output_names=[output_tensor.name],
            opset=opset,
            tensors_to_rename={input_tensor.name: INPUT_NAME, output_tensor.name: OUTPUT_NAME},
        )
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):  # tf2onnx names it "unk__<n>"
            first.dim_param = BATCH_DIM
    return model_proto


def export_onnx(
    model,
    path,
    *,
    sample_images=None,
    num_parity_samples=DEFAULT_NUM_PARITY_SAMPLES,
    image_size=None,
    batch_size=None,
    use_ema="auto",
    crop_padding=None,
    thresholds=None,
    opset=None,
    overwrite=False,
):
    """Converts the inference graph of `model` to an .onnx file, checked before it is moved to `path`.

    Args:
      model: a Keras model taking float pixels in [0, 255], with one output.
      path: the .onnx file to write. Never overwritten unless `overwrite=True`; a failed export
        leaves nothing there (written to a temporary sibling, renamed into place when checked).
      sample_images: images for the parity check: a data source name ("digits", "folder:/path"),
        a `Source`, an array [N, S, S, 3] in [0, 255] or a tf.data dataset; default the digits.
      image_size: the square input size; default the model's fixed size or the variant's eval size.
      batch_size: None for a dynamic batch dimension ("batch"), or an int to fix it.
      use_ema: "auto" | True | False: export the optimizer's EMA weights (see `common.ema_state_mapping`).
      crop_padding: evaluation centre-crop padding for sample images read from sources (default 32).
      thresholds: override the "onnx" entry of `parity.PARITY_THRESHOLDS`.
      opset: the ONNX opset; default tf2onnx's (15 with tf2onnx 1.17, run by every ONNX Runtime >= 1.10).
    Returns an `ExportResult`; raises `ExportParityError` (nothing written) when parity fails,
    `InferenceGraphError` when the graph has random, training or non-standard ops.
    """
    common.require_tensorflow_backend()
    for module in ("tf2onnx", "onnx", "onnxruntime"):
        _require(module)  # before any work: the parity check needs the runtime too
    import onnx

    settings = steps.prepare(model, path, "onnx", image_size=image_size, crop_padding=crop_padding,
                             batch_size=batch_size, use_ema=use_ema, thresholds=thresholds, overwrite=overwrite)
    checked = steps.parity_samples(settings, sample_images, None, num_parity_samples)
    model_proto = convert(steps.traced_inference(settings), model.name, opset)
    onnx.checker.check_model(model_proto)
    op_types = graph_check.check_onnx_ops(model_proto, what="ONNX model")
    content = model_proto.SerializeToString()

    with atomic_output(settings.path, overwrite) as temporary:
        with open(temporary, "wb") as f:
            f.write(content)
        outputs = run_onnx(make_session(temporary), checked.images, settings.batch_size)
        report = parity.compare(checked.reference, outputs, signature="onnx", mode="onnx", thresholds=thresholds)
        parity.raise_if_failed([report], f"the ONNX export to {settings.path}")
    return steps.export_result(settings, checked, format="onnx", quantization="none", size_bytes=len(content),
                               reports=[report], op_types=op_types)
