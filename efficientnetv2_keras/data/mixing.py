"""Mixup and CutMix on batches (the released code's `datasets.py`; paper Section 4.2 for mixup).

Both run after batching, in training only, and mix each example with the batch in reverse order (as the
official code does: no shuffle or gather needed). Labels must be dense (one-hot or multi-hot float);
mixed one-hot labels still sum to 1.

* Mixup: lambda ~ Beta(alpha, alpha) per example, taken as max(lambda, 1 - lambda) so the original
  image dominates (official); image and label are mixed with the same weight.
* CutMix: per example, a box whose area fraction is drawn from Beta(alpha, alpha), at a uniformly random
  centre, clipped at the borders, is pasted from the reversed batch. The label weight is the pasted area
  fraction *of that example* after clipping. (The official code uses one scalar per batch: the mean
  pasted area over the whole half-batch, so an example that received a tiny patch gets the same label
  weight as one that received a large patch. Per-example weights match the pixels exactly.)
* Both alphas > 0: the first half of the batch gets mixup, the second half CutMix (official); each half
  mixes within itself.
* alpha 0 turns a method off.
"""

from __future__ import annotations

import tensorflow as tf

from efficientnetv2_keras.data.image_ops import random_seed


def sample_beta(shape, alpha, seed):
    """Beta(alpha, alpha) from two stateless Gamma draws.

    Gamma is drawn in float64: with the small alphas of early progressive stages (e.g. 0.067) a float32
    Gamma draw underflows to 0 often enough to give 0/0.
    """
    seed_a, seed_b = tf.unstack(tf.random.split(seed, 2))
    a = tf.random.stateless_gamma(shape, seed_a, alpha=alpha, dtype=tf.float64)
    b = tf.random.stateless_gamma(shape, seed_b, alpha=alpha, dtype=tf.float64)
    total = a + b
    return tf.cast(tf.where(total > 0, a / tf.where(total > 0, total, 1.0), 0.5), tf.float32)


def _reversed(batch):
    # tf.reverse, not batch[::-1]: the negative-stride slice is ~20x slower on CPU (78 vs 4 ms for
    # 32 x 300 x 300 x 3 floats), which made mixing the slowest step of the pipeline.
    return tf.reverse(batch, axis=[0])


def _check_dense(labels):
    if not labels.dtype.is_floating or labels.shape.rank != 2:
        raise ValueError(
            "Mixup/CutMix need dense float labels of shape [batch, classes] (label_format 'one_hot' or "
            f"'multi_hot...'), got {labels.dtype.name} labels of shape {labels.shape}."
        )


def mixup(images, labels, alpha, seed=None):
    """Mixes each example with the reversed batch; returns (images, labels)."""
    _check_dense(labels)
    seed = random_seed() if seed is None else seed
    batch = tf.shape(images)[0]
    weight = sample_beta([batch], alpha, seed)
    weight = tf.maximum(weight, 1.0 - weight)  # official: keep the original image dominant
    image_weight = tf.cast(tf.reshape(weight, [-1, 1, 1, 1]), images.dtype)
    images = images * image_weight + _reversed(images) * (1.0 - image_weight)
    label_weight = tf.cast(weight[:, None], labels.dtype)
    labels = labels * label_weight + _reversed(labels) * (1.0 - label_weight)
    return images, labels


def cutmix_masks(batch, height, width, alpha, seed):
    """Per-example boolean masks [batch, height, width] of the pasted box."""
    area_seed, centre_seed = tf.unstack(tf.random.split(seed, 2))
    side_ratio = tf.sqrt(sample_beta([batch], alpha, area_seed))  # box area fraction ~ Beta(a, a)
    box_h = tf.cast(tf.round(side_ratio * tf.cast(height, tf.float32)), tf.int32)
    box_w = tf.cast(tf.round(side_ratio * tf.cast(width, tf.float32)), tf.int32)
    centre = tf.random.stateless_uniform([batch, 2], centre_seed)
    cy = tf.cast(centre[:, 0] * tf.cast(height, tf.float32), tf.int32)
    cx = tf.cast(centre[:, 1] * tf.cast(width, tf.float32), tf.int32)
    y0, x0 = cy - box_h // 2, cx - box_w // 2
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + box_h)[:, None])  # clipping happens implicitly
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + box_w)[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def cutmix(images, labels, alpha, seed=None):
    """Pastes a random box from the reversed batch into each example; label weight = pasted fraction."""
    _check_dense(labels)
    seed = random_seed() if seed is None else seed
    shape = tf.shape(images)
    masks = cutmix_masks(shape[0], shape[1], shape[2], alpha, seed)
    images = tf.where(masks[..., None], _reversed(images), images)
    pasted = tf.reduce_mean(tf.cast(masks, labels.dtype), axis=[1, 2])[:, None]
    labels = labels * (1.0 - pasted) + _reversed(labels) * pasted
    return images, labels


def mix_batch(images, labels, mixup_alpha=0.0, cutmix_alpha=0.0, seed=None):
    """Applies mixup and/or CutMix to a batch as configured (alpha 0 = off); see the module docstring."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0 (0 = off), got {mixup_alpha}, {cutmix_alpha}.")
    if not mixup_alpha and not cutmix_alpha:
        return images, labels
    seed = random_seed() if seed is None else seed
    mix_seed, cut_seed = tf.unstack(tf.random.split(seed, 2))
    if mixup_alpha and cutmix_alpha:
        half = tf.shape(images)[0] // 2
        images_a, labels_a = mixup(images[:half], labels[:half], mixup_alpha, mix_seed)
        images_b, labels_b = cutmix(images[half:], labels[half:], cutmix_alpha, cut_seed)
        images = tf.ensure_shape(tf.concat([images_a, images_b], 0), images.shape)
        labels = tf.ensure_shape(tf.concat([labels_a, labels_b], 0), labels.shape)
        return images, labels
    if mixup_alpha:
        return mixup(images, labels, mixup_alpha, mix_seed)
    return cutmix(images, labels, cutmix_alpha, cut_seed)
