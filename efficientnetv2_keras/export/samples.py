"""Images for int8 calibration and parity checks, from a data source, an array or a tf.data pipeline.

Images go through the evaluation preprocessing of `efficientnetv2_keras.data` (the same centre crop
and resize the bytes signature applies), so calibration sees what the served model will see:
float32 pixels in [0, 255] at the export size.
"""

import numpy as np

DEFAULT_PARITY_SOURCE = "digits"  # bundled with scikit-learn: works offline
_EVAL_SPLITS = ("test", "validation", "val")


def _pick_split(source, prefer_eval):
    splits = tuple(source.splits)
    order = (_EVAL_SPLITS + ("train",)) if prefer_eval else (("train",) + _EVAL_SPLITS)
    return next((s for s in order if s in splits), splits[0])


def _from_source(source, image_size, limit, crop_padding, prefer_eval):
    from efficientnetv2_keras.data import build_dataset, get_source

    source = get_source(source)
    split = _pick_split(source, prefer_eval)
    dataset = build_dataset(
        source,
        split,
        image_size,
        batch_size=min(limit, 32),
        training=False,
        eval_crop_padding=crop_padding,
        deterministic=True,
    )
    images = []
    for batch, _ in dataset:
        images.append(batch.numpy())
        if sum(len(b) for b in images) >= limit:
            break
    if not images:
        raise ValueError(f"The {split!r} split of {source.name} has no images.")
    return np.concatenate(images)[:limit], f"{source.name} ({split})"


def _from_dataset(dataset, limit):
    images = []
    for element in dataset:
        batch = element[0] if isinstance(element, (tuple, list)) else element
        if isinstance(batch, dict):
            raise ValueError("A tf.data representative dataset must yield images or (images, labels), not dicts.")
        batch = np.asarray(batch)
        images.append(batch[None] if batch.ndim == 3 else batch)
        if sum(len(b) for b in images) >= limit:
            break
    if not images:
        raise ValueError("The representative dataset is empty.")
    return np.concatenate(images)[:limit]


def load_images(data, image_size, limit, *, crop_padding=None, prefer_eval=False, what="representative_data"):
    """Returns (float32 images [n <= limit, S, S, 3], description).

    data: a data source name or `Source` ("digits", "folder:/path", an image-folder path, a prepared
      tfds name, ...), a numpy array / tensor [N, S, S, 3] of pixels in [0, 255], or a tf.data
      dataset yielding such images (batched or not, alone or with labels).
    prefer_eval: take a source's test/validation split (parity samples) instead of train (calibration).
    """
    from efficientnetv2_keras.data.preprocessing import CROP_PADDING

    crop_padding = CROP_PADDING if crop_padding is None else crop_padding
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"The number of {what} images must be a positive int, got {limit!r}.")
    if data is None:
        raise ValueError(f"{what} is None.")
    from efficientnetv2_keras.data import Source

    if isinstance(data, (str, Source)) or hasattr(data, "__fspath__"):
        images, description = _from_source(data, image_size, limit, crop_padding, prefer_eval)
    else:
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            images, description = _from_dataset(data, limit), "tf.data dataset"
        elif hasattr(data, "shape"):
            images = np.asarray(data)
            images = images[None] if images.ndim == 3 else images
            images, description = images[:limit], "given images"
        else:
            raise TypeError(
                f"{what} must be a data source name (e.g. 'digits', 'folder:/path/to/images'), a Source, "
                f"an array of images [N, {image_size}, {image_size}, 3], or a tf.data.Dataset; got "
                f"{type(data).__name__}."
            )
    images = images.astype(np.float32)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise ValueError(
            f"{what} images have shape {images.shape[1:]}, the export takes ({image_size}, {image_size}, 3). "
            "Resize them (efficientnetv2_keras.data.preprocess_for_eval), or pass a data source name "
            "and the images are preprocessed for you."
        )
    if images.size and images.max() <= 1.0:
        from absl import logging

        logging.warning(
            "%s pixels are all <= 1.0; the models take pixels in [0, 255] (they rescale inside). "
            "Multiply by 255 if these are [0, 1] images.",
            what,
        )
    return images, description


def parity_images(sample_images, representative_data, image_size, limit, crop_padding=None):
    """Parity samples: the given ones, else the representative data's eval split, else the digits."""
    data = sample_images
    if data is None:
        data = representative_data if representative_data is not None else DEFAULT_PARITY_SOURCE
    return load_images(data, image_size, limit, crop_padding=crop_padding, prefer_eval=True, what="sample_images")
