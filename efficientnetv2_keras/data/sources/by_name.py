"""Names -> sources: `get_source("digits")`, `get_source("folder:/data/flowers")`, ..."""

from __future__ import annotations

import os

from efficientnetv2_keras.data.sources.base import Source
from efficientnetv2_keras.data.sources.digits import DigitsSource
from efficientnetv2_keras.data.sources.folder import ImageFolderSource
from efficientnetv2_keras.data.sources.tfds import PAPER_TFDS_DATASETS, TFDSSource
from efficientnetv2_keras.data.sources.tfrecord import IMAGENET21K_CLASSES, TFRecordSource


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
        from efficientnetv2_keras.data.keras_datasets import KerasDatasetSource  # it imports this package

        return KerasDatasetSource(rest, **kwargs)
    if kind in ("tfrecord", "tfrecord21k") and (rest or data_dir):
        if names_multi_label(name):
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


def known_num_classes(name, options=None):
    """The class count of the source `name` when it is known without reading data (the paper's tfds
    datasets, the TFRecord kinds, keras.datasets); None: ask `get_source(name).num_classes`."""
    options = options or {}
    kind, _, rest = name.partition(":")
    if name in PAPER_TFDS_DATASETS:
        return PAPER_TFDS_DATASETS[name][0]
    if kind == "tfrecord21k":
        return int(options.get("num_classes", IMAGENET21K_CLASSES))
    if kind == "tfrecord":
        return int(options.get("num_classes", 1000))  # TFRecordSource's default: ImageNet
    if kind == "keras":
        from efficientnetv2_keras.data.keras_datasets import KERAS_DATASETS  # it imports this package

        return KERAS_DATASETS[rest].num_classes if rest in KERAS_DATASETS else None
    return None


def names_multi_label(name):
    """Whether the source `name` has multi-hot labels, from its name alone (ImageNet-21k's TFRecords)."""
    return name.partition(":")[0] == "tfrecord21k"
