"""The eight variants as keras.applications names them: `EfficientNetV2B0` ... `EfficientNetV2XL`.

As in keras.applications (keras/src/applications/efficientnet_v2.py), every constructor has the same
explicit signature and one docstring template, formatted per variant, documents every argument. They
take keras.applications' arguments plus this package's and pass each one by name to
`builder.build_model`. `weights` defaults to None (nothing is downloaded unless asked), unlike
keras.applications' "imagenet"; keras.applications has no XL.
"""

from efficientnetv2_keras.models.builder import build_model
from efficientnetv2_keras.models.family import get_model_spec

DOCSTRING = """Instantiates the EfficientNetV2-{size} architecture.

Reference:
- [EfficientNetV2: Smaller Models and Faster Training](https://arxiv.org/abs/2104.00298) (Tan & Le, ICML 2021)

The released code trains {name} at {train_size} px (the last progressive-learning stage) and evaluates it
at {eval_size} px; the model takes any size of at least 32 px. Inputs are float pixels in [0, 255]: the
model normalizes them itself (`include_preprocessing`). Layer names and weights are keras.applications',
so its weight files load here; the layout is `keras.config.image_data_format()` at build time.

Args:
    include_top: whether to include the classifier (global pooling, dropout, dense) on top of the network.
        Defaults to `True`.
    weights: `None` (random initialization), `"imagenet"` (keras.applications' ImageNet-1k weights,
        downloaded by Keras; not published for XL), or the path of a weights file: this package's
        (`model.save_weights`, or converted from timm by `efficientnetv2_keras.weights.convert_timm`) or a
        keras.applications one (.h5, .weights.h5 or .keras). Defaults to `None`.
    input_tensor: optional Keras tensor (the output of `keras.Input()`) to use as the image input.
    input_shape: optional shape tuple without the batch axis, `(height, width, 3)` (or `(3, height, width)`
        under channels_first). Defaults to `(None, None, 3)`: any size of at least 32 px.
    pooling: pooling of the features when `include_top` is `False`: `None` (the 4D output of the last
        convolution block), `"avg"` (global average pooling: a 2D output) or `"max"` (global max pooling).
    classes: number of classes of the classifier, when `include_top` is `True`. Defaults to 1000.
    classifier_activation: the classifier's activation, a string or callable; `None` returns logits.
        Defaults to `"softmax"`.
    include_preprocessing: whether the model normalizes [0, 255] pixels itself (see
        `input_normalization`). Defaults to `True`.
    name: the model's name. Defaults to `"{name}"`.
    dropout_rate: the dropout rate before the classifier; `None` = {dropout_rate:g}, the variant's rate in
        the released code's effnetv2_configs.py. Changeable after building (`set_regularization`).
    survival_prob: stochastic depth: block i of N keeps its residual branch with probability
        1 - (1 - survival_prob) * i / N (the released code's linear decay; paper §5.1: 0.8); 1.0 disables
        it. Changeable after building (`set_regularization`). Defaults to 0.8.
    bn_momentum: BatchNorm moving-average momentum: 0.9 as in the released code and keras.applications
        (the paper's text says 0.99). Defaults to 0.9.
    bn_epsilon: BatchNorm epsilon (the released code's). Defaults to 1e-3.
    activation: the activation of every block (the released code's SiLU). Defaults to `"silu"`.
    input_normalization: what `include_preprocessing` applies: `"imagenet"` (ImageNet mean/std) or
        `"symmetric"` ((x - 128) / 128); `None` = `"{input_normalization}"`, the one {name}'s released
        weights were trained with. Weights trained with the other one need it changed.
    classifier_initializer: the classifier kernel's initializer; `None` = the released code's uniform
        +-1/sqrt(classes). `"zeros"` starts every class at chance, which short from-scratch runs with few
        classes train faster from. Defaults to `None`.

Returns:
    A `keras.Model`.
"""


def _constructor(variant, function_name):
    """The constructor of one variant: the explicit signature below, every argument passed on by name."""

    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=1000,
                    classifier_activation="softmax", include_preprocessing=True, name=None, dropout_rate=None,
                    survival_prob=0.8, bn_momentum=0.9, bn_epsilon=1e-3, activation="silu", input_normalization=None,
                    classifier_initializer=None):
        return build_model(
            variant, include_top=include_top, weights=weights, input_tensor=input_tensor, input_shape=input_shape,
            pooling=pooling, classes=classes, classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing, name=name, dropout_rate=dropout_rate,
            survival_prob=survival_prob, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, activation=activation,
            input_normalization=input_normalization, classifier_initializer=classifier_initializer,
        )

    spec = get_model_spec(variant)
    constructor.__name__ = constructor.__qualname__ = function_name
    constructor.__doc__ = DOCSTRING.format(
        size=variant.upper(), name=spec.name, train_size=spec.train_size, eval_size=spec.eval_size,
        dropout_rate=spec.dropout_rate, input_normalization=spec.input_normalization,
    )
    return constructor


EfficientNetV2B0 = _constructor("b0", "EfficientNetV2B0")
EfficientNetV2B1 = _constructor("b1", "EfficientNetV2B1")
EfficientNetV2B2 = _constructor("b2", "EfficientNetV2B2")
EfficientNetV2B3 = _constructor("b3", "EfficientNetV2B3")
EfficientNetV2S = _constructor("s", "EfficientNetV2S")
EfficientNetV2M = _constructor("m", "EfficientNetV2M")
EfficientNetV2L = _constructor("l", "EfficientNetV2L")
EfficientNetV2XL = _constructor("xl", "EfficientNetV2XL")
