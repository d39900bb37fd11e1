"""Losses and metrics of the recipes (paper §5.1-5.2; the released code's `main.py` loss and 21k metrics).

* ImageNet and finetuning: softmax cross-entropy with label smoothing 0.1 (Keras'
  `CategoricalCrossentropy(label_smoothing=0.1)`, which also takes the soft labels of mixup/CutMix).
* ImageNet-21k (multi-label): "we normalize the labels to have sum of 1 before computing softmax
  loss" (§5.2) -> `MultiLabelSoftmaxCrossEntropy`; or sigmoid cross-entropy per class
  (`train.loss=sigmoid`, Keras' `BinaryCrossentropy`, mean over classes like the released code).
* Metrics: top-1/top-5 accuracy (Keras) for single-label data; precision@1/@5 and recall@1/@5 for
  multi-label data (the released 21k eval), plus top-1/top-5 against the argmax label.

The models end in a softmax (or sigmoid) and the losses take probabilities (`from_logits=False`):
on the TensorFlow backend Keras recovers the logits from the activation, so this is as stable as
training on logits, and saved models output probabilities like keras.applications.
"""

import keras
from keras import ops

from efficientnetv2_keras.limits import LOSSES


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class MultiLabelSoftmaxCrossEntropy(keras.losses.Loss):
    """Softmax cross-entropy against multi-hot labels normalized to sum 1 (paper §5.2).

    Targets may be 0/1 multi-hot or already normalized; an all-zero target contributes 0. Label
    smoothing is Keras': y * (1 - s) + s / num_classes after normalizing.
    """

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name="multi_label_softmax_cross_entropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        total = ops.sum(y_true, axis=-1, keepdims=True)
        y_true = ops.divide_no_nan(y_true, total)
        if self.label_smoothing:
            num_classes = ops.cast(ops.shape(y_true)[-1], y_pred.dtype)
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
            # Rows without any label stay zero (no target to smooth).
            y_true = y_true * ops.cast(total > 0, y_pred.dtype)
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "label_smoothing": self.label_smoothing})
        return config


class _TopKLabelMetric(keras.metrics.Metric):
    """Mean over examples of (true labels among the k highest scores) / denominator."""

    def __init__(self, k=1, name=None, dtype=None):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        super().__init__(name=name or f"{self._prefix}_at_{int(k)}", dtype=dtype)
        self.k = int(k)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")

    def _denominator(self, y_true, k):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.0), "float32")
        k = min(self.k, y_pred.shape[-1]) if y_pred.shape[-1] is not None else self.k
        _, top = ops.top_k(y_pred, k=k)
        hits = ops.sum(ops.take_along_axis(y_true, top, axis=-1), axis=-1)
        values = ops.divide_no_nan(hits, self._denominator(y_true, k))
        if sample_weight is None:
            weights = ops.ones_like(values)
        else:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(values))
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"k": self.k, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class PrecisionAtK(_TopKLabelMetric):
    """Multi-label precision@k: the fraction of the k top-scored classes that are true labels.

    Targets are multi-hot (0/1 or normalized: any positive value counts as a label).
    """

    _prefix = "precision"

    def _denominator(self, y_true, k):
        return ops.full_like(ops.sum(y_true, axis=-1), float(k))


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class RecallAtK(_TopKLabelMetric):
    """Multi-label recall@k: the fraction of an example's true labels found among the k top-scored."""

    _prefix = "recall"

    def _denominator(self, y_true, k):
        return ops.sum(y_true, axis=-1)


def make_loss(loss, label_smoothing=0.0, label_format=None, multi_label=False, from_logits=False):
    """The loss of a recipe's `train.loss`, `train.label_smoothing` and labels.

    Args:
      loss: "softmax" or "sigmoid".
      label_format: the labels' format ("sparse" gets sparse cross-entropy); None: one-hot or multi-hot.
      multi_label: whether the labels are multi-hot (the recipe resolver's `is_multi_label`).
      from_logits: whether the model outputs logits (this package's models output probabilities).
    """
    if loss == "sigmoid":
        return keras.losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    if loss != "softmax":
        raise ValueError(f"Unknown train.loss {loss!r}; choose one of {LOSSES}.")
    if label_format == "sparse":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    if multi_label:
        return MultiLabelSoftmaxCrossEntropy(from_logits=from_logits, label_smoothing=label_smoothing)
    return keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def make_metrics(num_classes=None, label_format=None, multi_label=False):
    """Top-1/top-5 accuracy; for multi-label data also precision@1/@5 and recall@1/@5.

    Names: "accuracy", "top5_accuracy", "precision_at_1", ... (validation: "val_accuracy", ...).
    """
    top5 = 5 if num_classes is None else min(5, int(num_classes))
    if label_format == "sparse":
        return [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=top5, name=f"top{top5}_accuracy"),
        ]
    metrics = [
        keras.metrics.CategoricalAccuracy(name="accuracy"),  # against the argmax label
        keras.metrics.TopKCategoricalAccuracy(k=top5, name=f"top{top5}_accuracy"),
    ]
    if multi_label:
        metrics += [PrecisionAtK(1), PrecisionAtK(top5), RecallAtK(1), RecallAtK(top5)]
    return metrics


def monitor_for(multi_label):
    """The validation metric that picks the "best" checkpoint (higher is better)."""
    return "val_precision_at_1" if multi_label else "val_accuracy"
