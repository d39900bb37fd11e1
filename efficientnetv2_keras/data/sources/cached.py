"""`CachedSource`: a source decoded once and cached, shared by the pipelines of every progressive stage."""

from __future__ import annotations

import os
import re

import tensorflow as tf

from efficientnetv2_keras.data.sources.base import Source
from efficientnetv2_keras.data.sources.by_name import get_source


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
