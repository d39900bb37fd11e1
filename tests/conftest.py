"""Shared test helpers. Tests use tiny inputs and tiny model tables to stay fast on 2 CPU cores."""

import gzip
import os
import struct

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from efficientnetv2_keras.models.family import FUSED_MBCONV, MBCONV, ModelSpec, StageSpec  # noqa: E402

# A three-stage table with both block types, SE, stride 1 and 2, and residual blocks: the builder
# handles any table, so most behaviour is tested on this instead of a real variant.
TINY_SPEC = ModelSpec(
    name="efficientnetv2-tiny",
    stages=(
        StageSpec(FUSED_MBCONV, 3, 1, 1, 8, 8, 1),
        StageSpec(FUSED_MBCONV, 3, 2, 2, 8, 16, 2),
        StageSpec(MBCONV, 3, 2, 2, 16, 24, 2, 0.25),
    ),
    head_filters=32,
)


@pytest.fixture
def tiny_spec():
    return TINY_SPEC


def write_idx(path, array):
    """The idx format (gzip'd, as Zalando and Debian ship it): magic 0, 0, 0x08 (uint8), ndim; the sizes
    as big-endian uint32; the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def tiny_fashion_mnist(folder, train_examples, test_examples, seed=0):
    """Writes a tiny Fashion-MNIST (the four idx files keras.datasets.fashion_mnist reads; every class in each
    split) into `folder`; returns its arrays {"train": (images, labels), "t10k": ...}."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for prefix, count in (("train", train_examples), ("t10k", test_examples)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 256, (count, 28, 28))
        images[:, :4, :4] = labels[:, None, None] * 25  # a corner that tells the class
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), labels)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), images)
        arrays[prefix] = (images.astype(np.uint8), labels)
    return arrays
