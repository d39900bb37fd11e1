"""The learning rate of batch-scaled stages, for any Keras optimizer (`ProgressiveLearning`).

A stage of k-times the base batch trains with its `Stage.lr_scale` (k under the linear rule, sqrt(k)
under the square-root rule: `progressive.schedule`), and the learning-rate schedule runs over training
progress (the data seen, in steps of the base batch) rather than over optimizer steps, so its warmup
and decay cover the same images as without batch scaling. The recipes compile that schedule
themselves (`progressive.progress.ProgressLR`); for a model compiled by its user, `scale_learning_rate`
puts the optimizer's own learning rate under the same rule when `fit` starts:

* a float (Keras keeps it in a variable) becomes a constant base rate, x the stage's lr_scale;
* a `LearningRateSchedule` becomes the base schedule, evaluated at the training progress (its step
  counts steps of the base batch: give its decay_steps as if every step had the base batch), x the
  stage's lr_scale;
* a `ProgressLR` of the same stages (the recipes') is left as it is;
* any other callable cannot be evaluated at the training progress: refused, naming the fix.

The result is a function of the optimizer's step (`optimizer.iterations`), so a run resumed from a
backup continues with the learning rates of the uninterrupted run. The wrapping replaces Keras' LR
variable (as assigning a schedule to `optimizer.learning_rate` does); callbacks that assign floats
to the learning rate (ReduceLROnPlateau, LearningRateScheduler) then fail with Keras' own error.

The square-root rule's per-stage moment decays and epsilon (`training.optimizers.StepUpdateMixin`)
and the EMA over training progress (`progressive.progress`) are this package's optimizers' (`training.optimizers.Adam`,
`RMSprop`, `AdamW`, `SGD`): they read the stages from the wrapped learning rate. Keras' own adaptive
optimizers take the learning-rate part only; a warning says so.
"""

import warnings

import keras

from efficientnetv2_keras.progressive.progress import ProgressLR

# Keras' optimizers whose moment averages the square-root rule also scales (Malladi et al. 2022).
KERAS_ADAPTIVE_OPTIMIZERS = (keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.RMSprop)


def scale_learning_rate(optimizer, schedule, layout):
    """Puts `optimizer`'s learning rate under the batch-scaled `schedule`'s rule over its `layout`
    (module docstring); returns the `ProgressLR` in use. A LossScaleOptimizer's inner one is changed."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    scales = [stage.lr_scale for stage in schedule.stages]
    current = optimizer._learning_rate  # Keras keeps a float in a variable, which has no public getter
    if isinstance(current, ProgressLR):
        if _same_stages(current.progress, layout, scales, schedule.lr_scaling):
            return current
        raise ValueError(
            f"The optimizer's learning rate is a ProgressLR for other stages (steps {current.progress.steps}) than "
            f"the schedule's (steps {list(layout.stage_steps)}): compile with its base schedule, which "
            "ProgressiveLearning scales per stage."
        )
    if isinstance(current, keras.Variable):
        value = float(keras.ops.convert_to_numpy(current))
        # A constant schedule from Keras' own (x 1.0 per step): no warmup, the rate itself throughout.
        base = keras.optimizers.schedules.ExponentialDecay(value, decay_steps=1, decay_rate=1.0)
    elif isinstance(current, keras.optimizers.schedules.LearningRateSchedule):
        base = current
    else:
        raise ValueError(
            f"ProgressiveLearning scales the learning rate of batch-scaled stages, but the optimizer's learning_rate "
            f"is a {type(current).__name__}: compile with a float or a keras.optimizers.schedules.LearningRateSchedule, "
            "or build the schedule without batch_scaling."
        )
    scaled = ProgressLR(base, layout.stage_steps, layout.ratios, scales, rule=schedule.lr_scaling)
    optimizer.learning_rate = scaled
    _warn_if_partial(optimizer, schedule)
    return scaled


def _same_stages(progress, layout, scales, rule):
    return (list(progress.steps) == list(layout.stage_steps) and list(progress.ratios) == list(layout.ratios)
            and list(progress.lr_scales) == [float(s) for s in scales] and progress.rule == rule)


def _warn_if_partial(optimizer, schedule):
    # This package's optimizers (training.optimizers.StepUpdateMixin) apply every part of the rule
    # themselves; they say so with a class attribute, so that this layer needs no import of training.
    if getattr(optimizer, "SCALES_PER_STAGE", False):
        return
    missing = []
    if schedule.lr_scaling == "sqrt" and isinstance(optimizer, KERAS_ADAPTIVE_OPTIMIZERS):
        missing.append("the square-root rule's per-stage betas (rho) and epsilon")
    if getattr(optimizer, "use_ema", False):
        missing.append("the weight average over training progress")
    if missing:
        name = type(optimizer).__name__
        ours = f"efficientnetv2_keras.training.optimizers.{name} (the same update and variables)" if name in (
            "Adam", "AdamW", "RMSprop", "SGD") else "efficientnetv2_keras.training.optimizers' Adam, AdamW, RMSprop or SGD"
        warnings.warn(f"ProgressiveLearning scales {name}'s learning rate per stage, but not {' or '.join(missing)}: "
                      f"{ours} does all of it.", stacklevel=3)
