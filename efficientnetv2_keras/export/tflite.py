"""TFLite export: fp32, float16, dynamic-range int8 and full int8, each checked for parity before it lands.

Conversion stays in TensorFlow (`tf.lite.TFLiteConverter`, from the concrete inference function).
The interpreter now ships separately as LiteRT (`pip install ai-edge-litert`, the `litert` extra);
`tf.lite.Interpreter` still works in TF 2.21 but is deprecated, so it is only the fallback.

Only TFLite builtin ops are allowed (no TF-Select/Flex ops): a model that needs them would not run
on a stock runtime, which is how the official project's training-mode exports failed.
"""

from efficientnetv2_keras.export import common, graph_check, parity, samples, steps
from efficientnetv2_keras.export.interpreter import make_interpreter, run_tflite
from efficientnetv2_keras.files import atomic_output

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
DEFAULT_NUM_CALIBRATION = 100
DEFAULT_NUM_PARITY_SAMPLES = 64


def _converter(concrete_function, quantization, representative_images, batch_size):
    import tensorflow as tf

    # The trackable handed to the converter must hold the function's variables, not the Keras model:
    # with the model attached (measured, TF 2.21 + Keras 3.15) the converter keeps them as resource
    # variables (VAR_HANDLE/READ_VARIABLE ops, no weights in the file) instead of freezing them.
    holder = tf.Module()
    holder.inference_variables = list(concrete_function.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "none":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        step = batch_size or 1

        def representative_dataset():
            for start in range(0, len(representative_images) - step + 1, step):
                yield [representative_images[start : start + step]]

        converter.representative_dataset = representative_dataset
        # Every op in int8; inputs and outputs stay float32 (quantized at the edges), so the
        # file is a drop-in replacement for the fp32 one.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def check_quantization(quantization, representative_data):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization {quantization!r}; valid modes: {', '.join(QUANTIZATIONS)} "
            "(none = float32; float16 = half-precision weights; dynamic_int8 = int8 weights, float "
            "activations; int8 = int8 weights and activations, needs representative_data)."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' calibrates activation ranges on representative images: pass "
            "representative_data (a data source such as 'digits' or 'folder:/path/to/images', or an "
            "array of images). Or use 'dynamic_int8', which needs no data."
        )


def export_tflite(
    model,
    path,
    quantization="none",
    representative_data=None,
    *,
    num_calibration=DEFAULT_NUM_CALIBRATION,
    sample_images=None,
    num_parity_samples=DEFAULT_NUM_PARITY_SAMPLES,
    image_size=None,
    batch_size=None,
    use_ema="auto",
    crop_padding=None,
    thresholds=None,
    overwrite=False,
):
    """Converts the inference graph of `model` to a .tflite file, checked before it is moved to `path`.

    Args:
      model: a Keras model taking float pixels in [0, 255] (EfficientNetV2 with its default
        include_preprocessing=True), with one output.
      path: the .tflite file to write. Never overwritten unless `overwrite=True`; a failed export
        leaves nothing there (written to a temporary sibling, renamed into place when checked).
      quantization: "none" (float32), "float16", "dynamic_int8" or "int8" (full integer).
      representative_data: images that calibrate "int8" (required there): a data source name
        ("digits", "folder:/path", an image-folder path, ...), a `Source`, an array [N, S, S, 3] of
        pixels in [0, 255], or a tf.data dataset. Sources are read with the evaluation preprocessing.
      num_calibration: how many representative images calibrate int8 (about 100-500 is typical).
      sample_images: images for the parity check (same kinds); default: the representative data's
        evaluation split, else the bundled digits.
      image_size: the square input size; default the model's fixed size or the variant's eval size.
      batch_size: None for a dynamic batch (the file's default shape is batch 1; interpreters
        resize), or an int to fix it.
      use_ema: "auto" | True | False: export the optimizer's EMA weights (see `common.ema_state_mapping`).
      crop_padding: evaluation centre-crop padding for images read from sources (default 32, official).
      thresholds: override the mode's `parity.PARITY_THRESHOLDS` entry (see `parity.thresholds_for`).
    Returns an `ExportResult`; raises `ExportParityError` (nothing written) when parity fails,
    `InferenceGraphError` when the graph has random/training/variable ops.
    """
    common.require_tensorflow_backend()
    check_quantization(quantization, representative_data)
    settings = steps.prepare(model, path, quantization, image_size=image_size, crop_padding=crop_padding,
                             batch_size=batch_size, use_ema=use_ema, thresholds=thresholds, overwrite=overwrite)
    representative_images = _calibration_images(settings, quantization, representative_data, num_calibration)
    checked = steps.parity_samples(settings, sample_images, representative_data, num_parity_samples)
    concrete = steps.traced_inference(settings)
    content = _converter(concrete, quantization, representative_images, settings.batch_size).convert()

    with atomic_output(settings.path, overwrite) as temporary:
        with open(temporary, "wb") as f:
            f.write(content)
        op_types = graph_check.check_tflite_ops(content, what=f"TFLite model ({quantization})")
        outputs = run_tflite(make_interpreter(model_path=temporary), checked.images, settings.batch_size)
        report = parity.compare(
            checked.reference, outputs, signature=f"tflite {quantization}", mode=quantization, thresholds=thresholds
        )
        parity.raise_if_failed([report], f"the TFLite export ({quantization}) to {settings.path}")
    return steps.export_result(settings, checked, format="tflite", quantization=quantization,
                               size_bytes=len(content), reports=[report], op_types=op_types)


def _calibration_images(settings, quantization, representative_data, num_calibration):
    """The images that calibrate int8 activation ranges (at least one fixed batch); None for other modes."""
    if quantization != "int8":
        return None
    images, _ = samples.load_images(
        representative_data, settings.image_size, num_calibration, crop_padding=settings.crop_padding
    )
    if settings.batch_size and len(images) < settings.batch_size:
        raise ValueError(
            f"int8 calibration needs at least batch_size={settings.batch_size} images, got {len(images)}."
        )
    return images
