"""Learning-rate schedules of the paper's recipes (paper §5.1-5.3; the released code's `utils.py`).

ImageNet (§5.1): linear warmup from 0 to 0.016 * batch / 256 over 5 epochs, then x0.97 every 2.4 epochs
(staircase). ImageNet-21k and finetuning (§5.2, §5.3): warmup, then cosine decay.

The formulas are the released code's `WarmupLearningRateSchedule`: the decay is a function of the
global step counted from 0 (not from the end of the warmup), the warmup *replaces* it while
step < warmup_steps, and `min_learning_rate` floors the decayed value. So right after a 5-epoch warmup
the exponential schedule is already 0.97^2 below the peak (5 / 2.4 = 2 decay steps), and the cosine
covers `total_steps` from step 0. The decays themselves are Keras' `ExponentialDecay`, `CosineDecay`
and `PolynomialDecay`; `LinearWarmup` adds the warmup and the floor to any of them. Keras'
`CosineDecay(warmup_target=...)` instead starts its cosine at the end of the warmup; that is not the
released formula, so it is not used.

Keras optimizers call the schedule with `optimizer.iterations` before incrementing it: the first
update uses lr(0) = 0 during warmup, as the released code does.
"""

import dataclasses

import keras
from keras import ops

from efficientnetv2_keras.limits import LR_SCHEDULES
# Batch-scaled stages' progress and learning rate belong to progressive learning (TrainingProgress: importable
# from here as before).
from efficientnetv2_keras.progressive.progress import ProgressLR, TrainingProgress  # noqa: F401

LR_BASE_BATCH = 256  # §5.1: "0.016 * batch / 256" (0.256 at batch 4096)


def scaled_learning_rate(lr_base, batch_size, reference_batch=LR_BASE_BATCH):
    """The linear scaling rule of the recipes: lr_base * batch_size / 256."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    return float(lr_base) * float(batch_size) / float(reference_batch)


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `warmup_target` over `warmup_steps`, then `after_warmup(step)`.

    Args:
      after_warmup: a `LearningRateSchedule` evaluated at the global step (from 0), or a float
        (a constant learning rate).
      warmup_steps: steps of linear warmup; 0 = none.
      warmup_target: the learning rate reached at the end of the warmup (the peak).
      min_learning_rate: floor applied to `after_warmup` (not to the warmup ramp).
    """

    def __init__(self, after_warmup, warmup_steps, warmup_target, min_learning_rate=0.0, name="LinearWarmup"):
        super().__init__()
        if isinstance(after_warmup, dict):
            after_warmup = keras.optimizers.schedules.deserialize(after_warmup)
        if not isinstance(after_warmup, keras.optimizers.schedules.LearningRateSchedule):
            after_warmup = float(after_warmup)
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.after_warmup = after_warmup
        self.warmup_steps = int(warmup_steps)
        self.warmup_target = float(warmup_target)
        self.min_learning_rate = float(min_learning_rate)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if isinstance(self.after_warmup, float):
            decayed = ops.full_like(step, self.after_warmup)
        else:
            decayed = ops.cast(self.after_warmup(step), "float32")
        if self.min_learning_rate > 0:
            decayed = ops.maximum(decayed, self.min_learning_rate)
        if self.warmup_steps == 0:
            return decayed
        warmup = self.warmup_target * step / float(self.warmup_steps)
        return ops.where(step < float(self.warmup_steps), warmup, decayed)

    def get_config(self):
        after = self.after_warmup
        if not isinstance(after, float):
            after = keras.optimizers.schedules.serialize(after)
        return {
            "after_warmup": after,
            "warmup_steps": self.warmup_steps,
            "warmup_target": self.warmup_target,
            "min_learning_rate": self.min_learning_rate,
            "name": self.name,
        }


def exponential_decay_with_warmup(peak_lr, steps_per_epoch, warmup_epochs=5, decay_factor=0.97,
                                  decay_epochs=2.4, min_learning_rate=0.0):
    """§5.1: warmup to `peak_lr`, then x`decay_factor` every `decay_epochs` epochs (staircase)."""
    decay = keras.optimizers.schedules.ExponentialDecay(
        peak_lr, decay_steps=decay_epochs * steps_per_epoch, decay_rate=decay_factor, staircase=True
    )
    return LinearWarmup(decay, int(warmup_epochs * steps_per_epoch), peak_lr, min_learning_rate)


