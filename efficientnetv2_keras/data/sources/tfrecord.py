"""TFRecord files: ImageNet in the imagenet_to_gcs format, and the released code's ImageNet-21k files."""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf

from efficientnetv2_keras.data.sources.base import (
    AUTOTUNE,
    MINIVAL,
    TRAIN_REST,
    Source,
    decode_image,
    held_out_count,
    input_pipelines,
    shard_records,
)

IMAGENET21K_CLASSES = 21_843  # the released code's ImageNet21kInput


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
        pipelines = input_pipelines(input_context)
        dataset = tf.data.Dataset.from_tensor_slices(files)
        by_file = len(files) >= pipelines
        if by_file:  # each worker reads its own files (official: file-level shard per host)
            dataset = shard_records(dataset, input_context)
        if shuffle_files:
            dataset = dataset.shuffle(len(files), seed=seed)
        dataset = dataset.interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=8 * 1024 * 1024),  # official 8 MiB
            cycle_length=min(len(files), 16),
            num_parallel_calls=AUTOTUNE,
        )
        if not by_file:
            dataset = shard_records(dataset, input_context)
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
        return decode_image(image_bytes), label
