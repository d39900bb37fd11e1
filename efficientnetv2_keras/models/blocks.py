"""The paper's building blocks (Figure 2): MBConv, Fused-MBConv and squeeze-and-excitation, as Keras layers.

Each block is a function `block(x, ...) -> y` that adds its layers to a functional graph, following
the released code's `MBConvBlock` and `FusedMBConvBlock` (google/automl `efficientnetv2/effnetv2_model.py`).
Layer names are keras.applications' (`block4a_expand_conv`, `block4a_se_reduce`, ...): weights transfer
between the two by name, so the names (and the order the layers are made in, which the random
initialization follows) must not change.
"""

import dataclasses

from keras import layers

from efficientnetv2_keras.models.batch_norm import FusedBatchNormalization
from efficientnetv2_keras.models.layers import StochasticDepth

# The released code's initializers (effnetv2_model.py `conv_kernel_initializer`,
# `dense_kernel_initializer`). Dense: uniform(+-1/sqrt(classes)). Configs, not instances: each
# layer deserializes its own initializer. An unseeded Keras initializer instance
# draws the same values on every call, so sharing one would start same-shaped layers identical.
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


@dataclasses.dataclass(frozen=True)
class BlockSettings:
    """What every block of one model shares: the activation and the BatchNormalization settings.

    bn_axis is the channel axis of the batched tensors: -1 (channels_last) or 1 (channels_first).
    """

    activation: str = "silu"
    bn_axis: int = -1
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3

    def batch_norm(self, name):
        return FusedBatchNormalization(axis=self.bn_axis, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                       name=name)

    def conv_bn_act(self, x, filters, kernel, stride, name, activate=True):
        """conv -> BN (-> activation): the layers `{name}_conv`, `{name}_bn`, `{name}_activation`."""
        x = conv2d(filters, kernel, stride, name + "_conv")(x)
        x = self.batch_norm(name + "_bn")(x)
        return layers.Activation(self.activation, name=name + "_activation")(x) if activate else x


def conv2d(filters, kernel, stride, name, use_bias=False, activation=None):
    """A 'same'-padded convolution with the released code's fan-out normal initializer."""
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias, activation=activation,
                         kernel_initializer=CONV_KERNEL_INITIALIZER, name=name)


def squeeze_excite(x, in_filters, se_ratio, settings, prefix):
    """Squeeze-and-excitation (paper Figure 2, "SE"): per-channel gates from the global average.

    The squeezed width comes from the block's *input* filters, not the expanded width
    (effnetv2_model.py `MBConvBlock`: `max(1, int(input_filters * se_ratio))`).
    """
    expanded = x.shape[settings.bn_axis]
    squeezed = max(1, int(in_filters * se_ratio))
    se = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "se_squeeze")(x)
    se = conv2d(squeezed, 1, 1, prefix + "se_reduce", use_bias=True, activation=settings.activation)(se)
    se = conv2d(expanded, 1, 1, prefix + "se_expand", use_bias=True, activation="sigmoid")(se)
    return layers.Multiply(name=prefix + "se_excite")([x, se])


def _residual(x, inputs, stride, in_filters, out_filters, drop_rate, block_fraction, prefix):
    """Stochastic depth on the branch, then the skip connection, when the shapes allow one."""
    if stride == 1 and in_filters == out_filters:
        x = StochasticDepth(drop_rate, block_fraction=block_fraction, name=prefix + "drop")(x)
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def mbconv_block(inputs, in_filters, out_filters, kernel, stride, expand_ratio, se_ratio, settings, prefix,
                 drop_rate=0.0, block_fraction=0.0):  # fmt: skip
    """MBConv (paper Figure 2, left; effnetv2_model.py `MBConvBlock`).

    1x1 expansion -> kxk depthwise conv (the stride) -> squeeze-excitation -> 1x1 linear projection,
    with a residual connection when the block keeps the shape.
    drop_rate: stochastic depth of this block (1 - survival); block_fraction: its global index / N.
    """
    x = inputs
    if expand_ratio != 1:  # expansion
        x = settings.conv_bn_act(x, in_filters * expand_ratio, 1, 1, prefix + "expand")
    # depthwise
    x = layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=CONV_KERNEL_INITIALIZER,
        name=prefix + "dwconv2",
    )(x)
    x = settings.batch_norm(prefix + "bn")(x)
    x = layers.Activation(settings.activation, name=prefix + "activation")(x)
    if 0 < se_ratio <= 1:  # squeeze-excitation
        x = squeeze_excite(x, in_filters, se_ratio, settings, prefix)
    # output: a linear projection
    x = settings.conv_bn_act(x, out_filters, 1, 1, prefix + "project", activate=False)
    return _residual(x, inputs, stride, in_filters, out_filters, drop_rate, block_fraction, prefix)


def fused_mbconv_block(inputs, in_filters, out_filters, kernel, stride, expand_ratio, se_ratio, settings, prefix,
                       drop_rate=0.0, block_fraction=0.0):  # fmt: skip
    """Fused-MBConv (paper Figure 2, right; effnetv2_model.py `FusedMBConvBlock`).

    One kxk conv (the stride) replaces MBConv's 1x1 expansion and depthwise conv; then
    squeeze-excitation (no released config uses it here) and a 1x1 linear projection. With expansion
    ratio 1 the kxk conv is itself the projection, and it is followed by an activation: the only
    block with an activated output. Residual connection as in MBConv.
    """
    x = inputs
    if expand_ratio != 1:  # the fused expansion
        x = settings.conv_bn_act(x, in_filters * expand_ratio, kernel, stride, prefix + "expand")
    if 0 < se_ratio <= 1:  # squeeze-excitation
        x = squeeze_excite(x, in_filters, se_ratio, settings, prefix)
    # output
    if expand_ratio == 1:
        x = settings.conv_bn_act(x, out_filters, kernel, stride, prefix + "project")
    else:
        x = settings.conv_bn_act(x, out_filters, 1, 1, prefix + "project", activate=False)
    return _residual(x, inputs, stride, in_filters, out_filters, drop_rate, block_fraction, prefix)
