"""Image ops on one uint8 image [H, W, 3], the RandAugment op set of the released code (google/automl
`efficientnetv2/autoaugment.py`) in TensorFlow, with PIL's semantics where the released code follows PIL.

Parameters are tensors or Python numbers; which value an op gets at a RandAugment magnitude is
`randaugment.RandAugment.parameters`' (and that module's docstring table).
"""

from __future__ import annotations

import math

import tensorflow as tf

FILL_VALUE = 128  # released `replace_value = [128] * 3`.


def random_seed() -> tf.Tensor:
    """A fresh stateless seed, for callers that did not pass one."""
    return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)


def _to_uint8(image_float):
    return tf.cast(tf.round(tf.clip_by_value(image_float, 0.0, 255.0)), tf.uint8)


def _uint8_values():
    """Every uint8 value as float32, for lookup tables. Built per call (inside the traced graph), never
    at import: a tensor created at import initialises TensorFlow's context, after which
    `tf.distribute.MultiWorkerMirroredStrategy` can no longer configure its collective ops."""
    return tf.range(256, dtype=tf.float32)


def _apply_lut(image, lut):
    """Maps pixel values through a lookup table: [256] for all channels or [3, 256] per channel.

    Point-wise ops are one gather instead of several float passes over the image (2-3x faster here).
    """
    lut = tf.cast(lut, tf.uint8)
    index = tf.cast(image, tf.int32)
    if lut.shape.rank == 2:
        return tf.gather(tf.reshape(lut, [-1]), index + tf.constant([0, 256, 512]))
    return tf.gather(lut, index)


def blend(degenerate, image, factor):
    """PIL ImageEnhance semantics: factor 1 returns `image`, 0 returns `degenerate`, >1 extrapolates."""
    degenerate = tf.cast(degenerate, tf.float32)
    return _to_uint8(degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate))


def autocontrast(image):
    """Stretches each channel to [0, 255]; a constant channel is left alone (PIL ImageOps.autocontrast)."""
    values = _uint8_values()
    lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float32)[:, None]
    hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float32)[:, None]
    stretched = _to_uint8((values - lo) * (255.0 / tf.maximum(hi - lo, 1.0)))  # [3, 256]
    return _apply_lut(image, tf.where(hi > lo, stretched, tf.cast(values, tf.uint8)))


def equalize(image):
    """Per-channel histogram equalisation with PIL's lookup table (ImageOps.equalize)."""
    channels_first = tf.cast(tf.reshape(tf.transpose(image, [2, 0, 1]), [3, -1]), tf.int32)
    hist = tf.math.bincount(channels_first, minlength=256, maxlength=256, axis=-1)  # [3, 256]
    bins = tf.range(256)
    last_nonzero = tf.reduce_max(tf.where(hist > 0, bins, -1), axis=1)
    last_count = tf.gather(hist, tf.maximum(last_nonzero, 0), batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last_count) // 255  # [3]
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], lut.dtype), lut[:, :-1]], axis=1), 0, 255)
    equalized = tf.gather(lut, channels_first, batch_dims=1)
    equalized = tf.where(step[:, None] > 0, equalized, channels_first)  # step 0: PIL returns the input
    return tf.transpose(tf.reshape(tf.cast(equalized, tf.uint8), [3, tf.shape(image)[0], -1]), [1, 2, 0])


def invert(image):
    return 255 - image


def posterize(image, bits):
    """Keeps the `bits` most significant bits (Python int 1..8; 8 = identity)."""
    shift = tf.constant(8 - int(bits), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    """Inverts pixels >= threshold (threshold 256 = identity, 0 = Invert)."""
    values = _uint8_values()
    return _apply_lut(image, tf.where(values < tf.cast(threshold, tf.float32), values, 255.0 - values))


def solarize_add(image, addition, threshold=128):
    """Adds `addition` to pixels below `threshold` (released: threshold 128), saturating at 255."""
    values = _uint8_values()
    added = tf.clip_by_value(values + tf.cast(addition, tf.float32), 0.0, 255.0)
    return _apply_lut(image, tf.where(values < threshold, added, values))


def color(image, factor):
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor):
    # Blend towards the mean gray level (PIL); the released code's "mean" is pixel count / 256.
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return _apply_lut(image, blend(mean, _uint8_values(), factor))


