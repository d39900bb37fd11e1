"""Top-k labels for image files: `python tools/predict.py --model_dir=runs/demo image1.png image2.jpg`.

The model is model_dir's best.keras (else last.keras) or --model; the image size and crop come from
model_dir/config.yaml (or --image_size / --crop_padding), class names from model_dir/labels.txt.
"""

import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training directory (checkpoint, config.yaml, labels.txt).")
flags.DEFINE_string("model", None, "A .keras file (default: model_dir/best.keras, else last.keras).")
flags.DEFINE_integer("image_size", None, "Input size (default: the recipe's eval size, or the model's).")
flags.DEFINE_integer("crop_padding", None, "Eval center-crop padding (default: the recipe's; official 32).")
flags.DEFINE_string("labels", None, "Class names, one per line (default: model_dir/labels.txt).")
flags.DEFINE_integer("top_k", 5, "How many labels per image.")


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give image files to classify.")
    if not FLAGS.model and not FLAGS.model_dir:
        raise app.UsageError("Pass --model_dir or --model.")
    import keras

    from efficientnetv2_keras.predict import predict_files, read_class_names
    from efficientnetv2_keras.training.trainer import find_checkpoint

    directory = FLAGS.model_dir or ""
    model_path = FLAGS.model or find_checkpoint(directory)
    image_size, crop_padding = FLAGS.image_size, FLAGS.crop_padding
    recipe = os.path.join(directory, "config.yaml")
    if directory and os.path.exists(recipe):
        from efficientnetv2_keras.hparams import image_sizes, load_config

        config = load_config(recipe)
        image_size = image_size or image_sizes(config)[1]
        crop_padding = config.data.eval_crop_padding if crop_padding is None else crop_padding
    labels = FLAGS.labels or (os.path.join(directory, "labels.txt") if directory else None)
    class_names = read_class_names(labels) if labels and os.path.exists(labels) else None
    model = keras.models.load_model(model_path, compile=False)
    for path, top in predict_files(model, paths, image_size, FLAGS.top_k, class_names, crop_padding):
        print(path + ": " + ", ".join(f"{name} {p:.3f}" for name, p in top))


if __name__ == "__main__":
    app.run(main)
