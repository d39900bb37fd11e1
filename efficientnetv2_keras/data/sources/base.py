"""The `Source` interface every data source implements, and what sources share: split names and
slices, sharding over input pipelines, held-out parts, image decoding.

A source produces *records* (cheap to shuffle: encoded bytes, file paths, tiny arrays) and a `decode`
that turns one record into (image, label); see the package docstring (`data.sources`).
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
from absl import logging

AUTOTUNE = tf.data.AUTOTUNE

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


def proportional_shares(count, sizes):
    """`count` divided over parts of the given sizes (largest remainder), each share <= its part."""
    total = sum(sizes)
    exact = [count * size / total for size in sizes]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: -(exact[i] - shares[i]))[: count - sum(shares)]:
        shares[i] += 1
    return shares


def decode_image(image_bytes):
    """JPEG/PNG/BMP/GIF (first frame) -> uint8 RGB; grayscale is replicated, alpha is dropped."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def shard_records(dataset, input_context):
    """This input pipeline's share of `dataset` (every n-th record from its id); all of it for one pipeline."""
    if input_pipelines(input_context) > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return dataset


def input_pipelines(input_context):
    """How many input pipelines (workers) read the data: 1 without an `input_context`."""
    return input_context.num_input_pipelines if input_context is not None else 1


def shard_count(total, input_context):
    """Examples of `total` in this input pipeline's shard (`Dataset.shard`: every n-th from its id)."""
    if input_pipelines(input_context) == 1:
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
        return self.num_examples(split) if input_pipelines(input_context) == 1 else None

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
