"""Per-image preprocessing for training, evaluation and finetuning (the released code's `preprocessing.py`).

Every function takes a uint8 image [H, W, 3] of any size and returns float32 [size, size, 3] in [0, 255]:
the models rescale inside when `include_preprocessing=True`, so no normalisation happens here (the
official code normalises to [-1, 1] at this point instead).

Randomness is stateless: each function takes a `seed` (int tensor of shape [2]); the pipeline gives every
element its own seed, so a pipeline built with a seed is reproducible.
"""

from __future__ import annotations

import tensorflow as tf

from efficientnetv2_keras.data.image_ops import cutout, random_seed
from efficientnetv2_keras.data.randaugment import RandAugment
from efficientnetv2_keras.limits import augment_argument

TRAIN_AREA_RANGE = (0.05, 1.0)  # official V2 preprocessing.py sample_distorted_bounding_box area_range
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)  # TF's default, used by the official call
CROP_PADDING = 32  # official preprocess_for_eval: crop ratio size / (size + 32) ...
FULL_IMAGE_EVAL_SIZE = 320  # ... only when size < 320; larger sizes resize the whole image


def _resize(image, image_size):
    # Bilinear without antialiasing, as the official code (tf.image.resize defaults).
    resized = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return tf.clip_by_value(resized, 0.0, 255.0)


def _to_uint8(image_float):
    return tf.cast(tf.round(image_float), tf.uint8)


def _split_seed(seed, n):
    seed = random_seed() if seed is None else seed
    return tf.unstack(tf.random.split(seed, n))


def random_area_crop(image, seed, area_range=TRAIN_AREA_RANGE, aspect_ratio_range=ASPECT_RATIO_RANGE):
    """Crops a random box covering `area_range` of the image with a random aspect ratio (Inception crop)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.slice(image, begin, size)


def center_crop(image, image_size, crop_padding=CROP_PADDING):
    """Official V2 eval crop: a centred square of side size/(size+padding) * min(H, W)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    ratio = image_size / (image_size + crop_padding)
    crop = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    crop = tf.maximum(crop, 1)
    return tf.image.crop_to_bounding_box(image, (height - crop) // 2, (width - crop) // 2, crop, crop)


def preprocess_for_train(image, image_size, seed=None, *, randaugment: RandAugment | None = None,
                         area_range=TRAIN_AREA_RANGE, flip=True, crop=True):  # fmt: skip
    """Random-area crop, resize to the stage size, random horizontal flip, then RandAugment on uint8.

    `crop=False` skips the random crop (plain resize), e.g. for already-centred tiny images.
    """
    crop_seed, flip_seed, ra_seed = _split_seed(seed, 3)
    image.set_shape([None, None, 3])
    if crop:
        image = random_area_crop(image, crop_seed, area_range)
    image = _resize(image, image_size)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if randaugment is not None and not randaugment.is_identity:
        image = tf.cast(randaugment(_to_uint8(image), ra_seed), tf.float32)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def preprocess_for_eval(image, image_size, *, crop_padding=CROP_PADDING):
    """Official V2 eval: centre crop by size/(size+crop_padding) if size < 320, else the whole image; resize.

    `crop_padding=0` disables the crop (use it for tiny images such as digits, where a 32-pixel padding
    would cut away half of a 32 px image).
    """
    image.set_shape([None, None, 3])
    if crop_padding and image_size < FULL_IMAGE_EVAL_SIZE:
        image = center_crop(image, image_size, crop_padding)
    return tf.ensure_shape(_resize(image, image_size), [image_size, image_size, 3])


def decode_and_preprocess(image_bytes, image_size, crop_padding=None):
    """One encoded image file (scalar tf.string) -> float32 [S, S, 3] in [0, 255], as for evaluation.

    Used where raw files come in (the SavedModel bytes signature, tools/predict.py). Decoding: any
    format tf.io.decode_image reads, the first frame of a GIF, grayscale and RGBA made RGB. Then
    `preprocess_for_eval` (`crop_padding` None = the official 32).
    """
    crop_padding = CROP_PADDING if crop_padding is None else crop_padding
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    return preprocess_for_eval(image, image_size, crop_padding=crop_padding)


def preprocess_for_finetune(image, image_size, seed=None, *, training, randaugment: RandAugment | None = None,
                            flip=True, cutout_pad_fraction=0.25):  # fmt: skip
    """Official 'ft' preprocessing: plain resize; training adds flip, optional RandAugment, and Cutout.

    Cutout uses pad size = size/4 (a square of half the image side) filled with random values, as the
    official code (which fills with uniform noise in its normalised space, i.e. pixels in [127.5, 255];
    we use uniform noise over the full [0, 255] range).
    """
    image.set_shape([None, None, 3])
    image = _resize(image, image_size)
    if not training:
        return tf.ensure_shape(image, [image_size, image_size, 3])
    flip_seed, ra_seed, cut_seed, noise_seed = _split_seed(seed, 4)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if randaugment is not None and not randaugment.is_identity:
        image = tf.cast(randaugment(_to_uint8(image), ra_seed), tf.float32)
    if cutout_pad_fraction > 0:
        noise = tf.random.stateless_uniform(tf.shape(image), noise_seed, 0.0, 255.0)
        image = cutout(image, int(image_size * cutout_pad_fraction), cut_seed, noise)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def preprocess_image(image, image_size, seed=None, *, training, augment="randaug",
                     randaugment: RandAugment | None = None, area_range=TRAIN_AREA_RANGE, flip=True,
                     crop_padding=CROP_PADDING):  # fmt: skip
    """Dispatches on `augment`:

    * "randaug": train = random-area crop + resize + flip + RandAugment; eval = official centre crop rule.
    * "ft": official finetuning; train = resize + flip (+ RandAugment if given) + Cutout; eval = resize.
    * None (a recipe's "none"): no augmentation; train = resize (+ flip if `flip`); eval = resize.
    """
    augment = augment_argument(augment)
    if augment == "randaug":
        if training:
            return preprocess_for_train(
                image, image_size, seed, randaugment=randaugment, area_range=area_range, flip=flip
            )
        return preprocess_for_eval(image, image_size, crop_padding=crop_padding)
    if augment == "ft":
        return preprocess_for_finetune(
            image, image_size, seed, training=training, randaugment=randaugment, flip=flip
        )
    if training:
        return preprocess_for_train(image, image_size, seed, flip=flip, crop=False)
    return preprocess_for_eval(image, image_size, crop_padding=0)
