"""Labels in the pipeline: which encoding a source gets by default, whether a choice fits the source and
the mixing, and the encoding itself (`limits.LABEL_FORMATS`)."""

from __future__ import annotations

import tensorflow as tf

from efficientnetv2_keras.limits import LABEL_FORMATS, MULTI_LABEL_FORMATS


def default_label_format(source) -> str:
    """'multi_hot_normalized' for multi-label sources (official 21k softmax loss), else 'one_hot'."""
    return "multi_hot_normalized" if source.multi_label else "one_hot"


def check_label_format(label_format, source, mixing):
    """The label format to use (the source's default for None); an error when it cannot hold the labels."""
    label_format = default_label_format(source) if label_format is None else label_format
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"label_format must be one of {LABEL_FORMATS} or None, got {label_format!r}.")
    if source.multi_label and label_format not in MULTI_LABEL_FORMATS:
        raise ValueError(
            f"{source.name} has multi-label examples; use label_format='multi_hot_normalized' (sums to 1, "
            "for softmax cross-entropy as the official 21k training) or 'multi_hot' (0/1, for sigmoid losses)."
        )
    if mixing and label_format == "sparse":
        raise ValueError(
            "Mixup/CutMix produce soft labels, which label_format='sparse' cannot hold; use 'one_hot' "
            "(or set mixup_alpha=cutmix_alpha=0)."
        )
    return label_format


def encode_label(label, label_format, num_classes):
    """Single-label int32 index or multi-hot 0/1 vector -> the requested format."""
    if label_format == "sparse":
        return tf.cast(label, tf.int32)
    if label.shape.rank == 0:
        return tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)
    label = tf.cast(label, tf.float32)
    if label_format == "multi_hot_normalized":  # paper 5.2, released ImageNet21kInput: softmax CE on normalised multi-hot
        label = label / tf.maximum(tf.reduce_sum(label), 1.0)
    return label
