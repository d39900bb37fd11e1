"""Example sources: datasets of (uint8 image [H, W, 3], label) with a known class count and split sizes.

A source produces *records* (cheap to shuffle: encoded bytes, file paths, tiny arrays) and a `decode`
that turns one record into (image, label). The pipeline orders records and decodes afterwards, as the
official pipeline shuffles serialized examples: a shuffle buffer of decoded ImageNet images would need
gigabytes. In-memory sources (digits, arrays, image folders) give random access to their records
(`indexed_records`), so every training pass is a fresh permutation of them; the others stream through
a seeded file order and shuffle buffer (`data/stream.py`).

Labels: single-label sources give an int32 class index (0-based); multi-label sources (ImageNet-21k)
give a multi-hot float32 vector of 0/1 over all classes. `build_dataset(label_format=...)` re-encodes.

Sources: `DigitsSource` (bundled, offline), `TFDSSource` (tensorflow-datasets, never downloads),
`TFRecordSource` (ImageNet-style and ImageNet-21k TFRecords), `ImageFolderSource` (one sub-folder per
class; unreadable files are skipped and counted), `ArraySource` (numpy arrays in memory).
`get_source(name_or_path)` picks one from a string.

`source.hold_out(split, size)` carves a held-out part (the minival used for model selection) from a
training split, deterministically: stratified by label for in-memory sources, a tail slice of each
part for tensorflow-datasets, whole files for TFRecords (the released code's ImageNet minival is the
first 20 training shards, 25,021 images).
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

AUTOTUNE = tf.data.AUTOTUNE

# The transfer datasets of the paper (section 5.3) and ImageNet, via tensorflow-datasets.
# name -> (classes, split sizes) as tensorflow-datasets prepares them (oxford_flowers102's train split is
# 1,020 images; the released FlowersFt config trains on train+validation).
PAPER_TFDS_DATASETS = {
    "imagenet2012": (1000, {"train": 1_281_167, "validation": 50_000}),
    "cifar10": (10, {"train": 50_000, "test": 10_000}),
    "cifar100": (100, {"train": 50_000, "test": 10_000}),
    "oxford_flowers102": (102, {"train": 1_020, "validation": 1_020, "test": 6_149}),
    "cars196": (196, {"train": 8_144, "test": 8_041}),
}
IMAGENET21K_CLASSES = 21_843  # the released code's ImageNet21kInput
# The image formats TensorFlow's decoder reads (tf.io.decode_image): accepted everywhere (image folders,
# tools/predict.py); anything else (.webp, .tiff, .heic) is refused with this list.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

# A requested split name that does not exist is looked up under these names, in order.
_SPLIT_ALIASES = {
    "val": ("validation", "test"),
    "validation": ("val", "test"),
    "eval": ("validation", "val", "test"),
    "test": ("validation", "val"),
}
_SLICE = re.compile(r"^(?P<base>[^\[\]]+)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


# The names `hold_out` gives to the carved splits (in-memory and TFRecord sources).
MINIVAL = "minival"
TRAIN_REST = "train-minival"


def held_out_count(split, total, size):
    """Examples to hold out of `total`: `size` as a count (int) or a fraction (float in (0, 1))."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise TypeError(f"The held-out size must be a count or a fraction, got {size!r}.")
    count = int(round(total * size)) if isinstance(size, float) else int(size)
    if not 1 <= count < total:
        raise ValueError(
            f"A minival of {size!r} from split {split!r} ({total} examples) is {count} examples: it must keep "
            "at least one example on each side. Choose a smaller count or fraction (data.minival)."
        )
    return count


def _proportional(count, sizes):
    """`count` divided over parts of the given sizes (largest remainder), each share <= its part."""
    total = sum(sizes)
    exact = [count * size / total for size in sizes]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: -(exact[i] - shares[i]))[: count - sum(shares)]:
        shares[i] += 1
    return shares


def _decode_image(image_bytes):
    """JPEG/PNG/BMP/GIF (first frame) -> uint8 RGB; grayscale is replicated, alpha is dropped."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _shard(dataset, input_context):
    if _pipelines(input_context) > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return dataset


def _pipelines(input_context):
    return input_context.num_input_pipelines if input_context is not None else 1


def _shard_count(total, input_context):
    """Examples of `total` in this input pipeline's shard (`Dataset.shard`: every n-th from its id)."""
    if _pipelines(input_context) == 1:
        return total
    return len(range(input_context.input_pipeline_id, total, input_context.num_input_pipelines))


