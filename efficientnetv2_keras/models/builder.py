"""One functional builder for any `ModelSpec`, and the `weights=` argument of every constructor.

`build_model` makes the stem, then every stage's blocks (`blocks.fused_mbconv_block`,
`blocks.mbconv_block`, paper Figure 2), then the head. Layer names follow keras.applications
(`stem_conv`, `block4a_expand_conv`, ..., `top_conv`, `predictions`), so weights transfer by name;
block letters go a..z, then aa, ab, ... for stages with more than 26 blocks (XL), where
keras.applications' `chr(97 + j)` would run out of letters.

Deliberate differences from keras.applications, all following the released code (google/automl
`efficientnetv2/effnetv2_model.py`):
conv kernels are initialized with the untruncated fan-out normal, the head dropout defaults to the
per-variant rate (0.2-0.4, keras.applications uses 0.2 for all), and every residual block has a
`StochasticDepth` layer (keras.applications skips the first, whose rate is 0), so the rates can be
raised later. Inference outputs are identical given the same weights.

The constructors (`EfficientNetV2S`, ...) are `applications.py`'s. `load_weights` (the `weights=`
argument) lives here because loading our own weights file while keeping a model's head builds a model
of the file's shape; the transfer by layer name is `weights.py`'s.
"""

import os

import keras
from keras import layers

from efficientnetv2_keras.limits import INPUT_NORMALIZATIONS, MIN_MODEL_IMAGE_SIZE
from efficientnetv2_keras.models.blocks import (
    DENSE_KERNEL_INITIALIZER,
    BlockSettings,
    conv2d,
    fused_mbconv_block,
    mbconv_block,
)
from efficientnetv2_keras.models.deep_graphs import allow_deep_graphs
from efficientnetv2_keras.models.family import FUSED_MBCONV, get_model_spec
from efficientnetv2_keras.models.layers import AdjustableDropout
from efficientnetv2_keras.models.weights import (
    WeightsMismatchError,
    check_input_normalization,
    keras3_weights_layout,
    load_checked,
    load_imagenet_weights,
    load_weights_from_keras_applications,
    model_spec_of,
    transfer_weights,
)

# ImageNet mean/std for B0-B3 (the V1 legacy pipeline they were trained with; keras.applications too).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_VARIANCE = (0.229**2, 0.224**2, 0.225**2)
POOLINGS = (None, "avg", "max")


