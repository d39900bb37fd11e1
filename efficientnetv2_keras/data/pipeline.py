"""`build_dataset`: the complete tf.data pipeline for one training stage or for evaluation.

Order (as the released code's google/automl `efficientnetv2/datasets.py`, with the record order of
`data/stream.py`): training records, pass after pass (each pass a seeded permutation of this worker's
shard, or a seeded file order + shuffle buffer for streaming sources) -> decode [or read the cache] ->
preprocess + RandAugment + label encoding (parallel, AUTOTUNE) -> batch (drop_remainder for training:
static batch shapes) -> mixup/CutMix per batch -> prefetch. Evaluation reads the split in its order.

The progressive-learning callback calls `build_dataset` once per stage with that stage's image size,
RandAugment magnitude and mixup/CutMix alphas. For the same other arguments the element structure is
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
`FitEpoch`) works.
"""

from __future__ import annotations

import os
import re

import keras
import tensorflow as tf

from efficientnetv2_keras.data.mixing import mix_batch
from efficientnetv2_keras.data.preprocessing import CROP_PADDING, TRAIN_AREA_RANGE, preprocess_image
from efficientnetv2_keras.data.randaugment import RANDAUGMENT_OPS, RandAugment, validate_magnitude
from efficientnetv2_keras.data.sources import Source, get_source
from efficientnetv2_keras.data.stream import start_reader, training_examples
from efficientnetv2_keras.limits import LABEL_FORMATS, MIN_PIPELINE_IMAGE_SIZE, MULTI_LABEL_FORMATS, augment_argument

AUTOTUNE = tf.data.AUTOTUNE
DATA_FORMATS = ("channels_last", "channels_first")
DEFAULT_SHUFFLE_BUFFER = 10_000  # records (encoded bytes / paths), not decoded images


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(name, value, low=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
        raise ValueError(f"{name} must be a number >= {low:g} (0 = off), got {value!r}.")
    return float(value)


def default_label_format(source: Source) -> str:
    """'multi_hot_normalized' for multi-label sources (official 21k softmax loss), else 'one_hot'."""
    return "multi_hot_normalized" if source.multi_label else "one_hot"


def _label_format(label_format, source, mixing):
    label_format = default_label_format(source) if label_format is None else label_format
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS} or None, got {label_format!r}.")
    if source.multi_label and label_format not in MULTI_LABEL_FORMATS:
        raise ValueError(
            f"{source.name} has multi-label examples; use label_format='multi_hot_normalized' (sums to 1, "
            "for softmax cross-entropy as the official 21k training) or 'multi_hot' (0/1, for sigmoid losses)."
        )
    if mixing and label_format == "sparse":
        raise ValueError(
            "Mixup/CutMix produce soft labels, which label_format='sparse' cannot hold; use 'one_hot' "
            "(or set mixup_alpha=cutmix_alpha=0)."
        )
    return label_format


def encode_label(label, label_format, num_classes):
    """Single-label int32 index or multi-hot 0/1 vector -> the requested format."""
    if label_format == "sparse":
        return tf.cast(label, tf.int32)
    if label.shape.rank == 0:
        return tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)
    label = tf.cast(label, tf.float32)
    if label_format == "multi_hot_normalized":  # paper 5.2, released ImageNet21kInput: softmax CE on normalised multi-hot
        label = label / tf.maximum(tf.reduce_sum(label), 1.0)
    return label