def cosine_decay_with_warmup(peak_lr, total_steps, warmup_steps, min_learning_rate=0.0):
    """§5.2-5.3: warmup to `peak_lr`, then 0.5 * peak * (1 + cos(pi * step / total_steps))."""
    decay = keras.optimizers.schedules.CosineDecay(peak_lr, decay_steps=total_steps, alpha=0.0)
    return LinearWarmup(decay, warmup_steps, peak_lr, min_learning_rate)


def linear_decay_with_warmup(peak_lr, total_steps, warmup_steps, min_learning_rate=0.0):
    """Warmup, then (1 - step / total_steps) * peak (the released code's 'linear')."""
    decay = keras.optimizers.schedules.PolynomialDecay(peak_lr, total_steps, end_learning_rate=0.0, power=1.0)
    return LinearWarmup(decay, warmup_steps, peak_lr, min_learning_rate)


def constant_with_warmup(peak_lr, warmup_steps, min_learning_rate=0.0):
    """Warmup, then `peak_lr` (the released finetuning configs' 'constant')."""
    return LinearWarmup(float(peak_lr), warmup_steps, peak_lr, min_learning_rate)


@dataclasses.dataclass(frozen=True)
class LRSettings:
    """A recipe's learning-rate schedule in plain values (its `train.lr_*` keys and batch size, read by the
    recipe resolver, `training.recipe`)."""

    kind: str  # exponential, cosine, linear or constant
    lr_base: float  # per 256 images
    lr_min: float  # per 256 images
    batch_size: int
    warmup_epochs: float
    decay_factor: float
    decay_epochs: float


def make_lr_schedule(settings, steps_per_epoch, total_steps, progress=None):
    """The schedule of `settings` (an `LRSettings`): peak and floor scaled by batch_size / 256.

    Args:
      steps_per_epoch: optimizer steps per epoch (warmup and exponential decay are in epochs).
      total_steps: steps of the whole run (cosine and linear decay reach their end there).
      progress: a `TrainingProgress` when stages have their own batch size (progressive
        `batch_scaling`): the schedule is then a `ProgressLR`, the recipe's schedule over base steps
        (`total_steps` is ignored for `progress.total_base_steps`) times each stage's batch ratio.
    """
    if progress is not None:
        base = make_lr_schedule(settings, steps_per_epoch, max(1, int(round(progress.total_base_steps))))
        return ProgressLR(base, progress.steps, progress.ratios, progress.lr_scales, rule=progress.rule)
    if steps_per_epoch <= 0 or total_steps <= 0:
        raise ValueError(
            f"steps_per_epoch and total_steps must be positive, got {steps_per_epoch} and {total_steps}."
        )
    peak = scaled_learning_rate(settings.lr_base, settings.batch_size)
    floor = scaled_learning_rate(settings.lr_min, settings.batch_size)
    warmup_steps = int(settings.warmup_epochs * steps_per_epoch)
    kind = settings.kind
    if kind == "exponential":
        return exponential_decay_with_warmup(
            peak, steps_per_epoch, settings.warmup_epochs, settings.decay_factor, settings.decay_epochs, floor
        )
    if kind == "cosine":
        return cosine_decay_with_warmup(peak, total_steps, warmup_steps, floor)
    if kind == "linear":
        return linear_decay_with_warmup(peak, total_steps, warmup_steps, floor)
    if kind == "constant":
        return constant_with_warmup(peak, warmup_steps, floor)
    raise ValueError(f"Unknown train.lr_schedule {kind!r}; choose one of {LR_SCHEDULES}.")


def training_progress(optimizer):
    """An optimizer's `TrainingProgress`: its `progress` attribute (set by `make_optimizer`), else its
    learning-rate schedule's (a `ProgressLR`, so a deserialized optimizer keeps it), else None."""
    progress = getattr(optimizer, "progress", None)
    return progress if progress is not None else getattr(optimizer._learning_rate, "progress", None)


def __getattr__(name):
    # `build_lr_schedule(config, ...)`, the form that takes a whole recipe, belongs to the recipe resolver
    # (the one reader of the recipe schema); it is still importable from here.
    if name == "build_lr_schedule":
        from efficientnetv2_keras.training.recipe_settings import build_lr_schedule

        return build_lr_schedule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
