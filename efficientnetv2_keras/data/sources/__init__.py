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
`get_source(name_or_path)` picks one from a string (`by_name`).

One source kind per module: `digits`, `in_memory` (arrays), `tfds`, `tfrecord`, `folder`, `cached` (any
source decoded once and shared by every stage's pipeline); `base` holds the `Source` interface and what
sources share.

`source.hold_out(split, size)` carves a held-out part (the minival used for model selection) from a
training split, deterministically: stratified by label for in-memory sources, a tail slice of each
part for tensorflow-datasets, whole files for TFRecords (the released code's ImageNet minival is the
first 20 training shards, 25,021 images).
"""

from efficientnetv2_keras.data.sources.base import (
    MINIVAL,
    TRAIN_REST,
    Source,
    UnknownSplitError,
    held_out_count,
    stratified_split,
)
from efficientnetv2_keras.data.sources.by_name import get_source, known_num_classes, names_multi_label
from efficientnetv2_keras.data.sources.cached import CachedSource
from efficientnetv2_keras.data.sources.digits import DigitsSource
from efficientnetv2_keras.data.sources.folder import IMAGE_EXTENSIONS, ImageFolderSource, is_image_file
from efficientnetv2_keras.data.sources.in_memory import ArraySource
from efficientnetv2_keras.data.sources.tfds import PAPER_TFDS_DATASETS, TFDSSource
from efficientnetv2_keras.data.sources.tfrecord import IMAGENET21K_CLASSES, TFRecordSource

__all__ = [
    "Source",
    "UnknownSplitError",
    "ArraySource",
    "DigitsSource",
    "TFDSSource",
    "TFRecordSource",
    "ImageFolderSource",
    "CachedSource",
    "get_source",
    "known_num_classes",
    "names_multi_label",
    "stratified_split",
    "held_out_count",
    "MINIVAL",
    "TRAIN_REST",
    "PAPER_TFDS_DATASETS",
    "IMAGENET21K_CLASSES",
    "IMAGE_EXTENSIONS",
    "is_image_file",
]
