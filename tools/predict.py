"""Top-k labels for image files: `python tools/predict.py --model_dir=runs/demo image1.png image2.jpg`.

The model is model_dir's best.keras (else last.keras) or --model; the image size and crop come from the
config.yaml of the run the checkpoint belongs to (or --image_size / --crop_padding), class names from its
labels.txt (or --labels).
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training directory (checkpoint, config.yaml, labels.txt).")
flags.DEFINE_string("model", None, "A .keras file (default: model_dir/best.keras, else last.keras).")
flags.DEFINE_integer("image_size", None, "Input size (default: the run's eval size, or the model's).")
flags.DEFINE_integer("crop_padding", None, "Eval center-crop padding (default: the run's; official 32).")
flags.DEFINE_string("labels", None, "Class names, one per line (default: the run's labels.txt).")
flags.DEFINE_integer("top_k", 5, "How many labels per image.")


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give image files to classify.")
    if not FLAGS.model and not FLAGS.model_dir:
        raise app.UsageError("Pass --model_dir or --model.")
    from efficientnetv2_keras.models.io import load_model_file
    from efficientnetv2_keras.predict import predict_files, read_class_names
    from efficientnetv2_keras.runs import LABELS_FILE, eval_preprocessing, run_file
    from efficientnetv2_keras.training.evaluation import find_checkpoint

    model_path = FLAGS.model or find_checkpoint(FLAGS.model_dir)
    run = FLAGS.model_dir or model_path
    try:
        preprocessing = eval_preprocessing(run, FLAGS.image_size, FLAGS.crop_padding)
        labels = FLAGS.labels or run_file(run, LABELS_FILE)
        class_names = read_class_names(labels) if labels else None
        model = load_model_file(model_path)
        predictions = predict_files(
            model, paths, preprocessing.image_size, FLAGS.top_k, class_names, preprocessing.crop_padding
        )
    except (OSError, ValueError) as error:  # missing/corrupt model or image, unreadable config: for people
        print(f"predict: {error}", file=sys.stderr)
        return 2
    for path, top in predictions:
        print(path + ": " + ", ".join(f"{name} {p:.3f}" for name, p in top))
    return 0


if __name__ == "__main__":
    app.run(main)  # exits with main()'s return code