def stratified_split(labels, test_size, seed=0):
    """Deterministic stratified split -> (sorted train indices, sorted test indices).

    Uses numpy's legacy RandomState, whose stream is frozen across numpy versions, so the split is the
    same on every run and every machine (unlike helpers whose algorithm may change between releases).
    Each class gets round-down of its share of `test_size`; the remainder goes to the classes with the
    largest fractional shares (ties: lower class first).
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * test_size / len(labels)
    per_class = np.floor(exact).astype(int)
    leftover = test_size - per_class.sum()
    per_class[np.argsort(-(exact - per_class), kind="stable")[:leftover]] += 1
    rng = np.random.RandomState(seed)
    train, test = [], []
    for cls, n_test in zip(classes, per_class):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train, np.int64)), np.sort(np.array(test, np.int64))


class UnknownSplitError(ValueError):
    """A split name the source does not have: `split` (as asked for), `available` (the source's splits)."""

    def __init__(self, message, split, available):
        super().__init__(message)
        self.split = split
        self.available = list(available)


class Source:
    """Common interface; see the module docstring.

    Attributes:
      name: short name used in messages.
      num_classes: label classes.
      multi_label: True when labels are multi-hot vectors (ImageNet-21k).
      skip_decode_errors: True when the pipeline should drop (and log) records that fail to decode.
    """

    name: str = "source"
    num_classes: int = 0
    multi_label: bool = False
    skip_decode_errors: bool = False
    records_decoded: bool = False  # records are decoded examples already (a CachedSource)

    @property
    def split_sizes(self) -> dict:
        """Split name -> number of examples."""
        raise NotImplementedError

    @property
    def splits(self) -> tuple:
        return tuple(self.split_sizes)

    def num_examples(self, split) -> int:
        """Examples in `split` (slices like 'train[:10%]' included)."""
        base, bounds = self._parse_split(split)
        return len(range(self.split_sizes[base])[slice(*self._slice_bounds(bounds, self.split_sizes[base]))])

    def records(self, split, *, shuffle_files=False, input_context=None, seed=None) -> tf.data.Dataset:
        """Records of `split` for this input pipeline (sharded per `input_context`), before decoding."""
        raise NotImplementedError

    def decode(self, record):
        """One record -> (uint8 image [H, W, 3], label)."""
        return record

    def indexed_records(self, split, input_context=None):
        """(records, count) when this shard's records allow random access (`tf.data.experimental.at`),
        else None. Training pipelines draw each pass of a random-access source as a permutation of
        indices (data/stream.py); other sources stream through a shuffle buffer."""
        return None

    def shard_size(self, split, input_context=None):
        """The exact number of records of `split` this input pipeline reads, or None when unknown (files
        spread over several workers)."""
        return self.num_examples(split) if _pipelines(input_context) == 1 else None

    def hold_out(self, split, size, *, seed=0):
        """Carves `size` examples (a count, or a fraction in (0, 1)) out of `split`, deterministically.

        Returns (the rest of `split`, the held-out part) as split names this source reads; the two are
        disjoint and together are `split`.
        """
        raise NotImplementedError(
            f"{self.name} cannot carve a minival out of {split!r}: set data.minival to the name of a "
            "held-out split of this source, or null."
        )

    def _check_carve_name(self, carved):
        if MINIVAL in self.splits and MINIVAL not in carved:
            raise ValueError(
                f"{self.name} already has a split named {MINIVAL!r}: set data.minival={MINIVAL} to validate on "
                "it instead of carving one from the training split."
            )

    def as_dataset(self, split, *, shuffle_files=False, input_context=None, seed=None) -> tf.data.Dataset:
        """Decoded (image, label) examples of `split`."""
        return self.decode_records(
            self.records(split, shuffle_files=shuffle_files, input_context=input_context, seed=seed)
        )

    def decode_records(self, records) -> tf.data.Dataset:
        """`decode` mapped over a dataset of records; failing records dropped (and logged) when `skip_decode_errors`."""
        dataset = records.map(lambda *record: self.decode(record), num_parallel_calls=AUTOTUNE)
        return dataset.ignore_errors(log_warning=True) if self.skip_decode_errors else dataset

    # -- split names ------------------------------------------------------------------------------
    def _parse_split(self, split):
        """'train[10%:]' -> ('train', ('10%', None)); resolves aliases such as 'val' -> 'validation'."""
        match = _SLICE.match(str(split).strip()) if isinstance(split, str) else None
        if match is None:
            raise ValueError(
                f"Split {split!r} of {self.name} is not a split name or a slice like 'train[:90%]'."
            )
        base = match["base"]
        available = self.splits
        if base not in available:
            alias = next((a for a in _SPLIT_ALIASES.get(base, ()) if a in available), None)
            if alias is None:
                raise UnknownSplitError(
                    f"Unknown split {split!r} for {self.name}; available splits: {list(available)}.", split, available
                )
            logging.info("%s has no split %r; using %r.", self.name, base, alias)
            base = alias
        return base, (match["start"], match["stop"])

    @staticmethod
    def _slice_bounds(bounds, size):
        def to_index(value):
            if value is None:
                return None
            if value.endswith("%"):
                return int(round(size * int(value[:-1]) / 100))
            return int(value)

        return to_index(bounds[0]), to_index(bounds[1])


class _InMemoryIndexSource(Source):
    """Sources whose records are numpy arrays held in memory (digits, file lists).

    By default the records are `self._records` (images, file paths) and `self._labels`, and a split is
    a set of row indices: `self.split_indices[split]`.
    """

    def _stored_split_sizes(self):
        return {name: len(idx) for name, idx in self.split_indices.items()}

    @property
    def split_sizes(self):
        carved = {name: len(arrays[1]) for name, arrays in self._carved().items()}
        return {**self._stored_split_sizes(), **carved}

    def _carved(self):
        return self.__dict__.setdefault("_carved_arrays", {})

    def _split_arrays(self, split) -> tuple:
        idx = self.split_indices[split]
        return self._records[idx], self._labels[idx]

    def _arrays(self, split):
        """(records, labels) of a split name or slice, carved splits included."""
        base, bounds = self._parse_split(split)
        arrays = self._carved()[base] if base in self._carved() else self._split_arrays(base)
        selected = slice(*self._slice_bounds(bounds, len(arrays[0])))
        return tuple(a[selected] for a in arrays)

    def records(self, split, *, shuffle_files=False, input_context=None, seed=None):
        """The split's rows (sharded per `input_context`); `shuffle_files`: in an order permuted with `seed`."""
        arrays = self._arrays(split)
        if shuffle_files:  # e.g. the order a CachedSource with a file cache is filled in
            order = np.random.default_rng(seed).permutation(len(arrays[0]))
            arrays = tuple(array[order] for array in arrays)
        return _shard(tf.data.Dataset.from_tensor_slices(arrays), input_context)

    def indexed_records(self, split, input_context=None):
        return self.records(split, input_context=input_context), self.shard_size(split, input_context)

    def shard_size(self, split, input_context=None):
        return _shard_count(len(self._arrays(split)[1]), input_context)

    def hold_out(self, split, size, *, seed=0):
        """Stratified by label (`stratified_split` with `seed`): splits "train-minival" and "minival"."""
        self._check_carve_name(self._carved())
        records, labels = self._arrays(split)
        rest, held = stratified_split(labels, held_out_count(split, len(labels), size), seed)
        self._carved()[TRAIN_REST] = (records[rest], labels[rest])
        self._carved()[MINIVAL] = (records[held], labels[held])
        return TRAIN_REST, MINIVAL


class ArraySource(_InMemoryIndexSource):
    """Images already in memory: `splits={"train": (images, labels), "test": ...}`.

    images: uint8 [N, H, W, 3] (or [N, H, W] / [N, H, W, 1] grayscale, replicated to RGB); labels: ints
    [N] in [0, num_classes). E.g. the arrays of `keras.datasets.cifar10.load_data()`.
    """

    def __init__(self, splits, num_classes, *, name="arrays"):
        self.name = name
        self.num_classes = int(num_classes)
        self._split_data = {}
        for split, (images, labels) in splits.items():
            images = np.asarray(images)
            labels = np.asarray(labels).reshape(-1).astype(np.int32)
            if images.ndim == 3:
                images = images[..., None]
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
                raise ValueError(
                    f"ArraySource split {split!r}: images must be uint8 [N, H, W, 3] (or grayscale), got "
                    f"{images.dtype} {images.shape}."
                )
            if len(images) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < num_classes):
                raise ValueError(
                    f"ArraySource split {split!r}: need one label in [0, {num_classes}) per image, got "
                    f"{len(labels)} labels for {len(images)} images."
                )
            self._split_data[split] = (np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images, labels)

    def _stored_split_sizes(self):
        return {split: len(labels) for split, (_, labels) in self._split_data.items()}

    def _split_arrays(self, split):
        return self._split_data[split]


