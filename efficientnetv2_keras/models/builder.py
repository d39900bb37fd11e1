"""One functional builder for any `ModelSpec`, and the keras.applications-style constructors.

Layer names follow keras.applications (`stem_conv`, `block4a_expand_conv`, ..., `top_conv`,
`predictions`), so weights transfer by name; block letters go a..z, then aa, ab, ... for stages with
more than 26 blocks (XL), where keras.applications' `chr(97 + j)` would run out of letters.

Deliberate differences from keras.applications, all following the released code (google/automl
`efficientnetv2/effnetv2_model.py`):
conv kernels are initialized with the untruncated fan-out normal, the head dropout defaults to the
per-variant rate (0.2-0.4, keras.applications uses 0.2 for all), and every residual block has a
`StochasticDepth` layer (keras.applications skips the first, whose rate is 0), so the rates can be
raised later. Inference outputs are identical given the same weights.
"""

import sys

import keras
from keras import layers

from efficientnetv2_keras.models.family import FUSED_MBCONV, get_model_spec
from efficientnetv2_keras.models.layers import AdjustableDropout, StochasticDepth

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

# ImageNet mean/std for B0-B3 (the V1 legacy pipeline they were trained with; keras.applications too).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_VARIANCE = (0.229**2, 0.224**2, 0.225**2)
MIN_INPUT_SIZE = 32

# Keras maps (and deserializes) functional graphs recursively: XL, ~1,200 layers deep, exceeds
# Python's default limit of 1,000 frames. Raised at import, so load_model works too; never lowered.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
POOLINGS = (None, "avg", "max")
INPUT_NORMALIZATIONS = ("imagenet", "symmetric")


def block_letters(index):
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', 27 -> 'ab', ..."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(97 + remainder) + letters
    return letters


def _conv(filters, kernel, stride, name, use_bias=False, activation=None, padding="same"):
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=CONV_KERNEL_INITIALIZER,
        name=name,
    )


def _block(x, stage, in_filters, stride, drop_rate, block_fraction, prefix, cfg):
    """One MBConv or Fused-MBConv block (paper Figure 2; effnetv2_model.py `MBConvBlock`, `FusedMBConvBlock`)."""
    bn_axis = cfg["bn_axis"]

    def batch_norm(name):
        return layers.BatchNormalization(
            axis=bn_axis, momentum=cfg["bn_momentum"], epsilon=cfg["bn_epsilon"], name=prefix + name
        )

    inputs = x
    expanded = in_filters * stage.expand_ratio
    fused = stage.block == FUSED_MBCONV
    if stage.expand_ratio != 1:
        # Fused-MBConv replaces the 1x1 expansion + depthwise conv by one kxk conv.
        kernel, conv_stride = (stage.kernel, stride) if fused else (1, 1)
        x = _conv(expanded, kernel, conv_stride, prefix + "expand_conv")(x)
        x = batch_norm("expand_bn")(x)
        x = layers.Activation(cfg["activation"], name=prefix + "expand_activation")(x)
    if not fused:
        x = layers.DepthwiseConv2D(
            stage.kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=CONV_KERNEL_INITIALIZER,
            name=prefix + "dwconv2",
        )(x)
        x = batch_norm("bn")(x)
        x = layers.Activation(cfg["activation"], name=prefix + "activation")(x)
    if 0 < stage.se_ratio <= 1:
        # Squeeze width comes from the block *input* filters, not the expanded width.
        squeezed = max(1, int(in_filters * stage.se_ratio))
        se = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "se_squeeze")(x)
        se = _conv(squeezed, 1, 1, prefix + "se_reduce", use_bias=True, activation=cfg["activation"])(se)
        se = _conv(expanded, 1, 1, prefix + "se_expand", use_bias=True, activation="sigmoid")(se)
        x = layers.Multiply(name=prefix + "se_excite")([x, se])
    if fused and stage.expand_ratio == 1:
        # The kxk conv is itself the projection; this is the only block with an activated output.
        x = _conv(stage.out_filters, stage.kernel, stride, prefix + "project_conv")(x)
        x = batch_norm("project_bn")(x)
        x = layers.Activation(cfg["activation"], name=prefix + "project_activation")(x)
    else:
        x = _conv(stage.out_filters, 1, 1, prefix + "project_conv")(x)
        x = batch_norm("project_bn")(x)
    if stride == 1 and in_filters == stage.out_filters:
        x = StochasticDepth(drop_rate, block_fraction=block_fraction, name=prefix + "drop")(x)
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def _layout(channels_first):
    """What input_shape means in the current image data format, for error messages."""
    if channels_first:
        return "(channels, height, width) (keras.config.image_data_format() is 'channels_first')"
    return "(height, width, channels) (keras.config.image_data_format() is 'channels_last')"