class CachedSource(Source):
    """A source whose splits are decoded once and cached, shared by every pipeline built from it.

    `build_dataset(..., cache=True)` caches inside one pipeline. Progressive learning builds one
    pipeline per stage, so each stage would decode the split again and keep its own decoded copy
    for the rest of the run. Build all stages from one `CachedSource` instead: they read the same
    decoded examples, and only the per-stage crop, resize and augmentation downstream differ.

        cached = CachedSource(source)  # or CachedSource(source, cache="/scratch/train_cache")
        dataset_fn = lambda stage: build_dataset(cached, "train", stage.image_size, 128, training=True,
                                                 randaug_magnitude=stage.randaug_magnitude)

    The first pass over a split decodes it and fills the cache; every later pass, epoch and stage
    reads the cache. In memory (`cache=True`) the cached examples keep the source's order and every
    training pass reads them in a permutation of its own (random access, `data/stream.py`); a file
    cache is filled in a shuffled file order and later passes go through the shuffle buffer. One cache
    per split and input pipeline (`input_context`), made on first use, for pipelines built eagerly
    (inside a `tf.function` each call makes its own). Memory: one decoded copy per cached split, alive
    while this object or a pipeline built from it is.

    Args:
      source: a `Source` or a name for `get_source`.
      cache: True (memory) or a file-name prefix (the split and shard are appended).
      data_dir: tensorflow-datasets data_dir when `source` is a tfds name.
    """

    records_decoded = True

    def __init__(self, source, cache=True, *, data_dir=None):
        source = get_source(source, data_dir=data_dir)
        if isinstance(source, CachedSource):
            raise ValueError("The source is a CachedSource already; wrap the underlying source once.")
        if cache is not True and not (isinstance(cache, (str, os.PathLike)) and os.fspath(cache)):
            raise ValueError(f"cache must be True (memory) or a file-name prefix, got {cache!r}.")
        self.source = source
        self.cache = cache
        self.name = source.name
        self.num_classes = source.num_classes
        self.multi_label = source.multi_label
        self.skip_decode_errors = source.skip_decode_errors  # fewer cached examples than records
        self._cached = {}

    @property
    def split_sizes(self):
        return self.source.split_sizes

    @property
    def splits(self):
        return self.source.splits

    def num_examples(self, split):
        return self.source.num_examples(split)

    def shard_size(self, split, input_context=None):
        return self.source.shard_size(split, input_context)

    def indexed_records(self, split, input_context=None):
        """The split cached in memory in the source's order, when its size in this shard is known."""
        count = self.shard_size(split, input_context)
        if self.cache is not True or count is None:
            return None
        return self.records(split, input_context=input_context), count

    def as_dataset(self, split, *, shuffle_files=False, input_context=None, seed=None):
        return self.records(split, shuffle_files=shuffle_files, input_context=input_context, seed=seed)

    def records(self, split, *, shuffle_files=False, input_context=None, seed=None):
        """Decoded (image, label) examples of `split`, cached: the same dataset for the same split and shard."""
        shard = (input_context.input_pipeline_id, input_context.num_input_pipelines) if input_context else (0, 1)
        key = (split, bool(shuffle_files), shard)
        if key in self._cached and tf.executing_eagerly():
            return self._cached[key]
        examples = self.source.as_dataset(split, shuffle_files=shuffle_files, input_context=input_context, seed=seed)
        if self.cache is True:
            examples = examples.cache()
        else:
            order = "shuffled" if shuffle_files else "ordered"
            name = re.sub(r"[^\w.+-]+", "_", str(split))
            examples = examples.cache(f"{os.fspath(self.cache)}-{name}-{order}-{shard[0]}of{shard[1]}")
        if tf.executing_eagerly():
            self._cached[key] = examples
        return examples


def _stage_seed(seed, image_size, pipeline_id, salt):
    """Different (but reproducible) random streams per stage, worker and purpose."""
    if seed is None:
        return None
    return (int(seed) * 1_000_003 + image_size * 7_919 + pipeline_id * 104_729 + salt) % (2**63 - 1)


