"""scikit-learn's handwritten digits (bundled: real data, no network)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from efficientnetv2_keras.data.sources.base import stratified_split
from efficientnetv2_keras.data.sources.in_memory import InMemorySource


class DigitsSource(InMemorySource):
    """scikit-learn's handwritten digits: 1,797 8x8 images, 10 classes, bundled (offline).

    Pixels 0..16 become uint8 0..255 (x * 255 / 16, rounded), gray is replicated to RGB, and each image
    is resized (bicubic) to `image_size` when decoded. The split is a fixed stratified one with
    `stratified_split(seed=0)`: 1,437 train / 360 test, identical on every run. "validation" and "val"
    are aliases of "test".
    """

    name = "digits"
    num_classes = 10
    TEST_SIZE = 360
    ORIGINAL_SIZE = 8  # scikit-learn's images are 8x8: smaller would throw pixels away

    def __init__(self, image_size=32, *, seed=0):
        from sklearn.datasets import load_digits  # bundled data file, no download

        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < self.ORIGINAL_SIZE:
            raise ValueError(
                f"DigitsSource image_size must be an int >= {self.ORIGINAL_SIZE} (the originals are 8x8), "
                f"got {image_size!r}."
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
        if self.image_size != self.ORIGINAL_SIZE:
            image = tf.image.resize(image, [self.image_size, self.image_size], method="bicubic")
            image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
        return image, label
