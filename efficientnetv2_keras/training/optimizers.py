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
the coupled one the recipe was tuned with. So the optimizers here take `l2_weight_decay=wd`
(`L2WeightDecayMixin`) and add wd * w, the gradient of that term, to the gradient of every decayed
variable before the update: the train step minimizes cross-entropy + L2 exactly as the released code
does, while the loss Keras reports (`loss`, `val_loss`, `evaluate`) stays the cross-entropy. The L2
term's value is `weight_decay_loss(model, wd)`, logged per epoch as `l2_loss` by `LogL2Loss`.
Decayed: trainable variables whose name is not bias/gamma/beta (conv, depthwise, SE and dense
kernels); BatchNorm/LayerNorm parameters and all biases are excluded. The term is added after the
replicas' gradients are summed (once per step, not per replica) and after gradient clipping, which
applies to the data gradient (`train.gradient_clip_norm`, 0 in every recipe). `optimizer="adamw"` uses
Keras' decoupled decay instead, with the same exclusions (give it AdamW-sized values such as 0.05).
"""

import math

import keras
import numpy as np
from keras import ops

from efficientnetv2_keras.hparams import OPTIMIZERS
from efficientnetv2_keras.training.ema import EMAWarmupMixin, batch_norm_statistics

# The released code's exclusions (efficientnetv2 `main.py`, the weight-decay term of `model_fn`).
EXCLUDED_NAMES = ("bias", "gamma", "beta")


def _variable_name(variable):
    return getattr(variable, "path", variable.name).split("/")[-1].split(":")[0]


def is_decayed(variable):
    """Whether the L2 weight decay applies: trainable and not named bias/gamma/beta (the released rule)."""
    name = _variable_name(variable)
    return bool(variable.trainable) and not any(token in name for token in EXCLUDED_NAMES)


def split_weight_decay_variables(model):
    """(decayed, excluded) trainable variables: kernels vs BatchNorm/LayerNorm parameters and biases."""
    decayed, excluded = [], []
    for variable in model.trainable_weights:
        (decayed if is_decayed(variable) else excluded).append(variable)
    return decayed, excluded


def weight_decay_loss(model, weight_decay):
    """The L2 term wd * sum(w^2) / 2 over the decayed variables (the released code's
    `weight_decay * tf.add_n([tf.nn.l2_loss(v) ...])`), as a Python float."""
    decayed, _ = split_weight_decay_variables(model)
    total = sum(float(np.sum(np.square(ops.convert_to_numpy(v).astype("float64")))) for v in decayed)
    return float(weight_decay) * 0.5 * total


class L2WeightDecayMixin:
    """Adds `l2_weight_decay * w` (the gradient of the L2 term) to the gradient of each decayed variable.

    Mix into a Keras optimizer class: `class RMSprop(EMAWarmupMixin, L2WeightDecayMixin, keras.optimizers.RMSprop)`.
    The decayed variables are chosen by name when the optimizer is built (`is_decayed`), so a saved and
    reloaded optimizer decays the same ones. Unlike Keras' `weight_decay` (decoupled), the term goes
    through the optimizer's update like the data gradient.
    """

    def __init__(self, *args, l2_weight_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if l2_weight_decay < 0 or not math.isfinite(l2_weight_decay):
            raise ValueError(f"l2_weight_decay must be >= 0, got {l2_weight_decay}.")
        self.l2_weight_decay = float(l2_weight_decay)
        self._l2_keys = frozenset()

    def build(self, variables):
        super().build(variables)
        self._l2_keys = frozenset(self._var_key(v) for v in variables if is_decayed(v))

    def update_step(self, gradient, variable, learning_rate):
        # Called per variable with the replicas' summed gradient (tf.distribute) after clipping.
        if self.l2_weight_decay and self._var_key(variable) in self._l2_keys:
            decay = ops.cast(self.l2_weight_decay, variable.dtype)
            gradient = ops.add(gradient, ops.multiply(decay, ops.cast(variable, gradient.dtype)))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2_weight_decay"] = self.l2_weight_decay
        return config


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class RMSprop(EMAWarmupMixin, L2WeightDecayMixin, keras.optimizers.RMSprop):
    """keras.optimizers.RMSprop + `ema_warmup`, averaged BN statistics (`ema.EMAWarmupMixin`) and
    `l2_weight_decay` (`L2WeightDecayMixin`)."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class SGD(EMAWarmupMixin, L2WeightDecayMixin, keras.optimizers.SGD):
    """keras.optimizers.SGD + `ema_warmup`, averaged BN statistics and `l2_weight_decay`."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class Adam(EMAWarmupMixin, L2WeightDecayMixin, keras.optimizers.Adam):
    """keras.optimizers.Adam + `ema_warmup`, averaged BN statistics and `l2_weight_decay`."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class AdamW(EMAWarmupMixin, keras.optimizers.AdamW):
    """keras.optimizers.AdamW (decoupled weight decay) + `ema_warmup` and averaged BN statistics."""


