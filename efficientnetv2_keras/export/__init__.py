"""Export for serving: SavedModel, TFLite (fp32, float16, dynamic int8, int8) and ONNX, each parity-checked.

    from efficientnetv2_keras import export
    export.export_saved_model(model, "exports/b0")                  # float + encoded-bytes signatures
    export.export_tflite(model, "exports/b0.tflite")                 # float32
    export.export_tflite(model, "exports/b0_int8.tflite", "int8", representative_data="digits")
    export.export_onnx(model, "exports/b0.onnx")                     # float32, ONNX Runtime checked

Every export traces `model(images, training=False)` (no dropout or stochastic-depth ops, batch norm
in inference mode; EMA weights when the model's optimizer keeps them), checks the written graph for
random/training/variable ops (`check_inference_graph`, `check_tflite_ops`, `check_onnx_ops`),
compares it with the Keras model on sample images (`ParityReport`: max |dp|, mean total-variation
distance, top-1 agreement; `ExportParityError` beyond the `Thresholds` of `PARITY_THRESHOLDS`), and only then renames it into place: a failed export leaves nothing at the
target path, and an existing target is replaced only with `overwrite=True`.

A model trained under mixed precision (mixed_float16 on GPUs, mixed_bfloat16 on TPUs) computes in
half precision, which TFLite's builtin ops reject: every format serves its float32 rebuild instead
(`precision.float32_rebuild`: the same layers in float32, the weights cast to float32), checks parity
against that rebuild, and reports how far the mixed-precision model is from it
(`ExportResult.precision_gap`). The model passed in and the global dtype policy are left as they were.

TFLite files run on LiteRT (`pip install "efficientnetv2-keras[litert]"`, i.e. `ai-edge-litert`),
or on TensorFlow's deprecated `tf.lite.Interpreter` when LiteRT is absent (`make_interpreter`).
ONNX export needs `pip install "efficientnetv2-keras[onnx]"` (tf2onnx, onnx, onnxruntime).
"""

from efficientnetv2_keras.export.common import ExportResult, ServedModel, model_to_serve, resolve_image_size
from efficientnetv2_keras.export.graph_check import (
    InferenceGraphError,
    check_inference_graph,
    check_onnx_ops,
    check_tflite_ops,
)
from efficientnetv2_keras.export.interpreter import interpreter_backend, make_interpreter, run_tflite, tflite_op_names
from efficientnetv2_keras.export.onnx import export_onnx, make_session, run_onnx
from efficientnetv2_keras.export.parity import (
    NO_LIMITS,
    PARITY_THRESHOLDS,
    ExportParityError,
    ParityReport,
    Thresholds,
)
from efficientnetv2_keras.export.samples import load_images
from efficientnetv2_keras.export.saved_model import (
    BYTES_SIGNATURE,
    FLOAT_SIGNATURE,
    decode_and_preprocess,
    export_saved_model,
)
from efficientnetv2_keras.export.tflite import QUANTIZATIONS, export_tflite

FORMATS = ("saved_model", "tflite", "onnx")


def load_model_for_export(model_path=None, *, variant=None, weights=None, classes=1000):
    """The model to export: a `.keras` file, or a variant built with a weights file.

    model_path: a `.keras` file (`model.save`); our layers are registered, no custom_objects needed.
      A missing, truncated, damaged or foreign file raises FileNotFoundError / `ModelFileError`
      naming the problem (`models.io.load_model_file`).
    variant + weights: `build_model(variant, weights=weights, classes=classes)` with a dynamic input
      size (the export picks the size); weights is a weights file, "imagenet", or None for random
      weights (to try the pipeline; the parity check is then not meaningful for int8).
    """
    from efficientnetv2_keras.models import build_model
    from efficientnetv2_keras.models.io import IncompatibleModelFileError, load_model_file

    if (model_path is None) == (variant is None):
        raise ValueError("Give either a .keras model file or a variant (with its weights), not both or neither.")
    if model_path is not None:
        try:  # compiled, so that the optimizer's EMA variables come back too
            return load_model_file(model_path, compile=True)
        except IncompatibleModelFileError as error:  # e.g. a custom loss or metric not registered here
            from absl import logging

            logging.warning(
                "Could not restore the training configuration of %s (%s); loading the model without "
                "it: EMA weights kept by its optimizer (if any) cannot be exported.", model_path, error
            )
            return load_model_file(model_path, compile=False)
    return build_model(variant, weights=weights, classes=classes)


def export_model(model, path, format="saved_model", quantization="none", **kwargs):
    """`export_saved_model`, `export_tflite` or `export_onnx`, picked by `format` (what tools/export.py calls)."""
    if format not in FORMATS:
        raise ValueError(f"Unknown export format {format!r}; valid formats: {', '.join(FORMATS)}.")
    if format == "tflite":
        return export_tflite(model, path, quantization, **kwargs)
    if quantization != "none":
        raise ValueError(
            f"quantization={quantization!r} applies to TFLite only; a {format} export keeps the float32 "
            "weights. Use format='tflite' for a quantized model."
        )
    representative_data = kwargs.pop("representative_data", None)
    kwargs.pop("num_calibration", None)
    if kwargs.get("sample_images") is None:  # no calibration here: the data serves parity
        kwargs["sample_images"] = representative_data
    if format == "onnx":
        return export_onnx(model, path, **kwargs)
    return export_saved_model(model, path, **kwargs)


__all__ = [
    "export_saved_model",
    "export_tflite",
    "export_onnx",
    "export_model",
    "load_model_for_export",
    "ExportResult",
    "ServedModel",
    "model_to_serve",
    "ParityReport",
    "ExportParityError",
    "InferenceGraphError",
    "PARITY_THRESHOLDS",
    "Thresholds",
    "NO_LIMITS",
    "QUANTIZATIONS",
    "FORMATS",
    "FLOAT_SIGNATURE",
    "BYTES_SIGNATURE",
    "check_inference_graph",
    "check_tflite_ops",
    "check_onnx_ops",
    "tflite_op_names",
    "make_interpreter",
    "interpreter_backend",
    "run_tflite",
    "make_session",
    "run_onnx",
    "decode_and_preprocess",
    "load_images",
    "resolve_image_size",
]