def build_dataset(
    source,
    split,
    image_size,
    batch_size,
    *,
    training,
    randaug_magnitude=0.0,
    randaug_layers=2,
    randaug_ops=None,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    label_format=None,
    augment="randaug",
    crop_area_range=TRAIN_AREA_RANGE,
    flip=True,
    eval_crop_padding=CROP_PADDING,
    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    cache=False,
    input_context=None,
    seed=None,
    repeat=False,
    drop_remainder=None,
    deterministic=None,
    data_dir=None,
    data_format=None,
    epoch=None,
    position=None,
) -> tf.data.Dataset:
    """Builds the input pipeline of one stage: (float32 images [B, S, S, 3] in [0, 255], labels).

    Args:
      source: a `Source` or a name for `get_source` ("digits", "cifar10", "folder:/path", ...). When
        building once per stage, pass a Source: a name makes a new one each call (a folder is re-scanned);
        to decode and cache once for all stages, pass one `CachedSource` to every call.
      split: split name ("train", "test", "validation"/"val", tfds-style slices such as "train[:90%]").
      image_size: output side S in pixels (>= 8, `limits.MIN_PIPELINE_IMAGE_SIZE`).
      batch_size: global batch size; with `input_context` each worker batches
        `input_context.get_per_replica_batch_size(batch_size)`.
      training: True for the training pipeline (shuffle, augmentation, mixing, drop_remainder).
      randaug_magnitude: RandAugment magnitude on the official scale, in [0, 30] (paper: 5-25; 0 = off).
      randaug_layers: RandAugment ops per image (official 2).
      randaug_ops: names of the ops to draw from (default: all 16 of `RANDAUGMENT_OPS`). Narrow it for
        images where some ops destroy the label, e.g. no Invert/Solarize/Equalize for handwriting.
      mixup_alpha, cutmix_alpha: Beta(alpha, alpha) parameters; 0 = off; both > 0 = half the batch each.
      label_format: "sparse" (int32 [B]), "one_hot" (float32 [B, C]), "multi_hot_normalized" (float32,
        sums to 1) or "multi_hot" (0/1). None = one_hot, or multi_hot_normalized for multi-label sources.
        The default does not depend on the alphas, so all stages share one element structure.
      augment: "randaug" (random-area crop + flip + RandAugment; official centre-crop eval), "ft"
        (official finetuning: resize + flip + Cutout, + RandAugment if magnitude > 0; resize eval) or None
        (resize only, + flip when `flip`).
      crop_area_range: (min, max) fraction of the image kept by the random crop (official (0.05, 1.0);
        use e.g. (0.5, 1.0) for tiny images such as digits).
      flip: random horizontal flips in training (turn off for digits and text).
      eval_crop_padding: evaluation crops size/(size+padding) of the image when size < 320 (official 32);
        0 = resize the whole image.
      shuffle_buffer: records in the shuffle buffer of streaming sources (tensorflow-datasets, TFRecords, a
        file cache); in-memory sources, image folders and a memory `CachedSource` draw every pass as a full
        permutation instead. 0: no shuffling (in-memory sources read every pass in the split's order).
      cache: False, True (decoded images in memory) or a file-name prefix; caches before augmentation, for
        this pipeline alone (a `CachedSource` of its own: for pipelines that share a split pass one).
      input_context: `tf.distribute.InputContext` for per-worker sharding and batch size.
      seed: int for reproducible pipelines; None = random.
      repeat: repeat forever (then give `fit` a `steps_per_epoch`); default one finite pass, one epoch of
        a `fit` without `steps_per_epoch`. For `ProgressiveLearning` see the module docstring.
      drop_remainder: defaults to `training` (static batch shapes for training).
      deterministic: keep element order; default True for evaluation and for seeded pipelines, False for
        unseeded training (faster, as the official pipeline).
      data_dir: tensorflow-datasets data_dir when `source` is a tfds name.
      data_format: "channels_last" (images [B, S, S, 3]) or "channels_first" ([B, 3, S, S], for models
        built channels_first); None = `keras.config.image_data_format()`. Only the final batches are
        transposed: augmentation and mixing always work on [B, S, S, 3].
      epoch: training only: the pass to read (with `repeat`, the passes from it on), an int, a scalar
        integer tf.Variable or a zero-argument function, read when an iterator starts; None = every
        iteration of the dataset object reads the next pass (with `repeat`, a stream of its own), from
        the first one in a new process.
      position: training with `repeat=True` only: the examples of the endless stream already read (its
        pass is position // examples per pass; the examples before it in that pass are skipped, not
        decoded); same kinds as `epoch`. For epochs of a fixed number of steps after a restart.
    """
    if not _is_int(image_size) or image_size < MIN_PIPELINE_IMAGE_SIZE:
        raise ValueError(f"image_size must be an int >= {MIN_PIPELINE_IMAGE_SIZE} (pixels per side), got {image_size!r}.")
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not isinstance(training, bool):
        raise ValueError(f"training must be True or False, got {training!r}.")
    augment = augment_argument(augment)
    randaug_magnitude = validate_magnitude(randaug_magnitude)
    if not _is_int(randaug_layers) or randaug_layers < 0:
        raise ValueError(f"randaug_layers must be an int >= 0 (official 2), got {randaug_layers!r}.")
    mixup_alpha = _check_number("mixup_alpha", mixup_alpha)
    cutmix_alpha = _check_number("cutmix_alpha", cutmix_alpha)
    low, high = crop_area_range
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_area_range must satisfy 0 < min <= max <= 1, got {crop_area_range!r}.")
    if not _is_int(shuffle_buffer) or shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be an int >= 0, got {shuffle_buffer!r}.")
    if seed is not None and not _is_int(seed):
        raise ValueError(f"seed must be an int or None, got {seed!r}.")
    eval_crop_padding = _check_number("eval_crop_padding", eval_crop_padding)
    data_format = keras.config.image_data_format() if data_format is None else data_format
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be 'channels_last', 'channels_first' or None, got {data_format!r}.")

    _check_stream_start(training, repeat, epoch, position)

    source = get_source(source, data_dir=data_dir)
    if cache:
        if source.records_decoded:
            raise ValueError(
                "The source is a CachedSource, which decodes and caches once for every pipeline; pass "
                "cache=False (caching again would keep a second copy)."
            )
        # This pipeline's own decoded copy (pipelines that share a split share one CachedSource).
        source = CachedSource(source, cache=True if cache is True else os.fspath(cache))
    mixing = training and (mixup_alpha > 0 or cutmix_alpha > 0)
    label_format = _label_format(label_format, source, mixing)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    deterministic = (seed is not None or not training) if deterministic is None else bool(deterministic)
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0
    per_worker_batch = batch_size
    if input_context is not None:
        per_worker_batch = input_context.get_per_replica_batch_size(batch_size)

    randaugment = None
    if training and augment in ("randaug", "ft") and randaug_magnitude > 0:
        randaugment = RandAugment(randaug_magnitude, randaug_layers, ops=tuple(randaug_ops or RANDAUGMENT_OPS))

    pass_examples = None
    if training:
        examples, fetch, pass_examples = training_examples(
            source, split, input_context=input_context, base_key=_stage_seed(seed, image_size, pipeline_id, 0),
            shuffle_buffer=shuffle_buffer, endless=repeat, epoch=epoch, position=position,
        )
    else:  # the split in its order; evaluation draws nothing at random
        examples = source.as_dataset(split, input_context=input_context).map(
            lambda *example: (example, tf.zeros([2], tf.int64)))
        fetch = lambda example: example  # noqa: E731  (decoded already)
    num_classes = source.num_classes

    def prepare(item, element_seed):
        image, label = fetch(item)
        image = preprocess_image(
            image,
            image_size,
            element_seed,
            training=training,
            augment=augment,
            randaugment=randaugment,
            area_range=(low, high),
            flip=flip,
            crop_padding=eval_crop_padding,
        )
        label = encode_label(label, label_format, num_classes)
        return (image, label, element_seed) if mixing else (image, label)

    dataset = examples.map(prepare, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(per_worker_batch, drop_remainder=drop_remainder)

    if mixing:

        def mix(images, labels, element_seeds):
            # Keyed by the batch's first example: the same batch mixes the same way after a restart.
            seed = tf.random.experimental.stateless_fold_in(element_seeds[0], 1)
            return mix_batch(images, labels, mixup_alpha, cutmix_alpha, seed)

        dataset = dataset.map(mix, num_parallel_calls=AUTOTUNE)

    if data_format == "channels_first":
        dataset = dataset.map(lambda images, labels: (tf.transpose(images, (0, 3, 1, 2)), labels),
                              num_parallel_calls=AUTOTUNE)
    if training and (repeat or pass_examples is not None):
        # Known lengths for Keras (progress bar, one-pass epochs): endless, or the batches of one pass.
        batches = tf.data.INFINITE_CARDINALITY if repeat else pass_examples // per_worker_batch
        if not repeat and not drop_remainder:
            batches = -(-pass_examples // per_worker_batch)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))

    dataset = dataset.prefetch(AUTOTUNE)
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
