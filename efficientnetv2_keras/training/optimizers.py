"""The optimizer of the recipes and weight decay that skips BatchNorm and bias parameters.

RMSProp with decay (rho) 0.9, momentum 0.9 and epsilon 1e-3 (§5.1; the released `build_optimizer`),
or SGD / momentum / Adam / AdamW. They are Keras' optimizers (same update rules, variables and saved
state) with the EMA-decay ramp (`ema.EMAWarmupMixin`), the coupled L2 term below, one fused
TensorFlow kernel per variable update and the square-root scaling rule's per-stage hyperparameters
(`StepUpdateMixin`). One difference from the released TF1 RMSProp remains: TF1 starts the mean-square
accumulator at 1.0, Keras at 0.0; the 5-epoch warmup from lr 0 covers the first steps, where that
matters.

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

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from efficientnetv2_keras.limits import OPTIMIZERS
from efficientnetv2_keras.training import fused_updates
from efficientnetv2_keras.training.ema import EMAWarmupMixin, batch_norm_statistics
from efficientnetv2_keras.training.schedules import training_progress

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


class StepUpdateMixin:
    """This step's hyperparameters once per step, then each variable's update in one fused op.

    Keras computes the step's scalars (learning-rate casts, Adam's bias corrections) again for every
    variable; here `step_values` computes them once per step (in the replica context under
    tf.distribute, passed to every variable's update) and, on TensorFlow, `_fused_update` applies each
    variable's update with TensorFlow's fused kernel (`fused_updates`). Where no kernel computes Keras'
    update (sparse gradients, bfloat16, centered RMSprop, RMSprop without momentum, amsgrad) or on
    another backend, Keras' own `update_step` runs, or the same formulas in keras ops when the square-
    root scaling rule changes the hyperparameters per stage. Keras' decoupled `weight_decay` (AdamW)
    is applied in the same per-variable update, with the step's learning rate. The optimizer's
    variables (slots, their order and names) are Keras', so checkpoints and backups load either way.

    The square-root scaling rule (Malladi et al. 2022, arXiv 2205.10287): when the learning rate is a
    `schedules.ProgressLR` whose stages follow the "sqrt" rule (or `progress` says so), an adaptive
    optimizer (RMSprop, Adam, AdamW) trains a stage of k-times the base batch with its moment
    averages' horizons shortened k times (1 - beta -> k (1 - beta), floored:
    `TrainingProgress.square_root_rule_decay`), epsilon / sqrt(k) (RMSprop: epsilon / k, as Keras adds
    it under the square root: sqrt(v + epsilon)) and decoupled weight decay x sqrt(k) (so the decay per
    image seen is kept, as the LR x sqrt(k) keeps the step's). The values are functions of the
    optimizer step, so a restored step restores them. Left alone: RMSprop's and SGD's heavy-ball
    momentum (shortening its horizon would shrink the effective step lr / (1 - momentum), which the LR
    rule already scales) and the coupled L2 term (part of the loss, whose gradient the rule scales).

    fused: False runs Keras' update everywhere (comparisons and benchmarks).
    """

    ADAPTIVE = False  # whether the square-root rule scales moment decays and epsilon
    SCALES_PER_STAGE = True  # applies batch-scaled stages' rule itself (read by progressive.learning_rate)

    def __init__(self, *args, fused=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)

    def scaling_progress(self):
        """The `TrainingProgress` whose stages scale this optimizer's hyperparameters, or None."""
        if not self.ADAPTIVE:
            return None
        progress = training_progress(self)
        return progress if progress is not None and progress.scales_moments else None

    def step_values(self, learning_rate):
        """This step's hyperparameters, float32 tensors by name ("learning_rate", "beta_1", ...)."""
        values = {"learning_rate": ops.cast(learning_rate, "float32")}
        progress = self.scaling_progress()
        if self.weight_decay is not None:
            scale = 1.0 if progress is None else progress.stage_value(self.iterations, _square_roots(progress.ratios))
            values["weight_decay"] = values["learning_rate"] * float(self.weight_decay) * scale
        values.update(self._rule_values(progress))
        return values

    def _stage_value(self, progress, per_stage, constant):
        """`per_stage(progress)` at this step under the square-root rule, else `constant` (float32)."""
        if progress is None:
            return ops.convert_to_tensor(float(constant), "float32")
        return progress.stage_value(self.iterations, per_stage(progress))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        super()._backend_update_step(grads, trainable_variables, self.step_values(learning_rate))

    def _apply_weight_decay(self, variables):
        """Keras applies decoupled weight decay here, per variable; `update_step` does it instead."""

    def update_step(self, gradient, variable, learning_rate):
        values = learning_rate if isinstance(learning_rate, dict) else self.step_values(learning_rate)
        values = {name: ops.cast(value, variable.dtype) for name, value in values.items()}
        if "weight_decay" in values and self._use_weight_decay(variable):
            self.assign_sub(variable, ops.multiply(variable, values["weight_decay"]))
        if self.fused and fused_updates.fusable(gradient, variable) and self._fused_update(
                ops.cast(gradient, variable.dtype), variable, values):
            return
        if self.scaling_progress() is not None:
            self._scaled_update(ops.cast(gradient, variable.dtype), variable, values)
        else:
            super().update_step(gradient, variable, values["learning_rate"])

    def _rule_values(self, progress):
        return {}

    def _fused_update(self, gradient, variable, values):
        """Applies the update with a TensorFlow kernel; False where none computes Keras' update."""
        return False

    def _scaled_update(self, gradient, variable, values):
        raise NotImplementedError

    def _slot(self, slots, variable):
        return slots[self._get_variable_index(variable)]

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}


