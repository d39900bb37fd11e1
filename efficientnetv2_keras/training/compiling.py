"""A model compiled the way a recipe trains it: LR schedule, optimizer (EMA, weight decay), loss and metrics.

`CompileSettings` holds the recipe's choices as plain values (the recipe resolver, `training.recipe`,
reads them from the schema once); `compile_model` makes the Keras objects from them.
"""

import dataclasses
from typing import Optional, Union

from efficientnetv2_keras.training.losses import make_loss, make_metrics
from efficientnetv2_keras.training.optimizers import OptimizerSettings, make_optimizer
from efficientnetv2_keras.training.schedules import LRSettings, make_lr_schedule


@dataclasses.dataclass(frozen=True)
class CompileSettings:
    """What `model.compile` gets from a recipe, in plain values."""

    learning_rate: LRSettings
    optimizer: OptimizerSettings
    loss: str  # softmax or sigmoid
    label_smoothing: float
    label_format: Optional[str]  # "sparse" gets sparse losses and metrics; None: one-hot or multi-hot
    jit_compile: Union[bool, str]
    steps_per_execution: int


def compile_model(model, settings, steps_per_epoch, total_steps, multi_label=False, num_classes=None,
                  progress=None):
    """Compiles `model` with the LR schedule, optimizer (EMA, weight decay), loss and metrics of `settings`.

    multi_label: whether the labels are multi-hot (the recipe resolver's `is_multi_label`).
    progress: a `schedules.TrainingProgress` for stages with their own batch size (LR and EMA over
    training progress, see `schedules.make_lr_schedule`).

    Returns the optimizer (before any LossScaleOptimizer wrapping that `compile` does under
    mixed_float16; `model.optimizer` is the one in use).
    """
    schedule = make_lr_schedule(settings.learning_rate, steps_per_epoch, total_steps, progress=progress)
    optimizer = make_optimizer(settings.optimizer, schedule, model)
    classes = num_classes or model.output_shape[-1]
    model.compile(
        optimizer=optimizer,
        loss=make_loss(settings.loss, settings.label_smoothing, settings.label_format, multi_label),
        metrics=make_metrics(classes, settings.label_format, multi_label),
        jit_compile=settings.jit_compile,
        steps_per_execution=settings.steps_per_execution,
    )
    return optimizer
