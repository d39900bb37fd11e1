"""Exports a trained model for serving, with a parity check against Keras.

    effnetv2-export --model=runs/demo/best.keras --format=tflite --quantization=int8 \
        --representative_source=digits --output=exports/demo_int8.tflite
    effnetv2-export --variant=s --weights=s.weights.h5 --format=saved_model --output=exports/s
    effnetv2-export --model=runs/demo/best.keras --format=onnx --output=exports/demo.onnx

A checkpoint from a training run is exported at the run's eval size and crop padding (its config.yaml);
--image_size and --crop_padding override them.
A checkpoint trained under mixed precision (train.mixed_precision: auto picks mixed_float16 on GPUs) is
exported as its float32 rebuild; the report says how far the mixed-precision model is from it.

Prints the parity report. Exits non-zero, leaving nothing at --output, when the export fails (parity
below the thresholds of efficientnetv2_keras.export.PARITY_THRESHOLDS, a training op in the graph, ...).
An existing --output is replaced only with --overwrite.
"""

import sys

from absl import app, flags, logging

from efficientnetv2_keras import cli
from efficientnetv2_keras.export import QUANTIZATIONS

flags.DEFINE_string("model", None, "A .keras model file (model.save). Or use --variant and --weights.")
flags.DEFINE_string("variant", None, "Variant to build (b0-b3, s, m, l, xl) when exporting a weights file.")
flags.DEFINE_string("weights", None, "With --variant: a weights file, 'imagenet', or 'none' (random weights).")
flags.DEFINE_integer("classes", 1000, "With --variant: classes of the classifier head in --weights.")
flags.DEFINE_integer(
    "image_size", None,
    "Input size in pixels; default: the eval size in the config.yaml of the run --model comes from, else "
    "the model's fixed size or the variant's eval size.",
)  # fmt: skip
flags.DEFINE_enum(
    "format", "saved_model", ["saved_model", "tflite", "onnx"],
    "Export format (onnx needs pip install 'efficientnetv2-keras[onnx]').",
)  # fmt: skip
flags.DEFINE_enum("quantization", "none", list(QUANTIZATIONS), "TFLite quantization.")
flags.DEFINE_string(
    "representative_source", None,
    "Images for int8 calibration and the parity check: 'digits', 'folder:/path', an image folder, a "
    "prepared tfds name. Default for the parity check: the bundled digits.",
)  # fmt: skip
flags.DEFINE_integer(
    "crop_padding", None,
    "Evaluation center crop size/(size+padding) for the bytes signature and sample images; default: "
    "data.eval_crop_padding in the config.yaml of the run --model comes from, else the official 32; "
    "0 = resize whole images (e.g. digits).",
)
flags.DEFINE_integer("num_calibration", 100, "Images that calibrate int8.")
flags.DEFINE_integer("num_parity_samples", 64, "Images in the parity check.")
flags.DEFINE_string("output", None, "Output path: a SavedModel directory, a .tflite or an .onnx file.")
flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.")
flags.DEFINE_string("batch_size", "dynamic", "'dynamic' (any batch) or a fixed batch size.")
flags.DEFINE_enum("use_ema", "auto", ["auto", "true", "false"], "Export the optimizer's EMA weights.")
flags.DEFINE_float("max_abs_diff", None, "Parity limit on probabilities; default: the documented one per mode.")
flags.DEFINE_float("min_top1_agreement", None, "Parity limit on top-1 agreement (0-1); default: documented.")
flags.DEFINE_float(
    "max_mean_tv", None, "Parity limit on the mean total-variation distance of probabilities (0-1); default: documented."
)
flags.mark_flag_as_required("output")
FLAGS = flags.FLAGS


def _batch_size(value):
    if value == "dynamic":
        return None
    try:
        return int(value)
    except ValueError:
        raise app.UsageError(f"--batch_size must be 'dynamic' or an integer, got {value!r}.") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _check_flags()
    batch_size = _batch_size(FLAGS.batch_size)
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow logs several INFO lines per SavedModel write
    from efficientnetv2_keras import export
    from efficientnetv2_keras.runs import eval_preprocessing

    weights = None if (FLAGS.weights or "").lower() == "none" else FLAGS.weights
    try:
        # A checkpoint from a training run is exported at the run's eval size and crop, not the variant's.
        preprocessing = eval_preprocessing(FLAGS.model, FLAGS.image_size, FLAGS.crop_padding)
        if preprocessing.config_path:
            print(f"Exporting at {preprocessing.describe()}.")
        model = export.load_model_for_export(
            FLAGS.model, variant=FLAGS.variant, weights=weights, classes=FLAGS.classes
        )
        result = export.export_model(
            model,
            FLAGS.output,
            format=FLAGS.format,
            quantization=FLAGS.quantization,
            representative_data=FLAGS.representative_source,
            num_calibration=FLAGS.num_calibration,
            num_parity_samples=FLAGS.num_parity_samples,
            image_size=preprocessing.image_size,
            crop_padding=preprocessing.crop_padding,
            batch_size=batch_size,
            use_ema={"auto": "auto", "true": True, "false": False}[FLAGS.use_ema],
            thresholds=_thresholds(export.PARITY_THRESHOLDS),
            overwrite=FLAGS.overwrite,
        )
    except export.ExportParityError as error:
        print(f"Export failed: {error}", file=sys.stderr)
        return 1
    # ValueError (a training op in the graph included), ImportError, FileExistsError, FileNotFoundError: one line, exit status 2 (cli.run).
    print(result)
    return 0


def _check_flags():
    """Usage errors of the flags, and a backend that cannot write these formats, before any loading."""
    if (FLAGS.model is None) == (FLAGS.variant is None):
        raise app.UsageError("Pass either --model=FILE.keras or --variant=NAME --weights=FILE.")
    if FLAGS.variant is not None and FLAGS.weights is None:
        raise app.UsageError(
            "--variant needs --weights (a weights file, 'imagenet', or 'none' for random weights)."
        )
    if FLAGS.format != "tflite" and FLAGS.quantization != "none":
        raise app.UsageError("--quantization applies to --format=tflite only.")

    from efficientnetv2_keras.export.common import require_tensorflow_backend

    try:  # a JAX/PyTorch session cannot write these formats
        require_tensorflow_backend(cli.program())
    except RuntimeError as error:  # not a usage error of the flags: one line without the --help hint
        raise ValueError(str(error)) from None


def _thresholds(documented):
    """The mode's documented parity thresholds with the limits given as flags, or None (the documented ones)."""
    limits = {"max_abs_diff": FLAGS.max_abs_diff, "min_top1_agreement": FLAGS.min_top1_agreement,
              "max_mean_tv": FLAGS.max_mean_tv}  # fmt: skip
    if all(value is None for value in limits.values()):
        return None
    mode = FLAGS.quantization if FLAGS.format == "tflite" else FLAGS.format
    return documented[mode]._replace(**{name: value for name, value in limits.items() if value is not None})


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
