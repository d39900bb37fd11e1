"""The optimizer of the recipes and weight decay that skips BatchNorm and bias parameters.

RMSProp with decay (rho) 0.9, momentum 0.9 and epsilon 1e-3 (§5.1; the released `build_optimizer`),
or SGD / momentum / Adam / AdamW. Keras' optimizers do the work; the classes here only add the
EMA-decay ramp (`ema.EMAWarmupMixin`). One difference from the released TF1 RMSProp remains: TF1
starts the mean-square accumulator at 1.0, Keras at 0.0; the 5-epoch warmup from lr 0 covers the
first steps, where that matters.

Weight decay: the paper's "weight decay 1e-5" is, in the released code, an L2 *loss term*
wd * sum(||w||^2 / 2) over the variables whose names are not bias/gamma/beta, so its gradient wd * w
goes through RMSProp's normalization like the data gradient. Keras' `weight_decay=` argument is the
decoupled kind (w -= lr * wd * w after the step), which at wd = 1e-5 is a far weaker regularizer than
the coupled one the recipe was tuned with. So `apply_weight_decay` attaches an L2 regularizer
(`WeightDecayL2`) to every trainable conv/dense kernel, and Keras adds it to the loss (scaled per
replica under tf.distribute). BatchNorm/LayerNorm parameters and all biases are excluded. The
regularizers live on the variables, not in layer configs, so saved models carry no weight decay
(finetuning a saved model does not inherit it). `optimizer="adamw"` uses Keras' decoupled decay
instead, with the same exclusions (give it AdamW-sized values such as 0.05).
"""

import math

import keras
from keras import ops

from efficientnetv2_keras.hparams import OPTIMIZERS
from efficientnetv2_keras.training.ema import EMAWarmupMixin

EXCLUDED_NAMES = ("bias", "gamma", "beta")  # the released code's exclusions (REFERENCE §3.5)
NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class RMSprop(EMAWarmupMixin, keras.optimizers.RMSprop):
    """keras.optimizers.RMSprop + `ema_warmup` (see `ema.EMAWarmupMixin`)."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class SGD(EMAWarmupMixin, keras.optimizers.SGD):
    """keras.optimizers.SGD + `ema_warmup`."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class Adam(EMAWarmupMixin, keras.optimizers.Adam):
    """keras.optimizers.Adam + `ema_warmup`."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class AdamW(EMAWarmupMixin, keras.optimizers.AdamW):
    """keras.optimizers.AdamW + `ema_warmup`."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class WeightDecayL2(keras.regularizers.Regularizer):
    """weight_decay * sum(w^2) / 2: the released code's `weight_decay * tf.nn.l2_loss(w)`."""

    def __init__(self, weight_decay):
        self.weight_decay = float(weight_decay)

    def __call__(self, x):
        return ops.multiply(ops.cast(self.weight_decay * 0.5, x.dtype), ops.sum(ops.square(x)))

    def get_config(self):
        return {"weight_decay": self.weight_decay}


def _variable_name(variable):
    return getattr(variable, "path", variable.name).split("/")[-1].split(":")[0]


def split_weight_decay_variables(model):
    """(decayed, excluded) trainable variables: kernels vs BatchNorm/LayerNorm parameters and biases."""
    normalization = {
        id(v)
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, NORMALIZATION_LAYERS)
        for v in layer.weights
    }
    decayed, excluded = [], []
    for variable in model.trainable_weights:
        name = _variable_name(variable)
        skip = id(variable) in normalization or any(token in name for token in EXCLUDED_NAMES)
        (excluded if skip else decayed).append(variable)
    return decayed, excluded


def apply_weight_decay(model, weight_decay):
    """Adds the L2 weight-decay term to the model's loss (0 removes it); returns the decayed variables.

    Call before compiling; Keras adds `model.losses` to the training loss. Layers' own regularizers
    (other than ones set here) are left alone.
    """
    if weight_decay < 0 or not math.isfinite(weight_decay):
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    decayed, excluded = split_weight_decay_variables(model)
    regularizer = WeightDecayL2(weight_decay) if weight_decay > 0 else None
    for variable in decayed:
        if variable.regularizer is None or isinstance(variable.regularizer, WeightDecayL2):
            variable.regularizer = regularizer
    for variable in excluded:
        if isinstance(variable.regularizer, WeightDecayL2):
            variable.regularizer = None
    return decayed if regularizer is not None else []


def build_optimizer(config, lr_schedule, model=None):
    """The recipe's optimizer (`config.train`), with EMA and weight decay.

    Args:
      config: a `hparams.Config`.
      lr_schedule: a `LearningRateSchedule` (see `schedules.build_lr_schedule`) or a float.
      model: the model to train. Weight decay needs it: rmsprop/sgd/momentum/adam add the L2 term to
        the model (`apply_weight_decay`); adamw excludes BN/bias variables from its decoupled decay.
        Without a model, weight decay must be 0.
    Returns:
      A Keras optimizer (`use_ema` when train.ema_decay > 0). Under the "mixed_float16" policy
      `model.compile` wraps it in a `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
    """
    train = config.train
    name = train.optimizer
    common = {
        "learning_rate": lr_schedule,
        "use_ema": train.ema_decay > 0,
        "ema_momentum": train.ema_decay if train.ema_decay > 0 else 0.99,
        "ema_warmup": train.ema_warmup,
        "global_clipnorm": train.gradient_clip_norm or None,
    }
    if train.weight_decay > 0 and model is None:
        raise ValueError("build_optimizer needs the model to apply train.weight_decay (or set it to 0).")

    if name == "rmsprop":
        optimizer = RMSprop(rho=train.rmsprop_rho, momentum=train.momentum, epsilon=train.optimizer_epsilon, **common)
    elif name == "sgd":
        optimizer = SGD(**common)
    elif name == "momentum":
        optimizer = SGD(momentum=train.momentum, **common)
    elif name == "adam":
        optimizer = Adam(epsilon=train.optimizer_epsilon, **common)
    elif name == "adamw":
        optimizer = AdamW(weight_decay=train.weight_decay, epsilon=train.optimizer_epsilon, **common)
    else:
        raise ValueError(f"Unknown train.optimizer {name!r}; choose one of {OPTIMIZERS}.")

    if model is not None:
        if name == "adamw":
            apply_weight_decay(model, 0.0)  # no coupled term on top of the decoupled one
            _, excluded = split_weight_decay_variables(model)
            optimizer.exclude_from_weight_decay(var_list=excluded)
        else:
            apply_weight_decay(model, train.weight_decay)
    return optimizer