def _square_roots(values):
    return [math.sqrt(v) for v in values]


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class RMSprop(EMAWarmupMixin, L2WeightDecayMixin, StepUpdateMixin, keras.optimizers.RMSprop):
    """keras.optimizers.RMSprop + `ema_warmup`, averaged BN statistics (`ema.EMAWarmupMixin`),
    `l2_weight_decay` (`L2WeightDecayMixin`), fused updates and the square-root rule (`StepUpdateMixin`)."""

    ADAPTIVE = True

    def _rule_values(self, progress):
        if progress is not None and self.centered:
            raise ValueError("The square-root scaling rule's per-stage rho and epsilon are not implemented for "
                             "centered RMSprop: use centered=False or progressive.lr_scaling=linear.")
        return {
            "rho": self._stage_value(progress, lambda p: p.square_root_rule_decay(self.rho), self.rho),
            "momentum": ops.convert_to_tensor(float(self.momentum), "float32"),
            # epsilon sits under Keras' square root (sqrt(v + epsilon)): the rule's epsilon / sqrt(k) on
            # sqrt(v) is epsilon / k here.
            "epsilon": self._stage_value(progress, lambda p: [self.epsilon / r for r in p.ratios], self.epsilon),
        }

    def _fused_update(self, gradient, variable, values):
        if self.centered or self.momentum <= 0:  # ResourceApplyRMSProp needs the momentum slot
            return False
        fused_updates.apply_rmsprop(variable, self._slot(self._velocities, variable),
                                    self._slot(self._momentums, variable), gradient, values)
        return True

    def _scaled_update(self, gradient, variable, values):
        momentum = self._slot(self._momentums, variable) if self.momentum > 0 else None
        fused_updates.rmsprop_update(self, variable, self._slot(self._velocities, variable), momentum, gradient,
                                     values)


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class SGD(EMAWarmupMixin, L2WeightDecayMixin, StepUpdateMixin, keras.optimizers.SGD):
    """keras.optimizers.SGD + `ema_warmup`, averaged BN statistics, `l2_weight_decay` and fused updates."""

    def _rule_values(self, progress):
        return {"momentum": ops.convert_to_tensor(float(self.momentum), "float32")}

    def _fused_update(self, gradient, variable, values):
        if self.momentum == 0:
            fused_updates.apply_gradient_descent(variable, gradient, values["learning_rate"])
        else:
            fused_updates.apply_keras_momentum(variable, self._slot(self.momentums, variable), gradient,
                                               values["learning_rate"], values["momentum"], self.nesterov)
        return True


