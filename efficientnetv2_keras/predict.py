"""Image files -> top-k labels (`tools/predict.py`), with the evaluation preprocessing of training."""

import os

import numpy as np


def read_class_names(path):
    """One class name per line (the `labels.txt` training writes next to its checkpoints)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def predict_files(model, paths, image_size=None, top_k=5, class_names=None, crop_padding=None, batch_size=32):
    """Classifies image files (JPEG/PNG/BMP/GIF): [(path, [(label, probability), ...])], best first.

    image_size: the model's fixed input size, else required (e.g. the recipe's eval size).
    crop_padding: evaluation center crop size/(size+padding) below 320 px (None: the official 32;
      0: resize the whole image, as for digits).
    Unreadable files raise a ValueError naming the file, before any prediction is made.
    """
    import tensorflow as tf

    from efficientnetv2_keras.data.preprocessing import decode_and_preprocess

    fixed = model.input_shape[1]
    image_size = image_size or fixed
    if not image_size:
        raise ValueError("The model takes any image size: pass image_size (e.g. the recipe's eval size).")
    if fixed and image_size != fixed:
        raise ValueError(f"The model takes {fixed} px images, not image_size={image_size}.")
    from efficientnetv2_keras.data.sources import IMAGE_EXTENSIONS, is_image_file

    refused = [os.fspath(path) for path in paths if not is_image_file(path)]
    if refused:  # the formats image folders accept for training, no more and no less
        raise ValueError(f"Not an accepted image format ({', '.join(IMAGE_EXTENSIONS)}): {', '.join(refused)}. "
                         "Convert these files (e.g. to PNG) first.")
    images = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                images.append(decode_and_preprocess(tf.constant(f.read()), image_size, crop_padding).numpy())
        except (OSError, tf.errors.InvalidArgumentError) as error:
            raise ValueError(f"Cannot read image {path!r}: {str(error).splitlines()[0]}") from None
    if not images:
        return []
    probabilities = model.predict(np.stack(images), batch_size=batch_size, verbose=0)
    classes = probabilities.shape[-1]
    if class_names is not None and len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for a model with {classes} outputs.")
    names = class_names or [str(i) for i in range(classes)]
    top_k = min(top_k, classes)
    results = []
    for path, row in zip(paths, probabilities):
        best = np.argsort(-row)[:top_k]
        results.append((os.fspath(path), [(names[i], float(row[i])) for i in best]))
    return results