# ------------------------------------------------------------------------------------------------
# Digits (bundled with scikit-learn: real data, no network).
# ------------------------------------------------------------------------------------------------


class DigitsSource(_InMemoryIndexSource):
    """scikit-learn's handwritten digits: 1,797 8x8 images, 10 classes, bundled (offline).

    Pixels 0..16 become uint8 0..255 (x * 255 / 16, rounded), gray is replicated to RGB, and each image
    is resized (bicubic) to `image_size` when decoded. The split is a fixed stratified one with
    `stratified_split(seed=0)`: 1,437 train / 360 test, identical on every run. "validation" and "val"
    are aliases of "test".
    """

    name = "digits"
    num_classes = 10
    TEST_SIZE = 360

    def __init__(self, image_size=32, *, seed=0):
        from sklearn.datasets import load_digits  # bundled data file, no download

        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(
                f"DigitsSource image_size must be an int >= 8 (the originals are 8x8), got {image_size!r}."
            )
        digits = load_digits()
        pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
        self.image_size = image_size
        self._records = np.repeat(pixels[..., None], 3, axis=-1)  # images [1797, 8, 8, 3]
        self._labels = digits.target.astype(np.int32)
        train, test = stratified_split(self._labels, self.TEST_SIZE, seed)
        self.split_indices = {"train": train, "test": test}

    def decode(self, record):
        image, label = record
        if self.image_size != 8:
            image = tf.image.resize(image, [self.image_size, self.image_size], method="bicubic")
            image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
        return image, label