def brightness(image, factor):
    return _apply_lut(image, blend(0.0, _uint8_values(), factor))


def sharpness(image, factor):
    """Blends with PIL's SMOOTH-filtered image; border pixels keep their values (as PIL and released)."""
    x = tf.cast(image, tf.float32)[None]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0  # PIL SMOOTH
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], padding="VALID")[0]
    smooth = tf.pad(tf.round(tf.clip_by_value(smooth, 0.0, 255.0)), [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(smooth[1:-1, 1:-1, :1], tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior, smooth, x[0])
    return blend(degenerate, image, factor)


def _transform(image, transform, fill_value=FILL_VALUE):
    """Applies an output->input projective transform [a0 a1 a2 b0 b1 b2 c0 c1] (nearest, constant fill)."""
    transform = tf.cast(tf.reshape(tf.stack(transform), [1, 8]), tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=tf.cast(fill_value, tf.float32),
        interpolation="NEAREST",  # released (tfa image_ops default)
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(out[0], image.shape)


def rotate(image, degrees, fill_value=FILL_VALUE):
    """Rotates about the image centre by `degrees`."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    shape = tf.cast(tf.shape(image), tf.float32)
    cy, cx = (shape[0] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0
    zero = tf.constant(0.0)
    return _transform(
        image,
        [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy, zero, zero],
        fill_value,
    )


def shear_x(image, shear, fill_value=FILL_VALUE):
    s, one, zero = tf.cast(shear, tf.float32), tf.constant(1.0), tf.constant(0.0)
    return _transform(image, [one, s, zero, zero, one, zero, zero, zero], fill_value)


def shear_y(image, shear, fill_value=FILL_VALUE):
    s, one, zero = tf.cast(shear, tf.float32), tf.constant(1.0), tf.constant(0.0)
    return _transform(image, [one, zero, zero, s, one, zero, zero, zero], fill_value)


def _shift(image, pixels, axis, fill_value):
    """Moves the content by round(pixels) along `axis` (pad + slice: a copy, ~5x faster than a transform)."""
    size = tf.shape(image)[axis]
    shift = tf.clip_by_value(tf.cast(tf.round(pixels), tf.int32), -size, size)
    pad = tf.abs(shift)
    paddings = tf.tensor_scatter_nd_update(tf.zeros([3, 2], tf.int32), [[axis, 0], [axis, 1]], tf.stack([pad, pad]))
    padded = tf.pad(image, paddings, constant_values=tf.cast(fill_value, image.dtype))
    begin = tf.tensor_scatter_nd_update(tf.zeros([3], tf.int32), [[axis]], [pad - shift])
    return tf.ensure_shape(tf.slice(padded, begin, tf.shape(image)), image.shape)


def translate_x(image, pixels, fill_value=FILL_VALUE):
    """Moves the content right by `pixels` (left when negative), filling the uncovered band."""
    return _shift(image, pixels, 1, fill_value)


def translate_y(image, pixels, fill_value=FILL_VALUE):
    """Moves the content down by `pixels` (up when negative), filling the uncovered band."""
    return _shift(image, pixels, 0, fill_value)


def cutout(image, pad_size, seed, fill_value=FILL_VALUE):
    """Fills a (2 pad_size)^2 square at a uniformly random centre, clipped at the borders (released).

    `fill_value` may be a scalar or a tensor broadcastable to the image (finetuning fills with noise).
    """
    shape = tf.shape(image)
    centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32) % shape[:2]
    pad = tf.cast(pad_size, tf.int32)
    rows = tf.range(shape[0])
    cols = tf.range(shape[1])
    in_rows = (rows >= centre[0] - pad) & (rows < centre[0] + pad)
    in_cols = (cols >= centre[1] - pad) & (cols < centre[1] + pad)
    mask = (in_rows[:, None] & in_cols[None, :])[:, :, None]
    fill = tf.cast(tf.broadcast_to(tf.cast(fill_value, image.dtype), tf.shape(image)), image.dtype)
    return tf.where(mask, fill, image)
