"""keras.datasets as sources: `get_source("keras:fashion_mnist")` (also mnist, cifar10, cifar100).

The arrays come from `keras.datasets.<name>.load_data()`, which reads Keras' cache folder
(`$KERAS_HOME/datasets`, default `~/.keras/datasets`; Keras reads KERAS_HOME once, when it is
imported) and downloads what is missing there. Splits "train" and "test" (aliases "validation",
"val"), grayscale replicated to RGB, the class names for labels.txt.

Offline: Debian's `dataset-fashion-mnist` package holds Fashion-MNIST's four idx files; `make data`
copies them into the cache folder, where `load_data()` reads them without a download. A dataset that
is missing is downloaded only when its origin answers within `DOWNLOAD_CHECK_SECONDS` (a download
without network can hang: `urlretrieve` has no timeout); otherwise, or when the download fails, one
FileNotFoundError says what is missing, where it belongs and how to get it there.

Each dataset is loaded once per process and cache folder: every pipeline (one per progressive stage)
and every source built from it share the same read-only arrays.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from typing import Optional

import numpy as np

from efficientnetv2_keras.data.sources import ArraySource

# Fashion-MNIST's classes (Zalando Research; the table in keras.datasets.fashion_mnist.load_data).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
# CIFAR-10's batches.meta and CIFAR-100's fine_label_names (the archives' meta files), in label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
# Seconds the origin has to answer before a download is tried (offline, the error comes at once instead).
DOWNLOAD_CHECK_SECONDS = 10
_KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_MNIST_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                        "t10k-images-idx3-ubyte.gz")


@dataclasses.dataclass(frozen=True)
class KerasDataset:
    """One `keras.datasets` module and what `load_data()` needs in the cache folder to read it offline.

    files: paths under the cache folder (Keras' `get_file` targets: for the CIFARs the downloaded archive,
      `<fname>_archive`, which it extracts next to it); origins: where Keras downloads each;
      debian_package, debian_folder: the Debian package holding the same files, where one exists.
    """

    module: str
    class_names: tuple
    files: tuple
    origins: tuple
    debian_package: Optional[str] = None
    debian_folder: Optional[str] = None

    @property
    def num_classes(self):
        return len(self.class_names)


KERAS_DATASETS = {
    "fashion_mnist": KerasDataset(
        "fashion_mnist", FASHION_MNIST_CLASSES, tuple(f"fashion-mnist/{f}" for f in _FASHION_MNIST_FILES),
        tuple(_KERAS_DATASETS_URL + f for f in _FASHION_MNIST_FILES), "dataset-fashion-mnist",
        "/usr/share/datasets/fashion-mnist"),
    "mnist": KerasDataset("mnist", tuple("0123456789"), ("mnist.npz",), (_KERAS_DATASETS_URL + "mnist.npz",)),
    "cifar10": KerasDataset("cifar10", CIFAR10_CLASSES, ("cifar-10-batches-py-target_archive",),
                            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),
    "cifar100": KerasDataset("cifar100", CIFAR100_CLASSES, ("cifar-100-python-target_archive",),
                             ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),
}  # fmt: skip

_LOADED = {}  # (name, cache folder) -> {"train": (images, labels), "test": ...}


def keras_cache_folder():
    """The folder `load_data()` reads and downloads into: `<Keras home>/datasets`.

    The Keras home is KERAS_HOME as Keras read it when imported (default ~/.keras), or /tmp/.keras where
    that is not writable, as `keras.utils.get_file` decides.
    """
    try:
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # a Keras without the private accessor: its documented rule
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "datasets")


def _download_problem(origin):
    """None when `origin` answers a HEAD request within DOWNLOAD_CHECK_SECONDS, else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(origin, method="HEAD"), timeout=DOWNLOAD_CHECK_SECONDS):
            return None
    except Exception as error:  # noqa: BLE001 - any failure means "no download here"
        return f"{type(error).__name__}: {error}"


def _missing_message(name, missing, folder, problem):
    dataset = KERAS_DATASETS[name]
    found = ", ".join(os.path.join(folder, path) for path in missing)
    where = os.environ.get("KERAS_HOME")
    lines = [
        f"keras.datasets.{dataset.module} is not in Keras' cache folder {folder} (missing: {found}) and could not "
        f"be downloaded ({problem}).",
        f"Keras reads that folder from KERAS_HOME ({'set to ' + where if where else 'unset: ~/.keras'}) when it is "
        "imported.",
    ]
    if dataset.debian_package:
        lines.append(
            f"Install it with `make data` (apt-get install {dataset.debian_package}, then copy "
            f"{dataset.debian_folder}/*.gz into {os.path.dirname(os.path.join(folder, dataset.files[0]))}/).")
    else:
        sources = ", ".join(dataset.origins)
        lines.append(f"Debian has no package for it: download {sources} where the network is up and copy it to "
                     f"{found}.")
    return " ".join(lines)


def _to_rgb(images):
    """uint8 images -> [N, H, W, 3]: channels-first CIFAR (image_data_format channels_first) moved last,
    gray replicated (as ArraySource does, once here for every source sharing the arrays)."""
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 3:
        images = images[..., None]
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else np.ascontiguousarray(images)


def _read(name):
    """load_data() of `name`, after checking it is on disk or can be downloaded; RGB read-only arrays."""
    import keras

    dataset = KERAS_DATASETS[name]
    folder = keras_cache_folder()
    missing = [path for path in dataset.files if not os.path.exists(os.path.join(folder, path))]
    problem = _download_problem(dataset.origins[0]) if missing else None
    if problem:
        raise FileNotFoundError(_missing_message(name, missing, folder, problem))
    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, dataset.module).load_data()
    except Exception as error:
        # get_file's download failure ("URL fetch failure on ..."); also a cached file whose hash differs.
        if not (missing or str(error).startswith("URL fetch failure")):
            raise
        raise FileNotFoundError(_missing_message(name, missing or dataset.files, folder, error)) from error
    splits = {"train": (_to_rgb(x_train), y_train.reshape(-1)), "test": (_to_rgb(x_test), y_test.reshape(-1))}
    for images, labels in splits.values():
        images.setflags(write=False)
        labels.setflags(write=False)
    return splits


def load_keras_dataset(name):
    """{"train": (uint8 images [N, H, W, 3], labels [N]), "test": ...} of keras.datasets.<name>, read once
    per process and cache folder (the arrays are read-only: every caller shares them)."""
    if name not in KERAS_DATASETS:
        raise ValueError(f"Unknown Keras dataset {name!r}; valid: {', '.join(source_names())}.")
    key = (name, keras_cache_folder())
    if key not in _LOADED:
        _LOADED[key] = _read(name)
    return _LOADED[key]


def source_names():
    """The `data.source` names of this module: keras:fashion_mnist, keras:mnist, ..."""
    return [f"keras:{name}" for name in KERAS_DATASETS]


class KerasDatasetSource(ArraySource):
    """`keras.datasets.<name>.load_data()` as a source: splits "train" and "test", RGB, class names."""

    def __init__(self, name):
        splits = load_keras_dataset(name)
        dataset = KERAS_DATASETS[name]
        super().__init__(splits, dataset.num_classes, name=f"keras:{name}")
        self.class_names = list(dataset.class_names)


__all__ = ["KERAS_DATASETS", "KerasDataset", "KerasDatasetSource", "keras_cache_folder", "load_keras_dataset",
           "source_names"]
