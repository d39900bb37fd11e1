"""Training progress over batch-scaled stages: optimizer steps of different batch sizes counted in steps
of the base batch (`TrainingProgress`), and a learning-rate schedule defined over that progress and
scaled per stage (`ProgressLR`). The recipes' LR schedule, the EMA and this package's optimizers follow
it (`training.schedules`, `training.optimizers`); `progressive.learning_rate` puts a user's compiled
learning rate under it.
"""

import math

import keras
from keras import ops

from efficientnetv2_keras.limits import LR_SCALING_RULES
from efficientnetv2_keras.progressive.stages import MIN_SCALED_DECAY


class TrainingProgress:
    """Maps the optimizer step to training progress when stages train with different batch sizes.

    Stage i runs `steps[i]` optimizer steps of `ratios[i]` x the base batch (the last stage's, whose
    ratio is 1). Progress is counted in base steps: the images seen so far / the base batch. The
    learning-rate schedule and the EMA are defined over progress, so a recipe's warmup, decay and
    averaging horizon cover the same images whatever the stage batches (see `ProgressLR` and
    `ema.EMAWarmupMixin`). Steps past the last stage continue at the last stage's ratio.
    `lr_scales` are the stages' learning-rate multipliers (`Stage.lr_scale`: the ratio under the linear
    scaling rule, its square root under the square-root rule); None: the ratios. `rule` names the rule
    ("linear" or "sqrt"): under "sqrt" the adaptive optimizers also scale their moment averages and
    epsilon per stage (`square_root_rule_decay`, `training.optimizers.StepUpdateMixin`).
    """

    def __init__(self, steps, ratios, lr_scales=None, rule="linear"):
        steps, ratios = [int(s) for s in steps], [float(r) for r in ratios]
        lr_scales = list(ratios) if lr_scales is None else [float(r) for r in lr_scales]
        if (not steps or len(steps) != len(ratios) or len(lr_scales) != len(ratios) or min(steps) < 0
                or min(ratios) <= 0 or min(lr_scales) <= 0):
            raise ValueError(
                f"TrainingProgress needs one step count (>= 0), one batch ratio (> 0) and one LR scale (> 0) "
                f"per stage, got steps={steps}, ratios={ratios}, lr_scales={lr_scales}."
            )
        if rule not in LR_SCALING_RULES:
            raise ValueError(f"TrainingProgress rule must be one of {LR_SCALING_RULES}, got {rule!r}.")
        self.steps, self.ratios, self.lr_scales, self.rule = steps, ratios, lr_scales, rule

    @classmethod
    def from_schedule(cls, schedule, steps_per_epoch=None):
        """From a batch-scaled `ProgressiveSchedule` whose epoch of data is `steps_per_epoch` steps of the
        base batch (default: the schedule's): each stage's steps are its `fit_layout`'s."""
        layout = schedule.fit_layout(steps_per_epoch)
        return cls(layout.stage_steps, layout.ratios, [s.lr_scale for s in schedule.stages], rule=schedule.lr_scaling)

    @property
    def total_steps(self):
        return sum(self.steps)

    @property
    def total_base_steps(self):
        """The whole schedule in base steps (what a fixed-batch LR schedule's total_steps is)."""
        return sum(s * r for s, r in zip(self.steps, self.ratios))

    @property
    def scales_moments(self):
        """Whether adaptive optimizers scale their moment averages and epsilon per stage (the sqrt rule)."""
        return self.rule == "sqrt" and any(r != 1.0 for r in self.ratios)

    def base_step(self, step):
        """Progress at optimizer step `step` (a tensor), in base steps (float32)."""
        return self.weighted_steps(step, self.ratios)

    def weighted_steps(self, step, weights):
        """sum_i weights[i] x (steps of stage i before optimizer step `step`), float32."""
        step = ops.cast(step, "float32")
        total = ops.zeros_like(step)
        start = 0.0
        for index, (length, weight) in enumerate(zip(self.steps, weights)):
            last = index == len(self.steps) - 1
            inside = ops.maximum(step - start, 0.0) if last else ops.clip(step - start, 0.0, float(length))
            total = total + float(weight) * inside
            start += length
        return total

    def ratio(self, step):
        """The batch ratio of the stage that optimizer step `step` belongs to (float32)."""
        return self.stage_value(step, self.ratios)

    def lr_scale(self, step):
        """The learning-rate multiplier of the stage that optimizer step `step` belongs to (float32)."""
        return self.stage_value(step, self.lr_scales)

    def stage_value(self, step, values):
        """values[i] for the stage i that optimizer step `step` belongs to (float32)."""
        step = ops.cast(step, "float32")
        result = ops.full_like(step, values[-1])
        boundary = 0.0
        boundaries = []
        for length in self.steps[:-1]:
            boundary += length
            boundaries.append(boundary)
        for boundary, value in reversed(list(zip(boundaries, values[:-1]))):
            result = ops.where(step < boundary, value, result)
        return result

    def stage_product(self, steps_taken, factors):
        """prod over the first `steps_taken` optimizer steps of their stage's factor: Adam's beta^t when
        beta changes per stage (every factor > 0), float32."""
        return ops.exp(self.weighted_steps(steps_taken, [math.log(f) for f in factors]))

    def square_root_rule_decay(self, decay):
        """Each stage's moment-average decay (beta, rho) under the square-root rule; `decay` elsewhere.

        Malladi et al. 2022 (arXiv 2205.10287, the square-root scaling rule for RMSprop and Adam): a
        batch k times larger shortens the average's horizon k times, 1 - beta -> k (1 - beta). Past
        k (1 - beta) = 1 that would be no average at all (beta <= 0): the decay is floored at
        `MIN_SCALED_DECAY` (an average over about two steps), or at `decay` itself when lower.
        """
        if not self.scales_moments:
            return [float(decay)] * len(self.ratios)
        decay = float(decay)
        floor = min(decay, MIN_SCALED_DECAY)
        return [decay if ratio == 1.0 else max(1.0 - ratio * (1.0 - decay), floor) for ratio in self.ratios]

    def get_config(self):
        return {"steps": self.steps, "ratios": self.ratios, "lr_scales": self.lr_scales, "rule": self.rule}


@keras.saving.register_keras_serializable(package="efficientnetv2_keras")
class ProgressLR(keras.optimizers.schedules.LearningRateSchedule):
    """A base-batch schedule over training progress, scaled by each stage's learning-rate multiplier.

    lr(step) = base(progress(step)) x lr_scale(step), where lr_scale is the stage's batch ratio k under
    the linear scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD", §2.1: k-times the
    batch, k-times the learning rate) or sqrt(k) under the square-root rule for adaptive optimizers
    (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms"), on top
    of a schedule that reaches its warmup end, decay steps and end at the same images seen as with
    the base batch throughout. `lr_scales` None: the ratios (linear rule). `rule` ("linear", "sqrt"):
    the rule the scales follow; an optimizer of this package reads it from its schedule
    (`TrainingProgress`), so a saved and reloaded one scales its betas and epsilon the same way.
    """

    def __init__(self, base, steps, ratios, lr_scales=None, rule="linear", name="ProgressLR"):
        super().__init__()
        if isinstance(base, dict):
            base = keras.optimizers.schedules.deserialize(base)
        self.base = base
        self.progress = TrainingProgress(steps, ratios, lr_scales, rule)
        self.name = name

    def __call__(self, step):
        progress = self.progress.base_step(step)
        return ops.cast(self.base(progress), "float32") * self.progress.lr_scale(step)

    def get_config(self):
        return {"base": keras.optimizers.schedules.serialize(self.base), **self.progress.get_config(), "name": self.name}