def _transposed_hint(input_shape, channels_first):
    """A hint when input_shape looks written for the other layout, e.g. (224, 224, 3) in NCHW."""
    channels = input_shape[-1] if channels_first else input_shape[0]
    if channels not in (1, 3, 4):
        return ""
    spatial = input_shape[:2] if channels_first else input_shape[1:]
    example = (3, *spatial) if channels_first else (*spatial, 3)
    return (
        f" {input_shape} looks like a shape for the other layout: input_shape is "
        f"{_layout(channels_first)}, e.g. {example}."
    )


def _input_layer(input_tensor, input_shape, channels_first, need_rgb):
    """The model input; `input_shape` excludes the batch axis, so channels are entry 0 or -1."""
    if input_shape is None:
        input_shape = (3, None, None) if channels_first else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must have 3 entries {_layout(channels_first)}, got {input_shape}."
        )
    channels = input_shape[0] if channels_first else input_shape[-1]
    spatial = input_shape[1:] if channels_first else input_shape[:2]
    if channels is None or channels < 1 or (need_rgb and channels != 3):
        raise ValueError(
            f"EfficientNetV2 expects RGB input with 3 channels, got input_shape={input_shape}, "
            f"which is {_layout(channels_first)}."
            + (_transposed_hint(input_shape, channels_first) or
               " Convert grayscale/RGBA images to RGB (e.g. tf.image.grayscale_to_rgb), or pass "
               "include_preprocessing=False and weights=None to build a model for other channel counts.")
        )
    for size in spatial:
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input height and width must be at least {MIN_INPUT_SIZE} (the network downsamples "
                f"32x), got input_shape={input_shape}, which is {_layout(channels_first)}."
                + (_transposed_hint(input_shape, channels_first) or
                   " Resize the images or pass None for any size.")
            )
    if input_tensor is None:
        return layers.Input(shape=input_shape), input_shape
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape), input_shape
    return input_tensor, input_shape


