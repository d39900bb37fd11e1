"""Sources whose records are numpy arrays in memory: the shared random-access base and `ArraySource`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from efficientnetv2_keras.data.sources.base import (
    MINIVAL,
    TRAIN_REST,
    Source,
    held_out_count,
    shard_count,
    shard_records,
    stratified_split,
)


class InMemorySource(Source):
    """The base of sources whose records are numpy arrays held in memory (digits, arrays, file lists).

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
        return shard_records(tf.data.Dataset.from_tensor_slices(arrays), input_context)

    def indexed_records(self, split, input_context=None):
        return self.records(split, input_context=input_context), self.shard_size(split, input_context)

    def shard_size(self, split, input_context=None):
        return shard_count(len(self._arrays(split)[1]), input_context)

    def hold_out(self, split, size, *, seed=0):
        """Stratified by label (`stratified_split` with `seed`): splits "train-minival" and "minival"."""
        self._check_carve_name(self._carved())
        records, labels = self._arrays(split)
        rest, held = stratified_split(labels, held_out_count(split, len(labels), size), seed)
        self._carved()[TRAIN_REST] = (records[rest], labels[rest])
        self._carved()[MINIVAL] = (records[held], labels[held])
        return TRAIN_REST, MINIVAL


class ArraySource(InMemorySource):
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