def block_letters(index):
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', 27 -> 'ab', ..."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(97 + remainder) + letters
    return letters


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
        if size is not None and size < MIN_MODEL_IMAGE_SIZE:
            raise ValueError(
                f"Input height and width must be at least {MIN_MODEL_IMAGE_SIZE} (the network downsamples "
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
    classifier_initializer=None,
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
        "imagenet", S/M/L/XL "symmetric"); e.g. timm's B3 ImageNet-21k weights need "symmetric".
      classifier_initializer: the `predictions` kernel's; None = the released code's ("zeros": chance).
    `weights`: None, "imagenet" (keras.applications', downloaded by Keras), or the path of a weights file
    (ours, or keras.applications' .h5, .weights.h5 or .keras). Rates change later: `set_regularization`.
    The layout is `keras.config.image_data_format()` at build time, as in keras.applications:
    channels_last models take [batch, height, width, 3] and `input_shape=(height, width, 3)`,
    channels_first ones [batch, 3, height, width] and `input_shape=(3, height, width)`. Weights are
    the same in both layouts, so weight files load into either.
    """
    spec = get_model_spec(model_name)
    dropout_rate, input_normalization = _check_arguments(
        spec, pooling, classes, survival_prob, dropout_rate, input_normalization, weights)
    classifier_initializer = _classifier_initializer(classifier_initializer)
    allow_deep_graphs()  # XL is deeper than Python's default recursion limit allows Keras to connect
    # Every layer reads the global image data format when it is made; the model keeps that layout.
    channels_first = keras.config.image_data_format() == "channels_first"
    channels_axis = 1 if channels_first else -1  # of the batched tensors, for BN and Normalization
    img_input, input_shape = _input_layer(
        input_tensor, input_shape, channels_first, need_rgb=include_preprocessing or weights is not None
    )
    settings = BlockSettings(activation, channels_axis, bn_momentum, bn_epsilon)
    x = _normalize_input(img_input, input_normalization, channels_axis) if include_preprocessing else img_input
    x = settings.conv_bn_act(x, spec.stem_filters, 3, 2, "stem")
    x = _stages(x, spec, settings, survival_prob)
    x = _head(x, spec, settings, include_top, pooling, classes, classifier_activation, dropout_rate,
              classifier_initializer)
    inputs = img_input if input_tensor is None else keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name=name or spec.name)
    if weights is not None:
        load_weights(model, weights, spec=spec)
    return model


def _check_arguments(spec, pooling, classes, survival_prob, dropout_rate, input_normalization, weights):
    """Raises on a bad argument; returns (dropout_rate, input_normalization) with the variant's defaults."""
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
    return dropout_rate, input_normalization


def _normalize_input(x, input_normalization, channels_axis):
    """Float pixels in [0, 255] -> the network's input range. B0-B3 use ImageNet mean/std (V1 convention)
    along the channel axis of either layout; S/M/L/XL map to [-1, 1) like the official (x - 128) / 128."""
    if input_normalization == "imagenet":
        x = layers.Rescaling(scale=1.0 / 255, name="rescaling")(x)
        return layers.Normalization(
            axis=channels_axis, mean=IMAGENET_MEAN, variance=IMAGENET_VARIANCE, name="normalization"
        )(x)
    return layers.Rescaling(scale=1.0 / 128.0, offset=-1, name="rescaling")(x)


def _stages(x, spec, settings, survival_prob):
    """Every stage's blocks (paper Figure 2, Table 4); block i of N drops its residual branch with
    probability (1 - survival_prob) * i / N (the released code's linear decay)."""
    stages = spec.scaled_stages()
    total_blocks = sum(stage.repeats for stage in stages)
    block_index = 0
    for stage_index, stage in enumerate(stages):
        block = fused_mbconv_block if stage.block == FUSED_MBCONV else mbconv_block
        for repeat in range(stage.repeats):
            first = repeat == 0
            block_fraction = block_index / total_blocks
            x = block(
                x,
                in_filters=stage.in_filters if first else stage.out_filters,
                out_filters=stage.out_filters,
                kernel=stage.kernel,
                stride=stage.stride if first else 1,
                expand_ratio=stage.expand_ratio,
                se_ratio=stage.se_ratio,
                settings=settings,
                prefix=f"block{stage_index + 1}{block_letters(repeat)}_",
                drop_rate=(1.0 - survival_prob) * block_fraction,
                block_fraction=block_fraction,
            )
            block_index += 1
    return x


def _classifier_initializer(identifier):
    """None: the released code's uniform +-1/sqrt(classes). With few classes its first logits spread over
    several units and the first loss lies far above ln(classes) (B0, 10 classes: ~6 against 2.3), which a
    short run from scratch spends its first epochs undoing; "zeros" starts every class at chance."""
    if identifier is None:
        return DENSE_KERNEL_INITIALIZER
    try:
        return keras.initializers.get(identifier)
    except ValueError as error:
        raise ValueError(f"classifier_initializer: {identifier!r} is not a Keras initializer ({error}); use None "
                         "(the released code's), 'zeros' or a keras.initializers object.") from None


def _head(x, spec, settings, include_top, pooling, classes, classifier_activation, dropout_rate,
          classifier_initializer=DENSE_KERNEL_INITIALIZER):
    """1x1 conv to the head width, BatchNorm, activation; then the classifier, or pooling, or nothing."""
    x = conv2d(spec.head_width, 1, 1, "top_conv")(x)
    x = settings.batch_norm("top_bn")(x)
    # Under mixed precision the model's last layer computes in float32, so outputs are float32.
    last_is_activation = not include_top and pooling is None
    x = layers.Activation(
        settings.activation, name="top_activation", dtype="float32" if last_is_activation else None
    )(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = AdjustableDropout(dropout_rate, name="top_dropout")(x)
        return layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=classifier_initializer,
            bias_initializer="zeros",
            dtype="float32",
            name="predictions",
        )(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool", dtype="float32")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool", dtype="float32")(x)
    return x


# ------------------------------------------------------------------------------------------------
# The `weights=` argument.
# ------------------------------------------------------------------------------------------------


def load_weights(model, weights, spec=None, skip_head=False):
    """The `weights=` argument of the model constructors.

    "imagenet": keras.applications' ImageNet-1k weights (downloaded and cached by Keras).
    A path: a weights file of this package (`model.save_weights`, or converted by
    `efficientnetv2_keras.weights.convert_timm`), or any keras.applications file (see
    `load_weights_from_keras_applications`). A converted file's JSON (`weights_info_path`) must agree
    with the model's input normalization.
    """
    spec = model_spec_of(model, spec)
    if weights == "imagenet":
        return load_imagenet_weights(model, spec, skip_head)
    if isinstance(weights, str) and weights.startswith("imagenet"):
        raise ValueError(
            f"weights={weights!r} is not available as a Keras download (keras.applications only "
            "hosts ImageNet-1k weights). Convert such a checkpoint to a Keras weights file and pass "
            "its path, or use weights='imagenet' or None."
        )
    path = os.fspath(weights)
    if path.endswith(".weights.h5") and os.path.exists(path):
        check_input_normalization(model, path)
        ours, classes = keras3_weights_layout(path)
        if ours:
            return _load_our_weights_file(model, path, spec, classes, skip_head)
    return load_weights_from_keras_applications(model, path, skip_head=skip_head, spec=spec)


def _load_our_weights_file(model, path, spec, classes, skip_head):
    """A `.weights.h5` from `save_weights` of one of our models (Keras restores it structurally)."""
    if not skip_head:
        backup = model.get_weights()
        try:
            load_checked(model, path)
        except ValueError as error:
            model.set_weights(backup)  # Keras assigns layer by layer: undo a partial load
            raise WeightsMismatchError(
                f"{path!r} was saved from a different model than {model.name!r} (another variant, "
                f"include_top or class count; pass skip_head=True to keep this model's head): {error}"
            ) from None
        return model
    # Keep our head: read the file into a model of the file's own shape, transfer by name.
    errors = []
    for include_preprocessing in (True, False):  # the file does not record it
        source = build_model(spec, include_top=classes is not None, classes=classes or 1000,
                             include_preprocessing=include_preprocessing)
        try:
            load_checked(source, path)
        except ValueError as error:
            errors.append(str(error))
            continue
        return transfer_weights(model, source, repr(path), skip_head=True)
    raise WeightsMismatchError(f"{path!r} does not fit {spec.name} with {classes} classes: {errors[-1]}")


def load_pretrained(model, checkpoint, skip_head=True, spec=None):
    """Loads pretrained weights into `model` for finetuning, keeping its own classifier when `skip_head`.

    The recipes' `model.init_checkpoint`. Checkpoints written by this package's training hold the EMA
    weights (they are saved with the EMA swapped in), which is what the released code's
    `ft_init_ema=True` picks from a TF1 checkpoint.

    Args:
      model: an EfficientNetV2 model of this package (any class count).
      checkpoint: "imagenet" (keras.applications weights, downloaded by Keras), a `.keras` model file,
        a `.weights.h5` file (ours or keras.applications'), or a keras.applications `.h5` file.
      skip_head: leave the `predictions` layer as it is (transfer learning to another class count).
      spec: the variant, when `model.name` is not the variant's name.
    Raises:
      FileNotFoundError, WeightsMismatchError (another variant; nothing is assigned).
    """
    if not (isinstance(checkpoint, str) and checkpoint.startswith("imagenet")):  # downloaded by Keras
        checkpoint = os.fspath(checkpoint)
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(f"Pretrained checkpoint not found: {checkpoint!r} (model.init_checkpoint).")
    return load_weights(model, checkpoint, spec=spec, skip_head=skip_head)