def build_model(
    model_name,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
    dropout_rate=None,
    survival_prob=0.8,
    bn_momentum=0.9,
    bn_epsilon=1e-3,
    activation="silu",
    input_normalization=None,
):
    """Builds any EfficientNetV2 variant (a name or a `ModelSpec`) as a Keras functional model.

    Arguments are those of `keras.applications.EfficientNetV2*`, plus:
      dropout_rate: head dropout; None = the variant's official rate (S 0.2, M 0.3, L/XL 0.4, ...).
      survival_prob: stochastic depth; block i of N keeps its residual branch with probability
        1 - (1 - survival_prob) * i / N (the released code's linear decay). 1.0 disables it.
      bn_momentum: 0.9 as in the released code and keras.applications; the paper text says 0.99.
      bn_epsilon, activation: as in the released code (1e-3, SiLU).
      input_normalization: what `include_preprocessing` applies to [0, 255] pixels: "imagenet"
        (ImageNet mean/std) or "symmetric" ((x - 128) / 128); None = the variant's (B0-B3
        "imagenet", S/M/L/XL "symmetric"). Weights trained with the other one need it changed, e.g.
        timm's B3 ImageNet-21k checkpoints ("symmetric").
    `weights`: None, "imagenet" (keras.applications' ImageNet weights, downloaded by Keras), or the
    path of a weights file (ours, or a keras.applications one: .h5, .weights.h5 or .keras).
    Dropout and stochastic-depth rates can be changed later with `set_regularization`.
    The layout is `keras.config.image_data_format()` at build time, as in keras.applications:
    channels_last models take [batch, height, width, 3] and `input_shape=(height, width, 3)`,
    channels_first ones [batch, 3, height, width] and `input_shape=(3, height, width)`. Weights are
    the same in both layouts, so weight files load into either.
    """
    spec = get_model_spec(model_name)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}.")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}.")
    if not 0.0 < survival_prob <= 1.0:
        raise ValueError(f"survival_prob must be in (0, 1], got {survival_prob}.")
    dropout_rate = spec.dropout_rate if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}.")
    if input_normalization is None:
        input_normalization = spec.input_normalization
    if input_normalization not in INPUT_NORMALIZATIONS:
        raise ValueError(
            f"input_normalization must be one of {INPUT_NORMALIZATIONS} or None, got {input_normalization!r}."
        )
    if weights is not None and not isinstance(weights, str) and not hasattr(weights, "__fspath__"):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path of a weights file, got {weights!r}."
        )

    # Every layer reads the global image data format when it is made; the model keeps that layout.
    channels_first = keras.config.image_data_format() == "channels_first"
    channels_axis = 1 if channels_first else -1  # of the batched tensors, for BN and Normalization
    img_input, input_shape = _input_layer(
        input_tensor, input_shape, channels_first, need_rgb=include_preprocessing or weights is not None
    )
    cfg = {
        "bn_axis": channels_axis,
        "bn_momentum": bn_momentum,
        "bn_epsilon": bn_epsilon,
        "activation": activation,
    }

    x = img_input
    if include_preprocessing:
        # Inputs are float pixels in [0, 255]. B0-B3 use ImageNet mean/std (V1 convention) along
        # the channel axis of either layout; S/M/L/XL map to [-1, 1) like the official (x - 128) / 128.
        if input_normalization == "imagenet":
            x = layers.Rescaling(scale=1.0 / 255, name="rescaling")(x)
            x = layers.Normalization(
                axis=channels_axis, mean=IMAGENET_MEAN, variance=IMAGENET_VARIANCE, name="normalization"
            )(x)
        else:
            x = layers.Rescaling(scale=1.0 / 128.0, offset=-1, name="rescaling")(x)

    x = _conv(spec.stem_filters, 3, 2, "stem_conv")(x)
    x = layers.BatchNormalization(
        axis=channels_axis, momentum=bn_momentum, epsilon=bn_epsilon, name="stem_bn"
    )(x)
    x = layers.Activation(activation, name="stem_activation")(x)

    stages = spec.scaled_stages()
    total_blocks = sum(stage.repeats for stage in stages)
    block_index = 0
    for stage_index, stage in enumerate(stages):
        for repeat in range(stage.repeats):
            first = repeat == 0
            block_fraction = block_index / total_blocks
            x = _block(
                x,
                stage,
                in_filters=stage.in_filters if first else stage.out_filters,
                stride=stage.stride if first else 1,
                drop_rate=(1.0 - survival_prob) * block_fraction,
                block_fraction=block_fraction,
                prefix=f"block{stage_index + 1}{block_letters(repeat)}_",
                cfg=cfg,
            )
            block_index += 1

    x = _conv(spec.head_width, 1, 1, "top_conv")(x)
    x = layers.BatchNormalization(
        axis=channels_axis, momentum=bn_momentum, epsilon=bn_epsilon, name="top_bn"
    )(x)
    # Under mixed precision the model's last layer computes in float32, so outputs are float32.
    last_is_activation = not include_top and pooling is None
    x = layers.Activation(
        activation, name="top_activation", dtype="float32" if last_is_activation else None
    )(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = AdjustableDropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=DENSE_KERNEL_INITIALIZER,
            bias_initializer="zeros",
            dtype="float32",
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool", dtype="float32")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool", dtype="float32")(x)

    inputs = img_input if input_tensor is None else keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name=name or spec.name)

    if weights is not None:
        from efficientnetv2_keras.models.weights import load_weights  # avoids an import cycle

        load_weights(model, weights, spec=spec)
    return model


def _constructor(variant):
    def constructor(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        include_preprocessing=True,
        name=None,
        **kwargs,
    ):
        return build_model(
            variant,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing,
            name=name,
            **kwargs,
        )

    spec = get_model_spec(variant)
    constructor.__name__ = "EfficientNetV2" + variant.upper()
    constructor.__qualname__ = constructor.__name__
    constructor.__doc__ = (
        f"Builds {spec.name} (official train size {spec.train_size}, eval size {spec.eval_size}).\n\n"
        "Same arguments as `keras.applications." + constructor.__name__ + "` (but `weights` "
        "defaults to None: nothing is downloaded unless asked), plus `dropout_rate`, "
        "`survival_prob`, `bn_momentum`, `bn_epsilon`, `activation`; see `build_model`.\n"
        "The default input shape is (None, None, 3), or (3, None, None) under "
        "keras.config.image_data_format() == 'channels_first': any image size >= 32 px."
    )
    return constructor


EfficientNetV2B0 = _constructor("b0")
EfficientNetV2B1 = _constructor("b1")
EfficientNetV2B2 = _constructor("b2")
EfficientNetV2B3 = _constructor("b3")
EfficientNetV2S = _constructor("s")
EfficientNetV2M = _constructor("m")
EfficientNetV2L = _constructor("l")
EfficientNetV2XL = _constructor("xl")