class LogL2Loss(keras.callbacks.Callback):
    """Adds `l2_loss`, the L2 weight-decay term of the current (raw) weights, to every epoch's logs.

    Keras' `loss` is the cross-entropy alone (the term is in the gradient, see `L2WeightDecayMixin`);
    this puts the other part of the objective next to it in log.csv, TensorBoard and the History.
    Place it before the loggers. Nothing is logged when the optimizer has no L2 term.
    """

    def on_epoch_end(self, epoch, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        weight_decay = getattr(optimizer, "l2_weight_decay", 0.0)
        if logs is not None and weight_decay:
            logs["l2_loss"] = weight_decay_loss(self.model, weight_decay)


def build_optimizer(config, lr_schedule, model=None):
    """The recipe's optimizer (`config.train`), with EMA and weight decay.

    Args:
      config: a `hparams.Config`.
      lr_schedule: a `LearningRateSchedule` (see `schedules.build_lr_schedule`) or a float.
      model: the model to train. Needed to average its BatchNorm statistics (train.ema_bn_statistics)
        and for adamw, which excludes BN/bias variables from its decoupled decay. rmsprop/sgd/momentum/
        adam get `l2_weight_decay=train.weight_decay` (the coupled L2 term, see the module docstring).
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
    average_statistics = train.ema_decay > 0 and train.ema_bn_statistics
    if average_statistics and model is None:
        raise ValueError("build_optimizer needs the model to average its BatchNorm statistics "
                         "(train.ema_bn_statistics=true), or set train.ema_bn_statistics=false.")
    if name == "adamw" and train.weight_decay > 0 and model is None:
        raise ValueError("build_optimizer needs the model to exclude BatchNorm and bias variables from "
                         "adamw's weight decay (or set train.weight_decay=0).")
    l2 = {"l2_weight_decay": train.weight_decay}

    if name == "rmsprop":
        optimizer = RMSprop(rho=train.rmsprop_rho, momentum=train.momentum, epsilon=train.optimizer_epsilon,
                            **l2, **common)
    elif name == "sgd":
        optimizer = SGD(**l2, **common)
    elif name == "momentum":
        optimizer = SGD(momentum=train.momentum, **l2, **common)
    elif name == "adam":
        optimizer = Adam(epsilon=train.optimizer_epsilon, **l2, **common)
    elif name == "adamw":
        optimizer = AdamW(weight_decay=train.weight_decay, epsilon=train.optimizer_epsilon, **common)
        if model is not None:
            _, excluded = split_weight_decay_variables(model)
            optimizer.exclude_from_weight_decay(var_list=excluded)
    else:
        raise ValueError(f"Unknown train.optimizer {name!r}; choose one of {OPTIMIZERS}.")
    if average_statistics:
        optimizer.average_statistics(batch_norm_statistics(model))
    # Stages with their own batch size: the EMA decay follows training progress like the LR does.
    optimizer.ema_progress = getattr(lr_schedule, "progress", None)
    return optimizer