# ------------------------------------------------------------------------------------------------
# tensorflow-datasets.
# ------------------------------------------------------------------------------------------------


class TFDSSource(Source):
    """A prepared tensorflow-datasets dataset with an image and a class-label feature.

    Never downloads: the constructor fails fast with a FileNotFoundError naming the dataset and
    `data_dir` when the data is not prepared (`tfds.load(download=True)` retries for minutes without
    internet). The check asks the builder for a dataset (`builder.as_dataset`), which an unprepared
    builder refuses at once and `tfds.testing.mock_data` replaces, so tests can mock the data.
    """

    def __init__(self, name, *, data_dir=None, image_key="image", label_key="label"):
        import tensorflow_datasets as tfds

        self._tfds = tfds
        try:
            self._builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            raise ValueError(
                f"tensorflow-datasets has no dataset {name!r}. The paper's datasets are "
                f"{sorted(PAPER_TFDS_DATASETS)}."
            ) from error
        self.name = name
        self.data_dir = data_dir
        features = self._builder.info.features
        for key in (image_key, label_key):
            if key not in features:
                raise ValueError(
                    f"tfds dataset {name!r} has no feature {key!r}; its features: {list(features)}."
                )
        self.image_key, self.label_key = image_key, label_key
        self.num_classes = int(features[label_key].num_classes)
        self._check_prepared()

    def _check_prepared(self):
        if self._builder.is_prepared():
            return
        try:  # unprepared: raises at once (no download); under tfds.testing.mock_data: mocked data
            self._builder.as_dataset(split=next(iter(self._known_sizes()), "train"))
        except Exception as error:  # noqa: BLE001 - any failure here means "not prepared"
            root = str(self._builder.data_dir_root)
            manual = ""
            if self.name == "imagenet2012":  # tfds cannot download ImageNet itself
                manual = f" (put the ILSVRC2012 tar files in {root}/downloads/manual first)"
            raise FileNotFoundError(
                f"tensorflow-datasets dataset {self.name!r} is not prepared in data_dir={root!r} "
                f"(looked for {self._builder.data_dir}). Nothing is downloaded at run time. Prepare it once "
                f"on a machine with internet: `tfds build {self.name} --data_dir={root}`{manual}, then copy "
                "that folder here or pass data_dir=... (or set TFDS_DATA_DIR)."
            ) from error

    def _known_sizes(self):
        return PAPER_TFDS_DATASETS.get(self.name, (None, {}))[1]

    @property
    def split_sizes(self):
        info_splits = self._builder.info.splits
        if info_splits:
            return {name: int(split.num_examples) for name, split in info_splits.items()}
        return dict(self._known_sizes())  # mocked or metadata-less builder

    def _resolve(self, split):
        """A tfds split string, with aliases ('val' -> 'validation') resolved; 'a+b' passes through."""
        parts = []
        for part in str(split).split("+"):
            base, bounds = self._parse_split(part.strip()) if self.splits else (part.strip(), (None, None))
            parts.append(base if bounds == (None, None) else f"{base}[{bounds[0] or ''}:{bounds[1] or ''}]")
        return "+".join(parts)

    def hold_out(self, split, size, *, seed=0):
        """The tail of each part of `split` ('a+b' and slices work), as absolute tfds slices.

        tensorflow-datasets shuffles examples when it prepares a dataset, so a contiguous slice is a
        uniform sample (the released code's ImageNet finetuning minival is a 2 % slice of 'train').
        """
        del seed  # fixed by the prepared data
        parts = []
        for part in str(split).split("+"):
            base, bounds = self._parse_split(part.strip())
            start, stop, _ = slice(*self._slice_bounds(bounds, self.split_sizes[base])).indices(self.split_sizes[base])
            parts.append((base, start, max(start, stop)))
        sizes = [stop - start for _, start, stop in parts]
        shares = _proportional(held_out_count(split, sum(sizes), size), sizes)
        rest = [f"{b}[{start}:{stop - n}]" for (b, start, stop), n in zip(parts, shares) if stop - n > start]
        held = [f"{b}[{stop - n}:{stop}]" for (b, _, stop), n in zip(parts, shares) if n]
        return "+".join(rest), "+".join(held)

    def num_examples(self, split):
        if self._builder.info.splits:
            return int(self._builder.info.splits[self._resolve(split)].num_examples)
        return sum(super(TFDSSource, self).num_examples(part) for part in self._resolve(split).split("+"))

    def records(self, split, *, shuffle_files=False, input_context=None, seed=None):
        tfds_split = self._resolve(split)
        pipelines = _pipelines(input_context)
        info_split = self._builder.info.splits[tfds_split] if self._builder.info.splits else None
        by_file = pipelines > 1 and info_split is not None and info_split.num_shards >= pipelines
        read_config = self._tfds.ReadConfig(
            input_context=input_context if by_file else None, shuffle_seed=seed, try_autocache=False
        )
        dataset = self._builder.as_dataset(
            split=tfds_split,
            shuffle_files=shuffle_files,
            decoders={self.image_key: self._tfds.decode.SkipDecoding()},  # decode after the shuffle
            read_config=read_config,
        )
        if not by_file:
            dataset = _shard(dataset, input_context)
        image_key, label_key = self.image_key, self.label_key
        return dataset.map(
            lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)), num_parallel_calls=AUTOTUNE
        )

    def decode(self, record):
        image_bytes, label = record
        return _decode_image(image_bytes), label