class _AdamUpdates(StepUpdateMixin):
    """Adam's step values (betas, epsilon, bias corrections; per stage under the square-root rule) and
    its fused update, shared by Adam and AdamW."""

    ADAPTIVE = True

    def _rule_values(self, progress):
        if progress is not None and self.amsgrad:
            raise ValueError("The square-root scaling rule's per-stage betas and epsilon are not implemented "
                             "with amsgrad: use amsgrad=False or progressive.lr_scaling=linear.")
        steps_taken = ops.cast(self.iterations + 1, "float32")  # t of the bias corrections, 1 at the first step
        values = {"epsilon": self._stage_value(progress, lambda p: [self.epsilon / math.sqrt(r) for r in p.ratios],
                                               self.epsilon)}
        for name in ("beta_1", "beta_2"):
            beta = float(getattr(self, name))
            if progress is None:
                values[name] = ops.convert_to_tensor(beta, "float32")
                values[name + "_power"] = ops.power(values[name], steps_taken)
            else:
                # The bias correction of an average whose decay changes per stage: 1 - prod(beta_s).
                betas = progress.square_root_rule_decay(beta)
                values[name] = progress.stage_value(self.iterations, betas)
                values[name + "_power"] = progress.stage_product(steps_taken, betas)
        return values

    def _fused_update(self, gradient, variable, values):
        if self.amsgrad:
            return False
        fused_updates.apply_adam(variable, self._slot(self._momentums, variable),
                                 self._slot(self._velocities, variable), gradient, values)
        return True

    def _scaled_update(self, gradient, variable, values):
        fused_updates.adam_update(self, variable, self._slot(self._momentums, variable),
                                  self._slot(self._velocities, variable), gradient, values)


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class Adam(EMAWarmupMixin, L2WeightDecayMixin, _AdamUpdates, keras.optimizers.Adam):
    """keras.optimizers.Adam + `ema_warmup`, averaged BN statistics, `l2_weight_decay`, fused updates and
    the square-root rule."""


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class AdamW(EMAWarmupMixin, _AdamUpdates, keras.optimizers.AdamW):
    """keras.optimizers.AdamW (decoupled weight decay) + `ema_warmup`, averaged BN statistics, fused
    updates and the square-root rule."""


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
            value = weight_decay_loss(self.model, weight_decay)
            # The loggers hold float32 (TensorBoard converts to it): a diverging run's term past its range
            # is logged as inf rather than stopping the run with a conversion error.
            logs["l2_loss"] = value if value <= float(np.finfo(np.float32).max) else math.inf


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """A recipe's optimizer in plain values (its `train.*` keys, read by the recipe resolver, `training.recipe`)."""

    name: str  # rmsprop, sgd, momentum, adam or adamw
    weight_decay: float  # the coupled L2 term's wd (adamw: its decoupled decay)
    ema_decay: float  # 0: no EMA
    ema_warmup: bool
    ema_bn_statistics: bool
    gradient_clip_norm: float  # 0: no clipping
    rmsprop_rho: float
    momentum: float
    epsilon: float

    @property
    def l2_weight_decay(self):
        """The coupled L2 term's wd (0 for adamw, whose decay is decoupled and no loss term)."""
        return self.weight_decay if self.name != "adamw" else 0.0


def make_optimizer(settings, lr_schedule, model=None):
    """The optimizer of `settings` (an `OptimizerSettings`), with EMA and weight decay.

    Args:
      lr_schedule: a `LearningRateSchedule` (see `schedules.make_lr_schedule`) or a float.
      model: the model to train. Needed to average its BatchNorm statistics (ema_bn_statistics)
        and for adamw, which excludes BN/bias variables from its decoupled decay. rmsprop/sgd/momentum/
        adam get `l2_weight_decay=weight_decay` (the coupled L2 term, see the module docstring).
    Returns:
      A Keras optimizer (`use_ema` when ema_decay > 0). Under the "mixed_float16" policy
      `model.compile` wraps it in a `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling).
    """
    name = settings.name
    common = {
        "learning_rate": lr_schedule,
        "use_ema": settings.ema_decay > 0,
        "ema_momentum": settings.ema_decay if settings.ema_decay > 0 else 0.99,
        "ema_warmup": settings.ema_warmup,
        "global_clipnorm": settings.gradient_clip_norm or None,
    }
    average_statistics = settings.ema_decay > 0 and settings.ema_bn_statistics
    if average_statistics and model is None:
        raise ValueError("build_optimizer needs the model to average its BatchNorm statistics "
                         "(train.ema_bn_statistics=true), or set train.ema_bn_statistics=false.")
    if name == "adamw" and settings.weight_decay > 0 and model is None:
        raise ValueError("build_optimizer needs the model to exclude BatchNorm and bias variables from "
                         "adamw's weight decay (or set train.weight_decay=0).")
    l2 = {"l2_weight_decay": settings.weight_decay}

    if name == "rmsprop":
        optimizer = RMSprop(rho=settings.rmsprop_rho, momentum=settings.momentum, epsilon=settings.epsilon,
                            **l2, **common)
    elif name == "sgd":
        optimizer = SGD(**l2, **common)
    elif name == "momentum":
        optimizer = SGD(momentum=settings.momentum, **l2, **common)
    elif name == "adam":
        optimizer = Adam(epsilon=settings.epsilon, **l2, **common)
    elif name == "adamw":
        optimizer = AdamW(weight_decay=settings.weight_decay, epsilon=settings.epsilon, **common)
        if model is not None:
            _, excluded = split_weight_decay_variables(model)
            optimizer.exclude_from_weight_decay(var_list=excluded)
    else:
        raise ValueError(f"Unknown train.optimizer {name!r}; choose one of {OPTIMIZERS}.")
    if average_statistics:
        optimizer.average_statistics(batch_norm_statistics(model))
    # Stages with their own batch size: the EMA decay follows training progress like the LR does, and
    # under the square-root rule the adaptive optimizers' betas and epsilon follow the stages.
    optimizer.progress = getattr(lr_schedule, "progress", None)
    return optimizer


def __getattr__(name):
    # `build_optimizer(config, ...)`, the form that takes a whole recipe, belongs to the recipe resolver
    # (the one reader of the recipe schema); it is still importable from here.
    if name == "build_optimizer":
        from efficientnetv2_keras.training.recipe_settings import build_optimizer

        return build_optimizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
