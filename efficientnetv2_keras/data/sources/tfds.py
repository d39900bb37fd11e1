"""Prepared tensorflow-datasets datasets (the paper's transfer datasets and ImageNet); never downloads."""

from __future__ import annotations

import tensorflow as tf

from efficientnetv2_keras.data.sources.base import (
    AUTOTUNE,
    Source,
    decode_image,
    held_out_count,
    input_pipelines,
    proportional_shares,
    shard_records,
)

# 1,020 images; the released FlowersFt config trains on train+validation).
PAPER_TFDS_DATASETS = {
    "imagenet2012": (1000, {"train": 1_281_167, "validation": 50_000}),
    "cifar10": (10, {"train": 50_000, "test": 10_000}),
    "cifar100": (100, {"train": 50_000, "test": 10_000}),
    "oxford_flowers102": (102, {"train": 1_020, "validation": 1_020, "test": 6_149}),
    "cars196": (196, {"train": 8_144, "test": 8_041}),
}


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
        shares = proportional_shares(held_out_count(split, sum(sizes), size), sizes)
        rest = [f"{b}[{start}:{stop - n}]" for (b, start, stop), n in zip(parts, shares) if stop - n > start]
        held = [f"{b}[{stop - n}:{stop}]" for (b, _, stop), n in zip(parts, shares) if n]
        return "+".join(rest), "+".join(held)

    def num_examples(self, split):
        if self._builder.info.splits:
            return int(self._builder.info.splits[self._resolve(split)].num_examples)
        return sum(super(TFDSSource, self).num_examples(part) for part in self._resolve(split).split("+"))

    def records(self, split, *, shuffle_files=False, input_context=None, seed=None):
        tfds_split = self._resolve(split)
        pipelines = input_pipelines(input_context)
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
            dataset = shard_records(dataset, input_context)
        image_key, label_key = self.image_key, self.label_key
        return dataset.map(
            lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)), num_parallel_calls=AUTOTUNE
        )

    def decode(self, record):
        image_bytes, label = record
        return decode_image(image_bytes), label