# ------------------------------------------------------------------------------------------------
# TFRecords (ImageNet imagenet_to_gcs format; ImageNet-21k).
# ------------------------------------------------------------------------------------------------


class TFRecordSource(Source):
    """TFRecord files of tf.train.Examples with an encoded image and integer label(s).

    Image bytes are read from `image/encoded` (ImageNet, imagenet_to_gcs) or `image` (official 21k
    files); labels from `image/class/label` or `labels`. Single-label files (ImageNet) hold one label
    in 1..1000 (0 was "background"), so `label_offset` defaults to 1 and labels become 0-based; multi-
    label files (21k) hold a variable-length list of 0-based class indices (official ImageNet21kInput),
    `label_offset` defaults to 0, and labels become multi-hot vectors.

    Splits are file-name prefixes in `directory` (`train-00000-of-01024` -> "train"), or give
    `split_patterns={"train": "imagenet21k-000[2-9]*", ...}` (glob patterns relative to `directory`).
    Split sizes are counted by reading every record on first use unless `split_sizes` is given.
    """

    def __init__(self, directory, *, num_classes=1000, multi_label=False, label_offset=None,
                 split_patterns=None, split_sizes=None, name=None):  # fmt: skip
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"TFRecord directory {directory!r} does not exist.")
        self.directory = directory
        self.name = name or f"tfrecord:{directory}"
        self.num_classes = int(num_classes)
        self.multi_label = bool(multi_label)
        self.label_offset = (0 if multi_label else 1) if label_offset is None else int(label_offset)
        if split_patterns:
            self._files = {
                split: sorted(tf.io.gfile.glob(os.path.join(directory, pattern)))
                for split, pattern in split_patterns.items()
            }
        else:
            self._files = {}
            for entry in sorted(os.listdir(directory)):
                path = os.path.join(directory, entry)
                if os.path.isfile(path) and not entry.startswith("."):
                    self._files.setdefault(re.split(r"[-_.]", entry)[0], []).append(path)
        empty = [s for s, files in self._files.items() if not files]
        if not self._files or empty:
            raise FileNotFoundError(
                f"No TFRecord files for split(s) {empty or 'any'} in {directory!r}: expected files such as "
                "train-00000-of-01024 and validation-00000-of-00128, or pass split_patterns={split: glob}."
            )
        self._sizes = dict(split_sizes or {})
        self._carved = set()  # split names made by hold_out

    @property
    def split_sizes(self):
        for split, files in self._files.items():
            if split not in self._sizes:  # counting reads every record once
                self._sizes[split] = int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))
        return dict(self._sizes)

    @property
    def splits(self):
        return tuple(self._files)

    def hold_out(self, split, size, *, seed=0):
        """The first whole files of `split`, in name order, until they hold at least `size` examples.

        ImageNet at 25,000: the first 20 of the 1,024 training shards (25,021 images), the released
        code's minival. Splits "train-minival" and "minival".
        """
        del seed  # files in name order
        self._check_carve_name(self._carved)
        base, bounds = self._parse_split(split)
        if bounds != (None, None):
            raise ValueError(f"TFRecordSource does not slice splits ({split!r}); use split_patterns to choose files.")
        files, total = self._files[base], self.split_sizes[base]
        count = held_out_count(split, total, size)
        held, examples = [], 0
        for path in files:
            if examples >= count:
                break
            held.append(path)
            examples += int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))
        if len(held) == len(files):
            raise ValueError(
                f"A minival of {size!r} takes every file of split {split!r} ({len(files)} files, {total} examples): "
                "choose a smaller data.minival, or give a minival split with split_patterns."
            )
        self._files[MINIVAL], self._files[TRAIN_REST] = held, files[len(held):]
        self._sizes[MINIVAL], self._sizes[TRAIN_REST] = examples, total - examples
        self._carved = {MINIVAL, TRAIN_REST}
        return TRAIN_REST, MINIVAL

    def records(self, split, *, shuffle_files=False, input_context=None, seed=None):
        base, bounds = self._parse_split(split)
        if bounds != (None, None):
            raise ValueError(
                f"TFRecordSource does not slice splits ({split!r}); use split_patterns to choose files."
            )
        files = self._files[base]
        pipelines = _pipelines(input_context)
        dataset = tf.data.Dataset.from_tensor_slices(files)
        by_file = len(files) >= pipelines
        if by_file:  # each worker reads its own files (official: file-level shard per host)
            dataset = _shard(dataset, input_context)
        if shuffle_files:
            dataset = dataset.shuffle(len(files), seed=seed)
        dataset = dataset.interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=8 * 1024 * 1024),  # official 8 MiB
            cycle_length=min(len(files), 16),
            num_parallel_calls=AUTOTUNE,
        )
        if not by_file:
            dataset = _shard(dataset, input_context)
        return dataset.map(self._parse, num_parallel_calls=AUTOTUNE)

    def _parse(self, serialized):
        keys = ("image/encoded", "image", "image/class/label", "labels")
        spec = {k: tf.io.VarLenFeature(tf.string if "label" not in k else tf.int64) for k in keys}
        parsed = tf.io.parse_single_example(serialized, spec)
        image_bytes = tf.concat([parsed["image/encoded"].values, parsed["image"].values], 0)
        labels = tf.concat([parsed["image/class/label"].values, parsed["labels"].values], 0) - self.label_offset
        tf.debugging.assert_positive(
            tf.size(image_bytes), message="TFRecord example has no 'image/encoded' or 'image' bytes feature"
        )
        image_bytes = image_bytes[0]
        if self.multi_label:
            return image_bytes, labels
        tf.debugging.assert_equal(tf.size(labels), 1, message="expected exactly one label per example")
        return image_bytes, tf.cast(labels[0], tf.int32)

    def decode(self, record):
        image_bytes, label = record
        if self.multi_label:
            indices = tf.cast(label, tf.int32)[:, None]
            hot = tf.scatter_nd(indices, tf.ones_like(indices[:, 0], tf.float32), [self.num_classes])
            label = tf.minimum(hot, 1.0)  # a repeated index stays 1
        return _decode_image(image_bytes), label


