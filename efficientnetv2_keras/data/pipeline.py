"""`build_dataset`: the complete tf.data pipeline for one training stage or for evaluation.

Order (as the released code's google/automl `efficientnetv2/datasets.py`, with the record order of
`data/stream.py`): training records, pass after pass (each pass a seeded permutation of this worker's
shard, or a seeded file order + shuffle buffer for streaming sources) -> decode [or read the cache] ->
preprocess + RandAugment + label encoding (parallel, AUTOTUNE) -> batch (drop_remainder for training:
static batch shapes) -> mixup/CutMix per batch -> prefetch. Evaluation reads the split in its order.

The progressive-learning callback calls `build_dataset` once per stage with that stage's image size,
RandAugment magnitude and mixup/CutMix alphas. Pass every stage the same `Source` object (a name makes a
new one per call: a folder is re-scanned). For the same other arguments the element structure is
identical across stages; only the image size in the shapes changes. To decode and cache a split once
for all stages, build every stage from one `CachedSource` (`cache=True` caches inside one pipeline, so
each stage would hold its own decoded copy). The dataset is finite by default: one pass per iterator,
which is one epoch for `fit` without `steps_per_epoch` (and for `ProgressiveLearning` without it).
`repeat=True` makes it endless, for `fit(steps_per_epoch=N)`; `ProgressiveLearning(steps_per_epoch=N)`
repeats each stage's pipeline itself, so either works there.

Randomness is stateless: pass p's order and the crop, flip and RandAugment of its k-th example come from
(seed, pass, k), a batch's mixup/CutMix from its first example, so a pipeline is reproducible for a
seed and `deterministic` defaults to True; unseeded training pipelines may reorder elements for speed
(as the official code). Iterating a pipeline again reads the next pass; `epoch=` (the pass to read) or
`position=` (the examples of the endless stream already read) start it where a resumed run continues,
read when an iterator starts, so a `tf.Variable` set by a callback (`ProgressiveLearning.epoch`,
`FitEpoch`) works. `data/stream.py` says what a pass is for each kind of source and what
`shuffle_buffer` does there (in-memory sources draw every pass as a full permutation instead).

Labels: `labels.py`; the decoded-once cache shared by stages: `sources.CachedSource`.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

from efficientnetv2_keras.data.labels import check_label_format, encode_label
from efficientnetv2_keras.data.mixing import mix_batch
from efficientnetv2_keras.data.preprocessing import CROP_PADDING, TRAIN_AREA_RANGE, preprocess_image
from efficientnetv2_keras.data.randaugment import RANDAUGMENT_OPS, RandAugment, validate_magnitude
from efficientnetv2_keras.data.sources import get_source
from efficientnetv2_keras.data.sources.cached import CachedSource
from efficientnetv2_keras.data.stream import start_reader, training_examples
from efficientnetv2_keras.limits import MIN_PIPELINE_IMAGE_SIZE, augment_argument

AUTOTUNE = tf.data.AUTOTUNE
DATA_FORMATS = ("channels_last", "channels_first")
DEFAULT_SHUFFLE_BUFFER = 10_000  # records (encoded bytes / paths), not decoded images


def build_dataset(source, split, image_size, batch_size, *, training, randaug_magnitude=0.0, randaug_layers=2,
                  randaug_ops=None, mixup_alpha=0.0, cutmix_alpha=0.0, label_format=None, augment="randaug",
                  crop_area_range=TRAIN_AREA_RANGE, flip=True, eval_crop_padding=CROP_PADDING,
                  shuffle_buffer=DEFAULT_SHUFFLE_BUFFER, cache=False, input_context=None, seed=None, repeat=False,
                  drop_remainder=None, deterministic=None, data_dir=None, data_format=None, epoch=None,
                  position=None) -> tf.data.Dataset:
    """The input pipeline of one stage: batches of (float32 images [B, S, S, 3] in [0, 255], labels).

    Args:
      source: a `Source` or a `get_source` name ("digits", "cifar10", "folder:/path", ...).
      split: "train", "test", "validation"/"val", or a tfds-style slice such as "train[:90%]".
      image_size: the output side S in pixels (>= 8). batch_size: the global batch.
      training: shuffle, augment, mix and drop the remainder; False reads the split in its order.
      randaug_magnitude, randaug_layers, randaug_ops: RandAugment on the released scale, in [0, 30]
        (paper 5-25; 0 = off); ops per image (2); the ops to draw from (None: all 16 of RANDAUGMENT_OPS;
        narrow it where ops destroy the label, e.g. no Invert/Solarize/Equalize for handwriting).
      mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters; 0 = off; both > 0 = half the batch each.
      label_format: "sparse" (int32 [B]), "one_hot" (float32 [B, C]), "multi_hot_normalized" (sums to 1)
        or "multi_hot" (0/1); None = one_hot, or multi_hot_normalized for multi-label sources, whatever
        the alphas (so every stage has one element structure).
      augment: "randaug" (random-area crop, flip, RandAugment; the released centre-crop eval), "ft" (the
        released finetuning: resize, flip, Cutout, RandAugment if magnitude > 0; resize eval), or None
        (a recipe's "none": resize, flip when `flip`).
      crop_area_range: (min, max) area kept by the random crop (released (0.05, 1.0); (0.5, 1.0) for digits).
      flip: random horizontal flips in training (off for digits and text).
      eval_crop_padding: evaluation crops size/(size+padding) of images below 320 px (released 32); 0 = none.
      shuffle_buffer: records in the shuffle buffer of streaming sources (data/stream.py); 0 = no shuffling.
      cache: False, True (decoded images in memory) or a file-name prefix: for this pipeline alone (pipelines
        that share a split share one `CachedSource` instead).
      input_context: `tf.distribute.InputContext`: each worker reads its shard and batches
        `input_context.get_per_replica_batch_size(batch_size)`.
      seed: an int for a reproducible pipeline; None = random.
      repeat: endless (give `fit` a `steps_per_epoch`); default one pass, an epoch of `fit`.
      drop_remainder: default `training`. deterministic: default True, False for unseeded training (faster).
      data_dir: tensorflow-datasets data_dir for a tfds name.
      data_format: "channels_last", "channels_first" ([B, 3, S, S]) or None (keras.config.image_data_format());
        only the final batches are transposed.
      epoch, position: training only: the pass to read, or (with `repeat`) the examples of the endless
        stream already read; an int, a scalar integer tf.Variable or a zero-argument function, read when an
        iterator starts. None: every iteration of the dataset object reads the next pass.
    """
    _check_sizes(image_size, batch_size, training)
    augmentation = _augmentation(training, augment, randaug_magnitude, randaug_layers, randaug_ops, mixup_alpha,
                                 cutmix_alpha, crop_area_range, flip, eval_crop_padding)
    data_format = _check_reading(shuffle_buffer, seed, data_format)
    _check_stream_start(training, repeat, epoch, position)
    source = _source(source, data_dir, cache)
    label_format = check_label_format(label_format, source, augmentation.mixing)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    deterministic = (seed is not None or not training) if deterministic is None else bool(deterministic)
    per_worker = batch_size if input_context is None else input_context.get_per_replica_batch_size(batch_size)
    examples, fetch, pass_examples = _examples(source, split, training, input_context, seed, image_size,
                                               shuffle_buffer, repeat, epoch, position)
    dataset = examples.map(_preparer(fetch, image_size, augmentation, label_format, source.num_classes),
                           num_parallel_calls=AUTOTUNE)
    dataset = _batches(dataset, per_worker, drop_remainder, augmentation, data_format)
    if training and (repeat or pass_examples is not None):
        dataset = _known_length(dataset, repeat, pass_examples, per_worker, drop_remainder)
    return _with_options(dataset.prefetch(AUTOTUNE), deterministic)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(name, value, low=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ValueError(f"{name} must be a number >= {low:g} (0 = off), got {value!r}.")
    return float(value)


def _check_sizes(image_size, batch_size, training):
    if not _is_int(image_size) or image_size < MIN_PIPELINE_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an int >= {MIN_PIPELINE_IMAGE_SIZE} (pixels per side), got {image_size!r}.")
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not isinstance(training, bool):
        raise ValueError(f"training must be True or False, got {training!r}.")


@dataclasses.dataclass(frozen=True)
class _Augmentation:
    """What a pipeline does to each example (preprocessing, RandAugment) and to each batch (mixing)."""

    training: bool
    augment: object  # "randaug", "ft" or None
    randaug_magnitude: float
    randaug_layers: int
    randaug_ops: object
    mixup_alpha: float
    cutmix_alpha: float
    area_range: tuple
    flip: bool
    crop_padding: float  # of the evaluation centre crop

    @property
    def mixing(self):
        return self.training and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def randaugment(self):
        """The RandAugment layer of training with "randaug" or "ft" at a magnitude > 0, else None."""
        if self.training and self.augment in ("randaug", "ft") and self.randaug_magnitude > 0:
            return RandAugment(self.randaug_magnitude, self.randaug_layers,
                               ops=tuple(self.randaug_ops or RANDAUGMENT_OPS))
        return None


def _augmentation(training, augment, randaug_magnitude, randaug_layers, randaug_ops, mixup_alpha, cutmix_alpha,
                  crop_area_range, flip, eval_crop_padding):
    augment = augment_argument(augment)
    randaug_magnitude = validate_magnitude(randaug_magnitude)
    if not _is_int(randaug_layers) or randaug_layers < 0:
        raise ValueError(f"randaug_layers must be an int >= 0 (official 2), got {randaug_layers!r}.")
    mixup_alpha = _check_number("mixup_alpha", mixup_alpha)
    cutmix_alpha = _check_number("cutmix_alpha", cutmix_alpha)
    low, high = crop_area_range
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_area_range must satisfy 0 < min <= max <= 1, got {crop_area_range!r}.")
    return _Augmentation(training, augment, randaug_magnitude, randaug_layers, randaug_ops, mixup_alpha,
                         cutmix_alpha, (low, high), flip, _check_number("eval_crop_padding", eval_crop_padding))


def _check_reading(shuffle_buffer, seed, data_format):
    """Checks the shuffle buffer and seed; returns the data format (None: Keras' image data format)."""
    if not _is_int(shuffle_buffer) or shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be an int >= 0, got {shuffle_buffer!r}.")
    if seed is not None and not _is_int(seed):
        raise ValueError(f"seed must be an int or None, got {seed!r}.")
    data_format = keras.config.image_data_format() if data_format is None else data_format
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be 'channels_last', 'channels_first' or None, got {data_format!r}.")
    return data_format


def _source(source, data_dir, cache):
    """The `Source` to read: `get_source`'s, wrapped in a `CachedSource` of its own when `cache`."""
    source = get_source(source, data_dir=data_dir)
    if not cache:
        return source
    if source.records_decoded:
        raise ValueError(
            "The source is a CachedSource, which decodes and caches once for every pipeline; pass "
            "cache=False (caching again would keep a second copy)."
        )
    # This pipeline's own decoded copy (pipelines that share a split share one CachedSource).
    return CachedSource(source, cache=True if cache is True else os.fspath(cache))


def _stage_seed(seed, image_size, pipeline_id, salt):
    """Different (but reproducible) random streams per stage, worker and purpose."""
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + image_size * 7_919 + pipeline_id * 104_729 + salt) % (2**63 - 1)


def _examples(source, split, training, input_context, seed, image_size, shuffle_buffer, repeat, epoch, position):
    """(records with an element seed each, record -> decoded example, examples per pass or None): training
    reads the stream of seeded passes (data/stream.py); evaluation the split in its order, drawing nothing."""
    if training:
        pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
        return training_examples(
            source, split, input_context=input_context, base_key=_stage_seed(seed, image_size, pipeline_id, 0),
            shuffle_buffer=shuffle_buffer, endless=repeat, epoch=epoch, position=position,
        )
    examples = source.as_dataset(split, input_context=input_context).map(
        lambda *example: (example, tf.zeros([2], tf.int64)))
    return examples, lambda example: example, None  # decoded already


def _preparer(fetch, image_size, augmentation, label_format, num_classes):
    """(record, element seed) -> (image, label[, element seed]): decode, preprocess and augment, encode."""
    randaugment = augmentation.randaugment()

    def prepare(item, element_seed):
        image, label = fetch(item)
        image = preprocess_image(
            image,
            image_size,
            element_seed,
            training=augmentation.training,
            augment=augmentation.augment,
            randaugment=randaugment,
            area_range=augmentation.area_range,
            flip=augmentation.flip,
            crop_padding=augmentation.crop_padding,
        )
        label = encode_label(label, label_format, num_classes)
        return (image, label, element_seed) if augmentation.mixing else (image, label)

    return prepare


def _batches(dataset, batch_size, drop_remainder, augmentation, data_format):
    """Batched examples, mixed per batch (mixup/CutMix), transposed last for channels_first models."""
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augmentation.mixing:

        def mix(images, labels, element_seeds):
            # Keyed by the batch's first example: the same batch mixes the same way after a restart.
            seed = tf.random.experimental.stateless_fold_in(element_seeds[0], 1)
            return mix_batch(images, labels, augmentation.mixup_alpha, augmentation.cutmix_alpha, seed)

        dataset = dataset.map(mix, num_parallel_calls=AUTOTUNE)
    if data_format == "channels_first":
        dataset = dataset.map(lambda images, labels: (tf.transpose(images, (0, 3, 1, 2)), labels),
                              num_parallel_calls=AUTOTUNE)
    return dataset


def _known_length(dataset, repeat, pass_examples, batch_size, drop_remainder):
    """Known lengths for Keras (progress bar, one-pass epochs): endless, or the batches of one pass."""
    batches = tf.data.INFINITE_CARDINALITY if repeat else pass_examples // batch_size
    if not repeat and not drop_remainder:
        batches = -(-pass_examples // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def _with_options(dataset, deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    # Per-image maps are many small ops: splitting each across threads costs more than it gains
    # (official datasets.py sets the same). Measured: RandAugment 293 -> 550 img/s at 300 px, 2 cores.
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def _check_stream_start(training, repeat, epoch, position):
    """`epoch` / `position` (data/stream.py): where a training pipeline starts in its stream."""
    if (epoch is not None or position is not None) and not training:
        raise ValueError("epoch and position place a training pipeline in its stream; evaluation "
                         "(training=False) reads the split in order: leave them out.")
    if epoch is not None and position is not None:
        raise ValueError("Give either epoch (the pass to read) or position (the examples of the stream already "
                         "read), not both.")
    if position is not None and not repeat:
        raise ValueError("position is a place in the endless training stream: pass repeat=True (and give fit a "
                         "steps_per_epoch).")
    start_reader(epoch, "epoch")  # a clear error now for a value that cannot be read
    start_reader(position, "position")