# ------------------------------------------------------------------------------------------------
# A folder of images, one sub-folder per class.
# ------------------------------------------------------------------------------------------------

_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
_SPLIT_DIRS = ("train", "validation", "val", "test")


def _header_problem(path):
    """Why `path` is not an image we can decode, from its first bytes only (None = looks fine)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if not head:
        return "empty file"
    if not any(head.startswith(magic) for magic in _MAGIC):
        return "not a JPEG/PNG/GIF/BMP file"
    return None


def _other_files(directory):
    """Files under `directory` that are not in an accepted image format (hidden files aside)."""
    return [os.path.join(folder, f) for folder, _, files in os.walk(directory) for f in sorted(files)
            if not f.startswith(".") and not f.lower().endswith(IMAGE_EXTENSIONS)]


def is_image_file(path):
    """Whether `path` has one of the accepted image extensions (IMAGE_EXTENSIONS), the one list used by
    image folders and tools/predict.py."""
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def _list_images(directory):
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders.sort()
        found.extend(os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
    return found


class ImageFolderSource(_InMemoryIndexSource):
    """Images in `root/<class>/...` (or `root/<split>/<class>/...` with split folders train, val, ...).

    Classes are the sorted sub-folder names (label = index). Files ending in .jpg/.jpeg/.png/.bmp/.gif
    (any case, in nested folders too) are used; other files are ignored. Grayscale and RGBA images become
    RGB; GIFs give their first frame.

    Corrupt or unreadable files are skipped and counted, never crash a run:
      * at construction, every file's header is checked (first bytes, cheap), and when the folder has at
        most `decode_scan_limit` files (`validate="auto"`) or `validate="decode"`, every file is decoded
        once in parallel with tf.data to catch truncated images too;
      * while training, a file that still fails to decode is dropped (`ignore_errors`, logged).
    The result is in `skipped_files` (list of (path, reason)) and `num_skipped`; a warning is logged.

    Without split folders, everything is "train"; `validation_split=0.1` holds out a seeded stratified
    10 % as "validation".
    """

    skip_decode_errors = True

    def __init__(self, root, *, validate="auto", decode_scan_limit=10_000, validation_split=0.0, seed=0,
                 name=None):  # fmt: skip
        if validate not in ("auto", "decode", "header", None):
            raise ValueError(f"validate must be 'auto', 'decode', 'header' or None, got {validate!r}.")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}.")
        root = os.path.abspath(os.path.expanduser(str(root)))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Image folder {root!r} does not exist.")
        self.root = root
        self.name = name or f"folder:{root}"

        def subdirs(path):
            entries = sorted(os.listdir(path))
            return [d for d in entries if os.path.isdir(os.path.join(path, d)) and not d.startswith(".")]

        top = subdirs(root)
        if top and all(d in _SPLIT_DIRS for d in top):
            split_roots = {d: os.path.join(root, d) for d in top}
        else:
            split_roots = {"train": root}
        self.class_names = sorted({c for path in split_roots.values() for c in subdirs(path)})
        if len(self.class_names) < 2:
            found = "no class sub-folders"
            if self.class_names:
                found = f"only the class folder {self.class_names[0]!r}"
            raise ValueError(
                f"Found {found} in {root!r}; expected at least two, laid out as {root}/<class name>/<image "
                f"files> (or {root}/train/<class name>/..., {root}/validation/<class name>/...)."
            )
        self.num_classes = len(self.class_names)

        paths, labels, splits = [], [], []
        per_class = [0] * len(self.class_names)
        for split, split_root in split_roots.items():
            for label, cls in enumerate(self.class_names):
                folder = os.path.join(split_root, cls)
                if os.path.isdir(folder):
                    files = _list_images(folder)
                    if not files:  # a class the model would learn from nothing
                        others = _other_files(folder)
                        raise ValueError(
                            f"The class folder {folder!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
                            + (f" (it has {len(others)} other file(s), e.g. {os.path.basename(others[0])!r})"
                               if others else "")
                            + ": add images, convert them to an accepted format, or remove the folder."
                        )
                    paths += files
                    labels += [label] * len(files)
                    splits += [split] * len(files)
                    per_class[label] += len(files)
        ignored = [f for root_ in split_roots.values() for f in _other_files(root_)]
        if ignored:
            logging.warning(
                "%s: ignored %d file(s) that are not in an accepted image format (%s), e.g. %s.",
                name or f"folder:{root}", len(ignored), ", ".join(IMAGE_EXTENSIONS), ignored[0],
            )  # fmt: skip
        if not paths:
            raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}.")

        mode = validate
        if validate == "auto":
            mode = "decode" if len(paths) <= decode_scan_limit else "header"
        self.skipped_files = self._scan(paths, mode)
        bad = {path for path, _ in self.skipped_files}
        keep = [i for i, path in enumerate(paths) if path not in bad]
        self.num_skipped = len(self.skipped_files)
        if self.num_skipped:
            examples = ", ".join(f"{os.path.relpath(p, root)} ({why})" for p, why in self.skipped_files[:3])
            logging.warning(
                "%s: skipped %d unreadable image file(s), e.g. %s; see .skipped_files.",
                self.name, self.num_skipped, examples,
            )  # fmt: skip
        self._records = np.array([paths[i] for i in keep], dtype=object).astype(str)  # file paths
        self._labels = np.array([labels[i] for i in keep], np.int32)
        split_of = np.array([splits[i] for i in keep], dtype=object)
        self.split_indices = {s: np.flatnonzero(split_of == s) for s in split_roots}
        if validation_split and "validation" not in self.split_indices and "val" not in self.split_indices:
            train = self.split_indices["train"]
            n_val = int(round(len(train) * validation_split))
            rest, held = stratified_split(self._labels[train], n_val, seed)
            self.split_indices["train"], self.split_indices["validation"] = train[rest], train[held]
        empty = [s for s, idx in self.split_indices.items() if len(idx) == 0]
        if empty:
            raise ValueError(
                f"No readable images for split(s) {empty} under {root!r} (skipped {self.num_skipped})."
            )

    @staticmethod
    def _scan(paths, mode):
        if mode is None:
            return []
        skipped = [(p, why) for p in paths if (why := _header_problem(p))]
        if mode != "decode":
            return skipped
        bad = {p for p, _ in skipped}
        candidates = [p for p in paths if p not in bad]
        if not candidates:
            return skipped
        # Decode everything once, in parallel; the indices that survive `ignore_errors` are readable.
        probe = tf.data.Dataset.from_tensor_slices(candidates).enumerate()
        probe = probe.map(
            lambda i, p: (i, tf.shape(_decode_image(tf.io.read_file(p)))[0]), num_parallel_calls=AUTOTUNE
        ).ignore_errors()
        readable = {int(i) for i, _ in probe.as_numpy_iterator()}
        reason = "cannot be decoded (corrupt or truncated)"
        skipped += [(p, reason) for i, p in enumerate(candidates) if i not in readable]
        return skipped

    def decode(self, record):
        path, label = record
        return _decode_image(tf.io.read_file(path)), label


# ------------------------------------------------------------------------------------------------
# Names -> sources.
# ------------------------------------------------------------------------------------------------


def get_source(name_or_path, data_dir=None, **kwargs) -> Source:
    """Returns a Source from a name.

    * "digits": `DigitsSource(**kwargs)` (bundled, offline);
    * "imagenet2012", "cifar10", "cifar100", "oxford_flowers102", "cars196", or "tfds:<any tfds name>":
      `TFDSSource(name, data_dir=data_dir)` (must be prepared; never downloads);
    * "folder:<dir>" or an existing directory: `ImageFolderSource(dir, **kwargs)`;
    * "tfrecord:<dir>": ImageNet TFRecords (1,000 classes, labels 1-based in the files);
    * "tfrecord21k:<dir>": ImageNet-21k TFRecords (21,843 classes, multi-hot labels);
    * "keras:<name>": `keras.datasets.<name>.load_data()` (fashion_mnist, mnist, cifar10, cifar100; see
      keras_datasets.py).
    A Source passes through unchanged. For the TFRecord kinds an empty <dir> means `data_dir`.
    """
    if isinstance(name_or_path, Source):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"Expected a Source or a name, got {type(name_or_path).__name__}.")
    name = os.fspath(name_or_path)
    kind, _, rest = name.partition(":")
    try:
        return _get_source(name_or_path, name, kind, rest, data_dir, kwargs)
    except TypeError as error:  # an option the source does not take (e.g. a digits recipe's image_size)
        if "unexpected keyword argument" not in str(error):
            raise
        option = str(error).split("argument")[-1].strip(" '\"")
        raise ValueError(
            f"The data source {name!r} takes no option {option!r} (data.source_options={kwargs!r}); remove it "
            "from the recipe's data.source_options (the digits recipe's image_size is for the bundled digits only)."
        ) from None


def _get_source(name_or_path, name, kind, rest, data_dir, kwargs):
    if name == "digits":
        return DigitsSource(**kwargs)
    if name in PAPER_TFDS_DATASETS:
        return TFDSSource(name, data_dir=data_dir, **kwargs)
    if kind == "tfds" and rest:
        return TFDSSource(rest, data_dir=data_dir, **kwargs)
    if kind == "folder" and rest:
        return ImageFolderSource(rest, **kwargs)
    if kind == "keras" and rest:
        from efficientnetv2_keras.data.keras_datasets import KerasDatasetSource  # imports this module

        return KerasDatasetSource(rest, **kwargs)
    if kind in ("tfrecord", "tfrecord21k") and (rest or data_dir):
        if kind == "tfrecord21k":
            kwargs = {"num_classes": IMAGENET21K_CLASSES, "multi_label": True, **kwargs}
        return TFRecordSource(rest or data_dir, **kwargs)
    if os.path.isdir(name):
        return ImageFolderSource(name, **kwargs)
    raise ValueError(
        f"Unknown data source {name!r}. Valid: 'digits'; tfds datasets {sorted(PAPER_TFDS_DATASETS)} or "
        "'tfds:<name>'; 'folder:<dir>' or an existing directory (one sub-folder per class); "
        "'tfrecord:<dir>' (ImageNet TFRecords); 'tfrecord21k:<dir>' (ImageNet-21k TFRecords); "
        "'keras:<name>' (keras.datasets: fashion_mnist, mnist, cifar10, cifar100)."
    )
