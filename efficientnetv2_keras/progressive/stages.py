"""The progressive-learning schedule as data: its `Stage`s and the `ProgressiveSchedule` that validates,
tables and plots them (`progressive.schedule` says how the stages are chosen)."""

import dataclasses
from typing import Optional

import numpy as np

from efficientnetv2_keras.limits import LR_SCALING_RULES, MAX_RANDAUG_MAGNITUDE, MIN_MODEL_IMAGE_SIZE, REGULARIZERS
from efficientnetv2_keras.progressive.fit_layout import layout_stage_steps

# Stage sizes below this are rounded to multiples of `size_multiple` (progressive.schedule's docstring).
SIZE_ROUNDING_BELOW = 128
# The square-root rule's floor for a scaled moment decay 1 - k (1 - beta): 0.5 averages over about
# 1 / (1 - 0.5) = 2 steps; the rule itself has no value once k (1 - beta) >= 1
# (`training.schedules.TrainingProgress.square_root_rule_decay`).
MIN_SCALED_DECAY = 0.5


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: its [start, end) range in the schedule's unit, image size and regularization."""

    index: int
    start: int
    end: int
    image_size: int
    randaug_magnitude: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    dropout_rate: Optional[float] = None  # None: leave the model's dropout as it is
    survival_prob: Optional[float] = None  # None: leave stochastic depth as it is
    batch_size: Optional[int] = None  # None: the pipeline's own batch size
    batch_ratio: float = 1.0  # batch_size / the base batch: the data one step covers, in base steps
    lr_scale: float = 1.0  # learning-rate multiplier: batch_ratio (linear rule) or its square root (sqrt)


@dataclasses.dataclass(frozen=True)
class ProgressiveSchedule:
    """M stages covering [0, total) epochs (or steps), validated on construction.

    With `random_resize_every=k`, stages are not taken in order: every k epochs (k steps in a step
    schedule: like every range here, k counts in the schedule's unit) one stage (size and its matching
    regularization) is drawn at random, seeded by (seed, position // k) so a resumed run draws the
    same ones. This is the paper's Table 13 "random resize + adaptive regularization".
    """

    stages: tuple
    total: int
    unit: str = "epoch"
    model_name: str = ""
    preset: str = "custom"
    random_resize_every: Optional[int] = None
    seed: int = 0
    batch_size: Optional[int] = None  # the base batch (batch_ratio 1): set when stages have their own batch
    lr_scaling: str = "linear"  # the rule that gave each stage's lr_scale (module docstring)
    size_multiple: Optional[int] = None  # stage sizes below SIZE_ROUNDING_BELOW rounded to multiples of it
    planned_sizes: tuple = ()  # Algorithm 1's sizes before that rounding (empty: none was asked)
    # Steps of the base batch in one epoch of data (examples // batch_size), when known: batch-scaled
    # stages are then laid out in optimizer steps (`fit_layout`) and the table shows them.
    steps_per_epoch: Optional[int] = None

    def __post_init__(self):
        _validate(self)

    @property
    def num_stages(self):
        return len(self.stages)

    def stage_at(self, position):
        """The stage in effect at epoch (or step) `position`."""
        if not 0 <= position < self.total:
            raise ValueError(f"{self.unit} {position} is outside the schedule's range [0, {self.total}).")
        if self.random_resize_every:
            block = position // self.random_resize_every
            rng = np.random.default_rng([self.seed, block])
            return self.stages[int(rng.integers(self.num_stages))]
        for stage in self.stages:
            if stage.start <= position < stage.end:
                return stage
        raise AssertionError("validated schedules cover their range")

    @property
    def batch_scaled(self):
        """Whether stages have their own batch size (and learning-rate scale)."""
        return any(s.batch_size is not None for s in self.stages)

    def passes(self, stage):
        """The data `stage` trains, in epochs (steps) of the base batch: its range, or for batch-scaled
        stages laid out in steps (`steps_per_epoch` known) its steps x batch_ratio / steps_per_epoch."""
        if self.batch_scaled and self.steps_per_epoch:
            return self.fit_layout().data(stage.index)
        return float(stage.end - stage.start)

    def fit_layout(self, steps_per_epoch=None):
        """The `FitLayout` of batch-scaled stages: each stage's optimizer steps and fit's epochs.

        steps_per_epoch: steps of the base batch in one epoch of data (default: the schedule's own);
        in a step schedule, the fit epoch length to aim for.
        """
        steps_per_epoch = steps_per_epoch or self.steps_per_epoch
        if not self.batch_scaled or not steps_per_epoch:
            raise ValueError("fit_layout is for batch-scaled schedules (batch_scaling=True) and needs steps_per_epoch: "
                             "the steps of the base batch in one epoch of data (examples // batch_size).")
        return layout_stage_steps(self.stages, int(steps_per_epoch), self.unit)

    def table(self):
        """The schedule as a text table."""
        # Ranges are 1-based and inclusive, like Keras' "Epoch 1/350" progress bar.
        header = f"{self.unit + 's':>13} | size | RandAug | mixup | cutmix | dropout | survival"
        layout = self.fit_layout() if self.batch_scaled and self.steps_per_epoch else None
        if self.batch_scaled:
            header += " | batch | LR x" + (" | steps" if layout else "") + f" | data ({self.unit}s of batch {self.batch_size})"
        lines = [
            f"Progressive learning: {self.model_name or 'custom'}, preset {self.preset!r}, "
            f"{self.num_stages} stages over {self.total} {self.unit}s"
            + (f", one stage drawn at random every {self.random_resize_every} {self.unit}s" if self.random_resize_every else ""),
            header,
            "-" * len(header),
        ]
        for s in self.stages:
            span = "drawn" if self.random_resize_every else f"{s.start + 1:>6}-{s.end:<6}"
            line = (
                f"{span:^13} | {s.image_size:>4} | {s.randaug_magnitude:>7.2f} | "
                f"{s.mixup_alpha:>5.3f} | {s.cutmix_alpha:>6.3f} | {_fmt(s.dropout_rate):>7} | {_fmt(s.survival_prob):>8}"
            )
            if self.batch_scaled:
                line += f" | {s.batch_size or '-':>5} | {s.lr_scale:>4.2f}"
                line += (f" | {layout.stage_steps[s.index]:>5}" if layout else "") + f" | {self.passes(s):.2f}"
            lines.append(line)
        if self.batch_scaled:
            k = f"k = batch / {self.batch_size}"
            rule = (f"Square-root scaling rule (Malladi et al. 2022), {k}: LR x sqrt(k); for RMSprop/Adam/AdamW "
                    f"also 1 - beta x k (rho, beta_1, beta_2; beta floored at {MIN_SCALED_DECAY}), epsilon / sqrt(k) "
                    "(RMSprop: / k, epsilon under the root) and decoupled weight decay x sqrt(k)."
                    if self.lr_scaling == "sqrt" else
                    f"Linear scaling rule (Goyal et al. 2017), {k}: LR x k.")
            lines += ["Batch grows as the image shrinks (same activation memory, batch ~ 1/size^2).", rule]
            lines.append(layout.describe(self.batch_size) if layout else
                         f"Stage steps follow from the steps per {self.unit} of data (steps_per_epoch): each stage "
                         "then trains its range's data to within half a step.")
        rounded = self.rounded_sizes()
        if rounded:
            changes = ", ".join(f"stage {index + 1}: {planned} -> {size}" for index, planned, size in rounded)
            lines.append(
                f"Sizes below {SIZE_ROUNDING_BELOW} px rounded to multiples of {self.size_multiple} ({changes}): "
                "a stride-32 network pads 40 px up to the cost of 48 px."
            )
        return "\n".join(lines)

    def rounded_sizes(self):
        """(stage index, Algorithm 1's size, the stage's size) for every stage whose size `size_multiple`
        rounded."""
        return [(s.index, planned, s.image_size) for s, planned in zip(self.stages, self.planned_sizes)
                if planned != s.image_size]

    __str__ = table

    def series(self, field):
        """(edges, values) of `field` for a step plot against 1-based epochs (steps), as the table and
        Keras' progress bar count: epoch e spans [e - 0.5, e + 0.5], so edges run from 0.5 to total + 0.5
        and every stage, the last one included, covers all of its epochs."""
        values = [getattr(self.stage_at(position), field) for position in range(self.total)]
        values = np.array([np.nan if v is None else v for v in values], dtype=float)
        return np.arange(self.total + 1) + 0.5, values

    def plot(self, path):
        """Writes a PNG: one panel per scheduled quantity against 1-based epochs (steps)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fields = [f for f in REGULARIZERS if any(getattr(s, f) not in (None, 0, 0.0) for s in self.stages)]
        fields = fields or ["image_size"]
        figure, axes = plt.subplots(len(fields), 1, figsize=(7, 1.9 * len(fields)), sharex=True, squeeze=False)
        for axis, field in zip(axes[:, 0], fields):
            edges, values = self.series(field)
            axis.stairs(values, edges, baseline=None)
            axis.set_xlim(edges[0], edges[-1])
            axis.set_ylabel(field.replace("_", " "), fontsize=8)
            axis.grid(alpha=0.3)
        axes[-1, 0].set_xlabel(self.unit)
        axes[0, 0].set_title(f"{self.model_name or 'custom'}: progressive learning ({self.preset})")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def _fmt(value):
    return "-" if value is None else f"{value:.3f}"

def _validate(schedule):
    if schedule.unit not in ("epoch", "step"):
        raise ValueError(f"unit must be 'epoch' or 'step', got {schedule.unit!r}.")
    if not schedule.stages:
        raise ValueError("A progressive schedule needs at least one stage.")
    expected_start = 0
    for index, stage in enumerate(schedule.stages):
        if stage.index != index:
            raise ValueError(f"Stage {index} has index {stage.index}; stages must be numbered 0..M-1 in order.")
        if stage.start != expected_start or stage.end <= stage.start:
            raise ValueError(
                f"Stages must cover {schedule.unit}s 0..{schedule.total - 1} without gaps or overlaps: "
                f"stage {index} covers [{stage.start}, {stage.end}) but should start at {expected_start} "
                "and be non-empty."
            )
        expected_start = stage.end
        if not isinstance(stage.image_size, (int, np.integer)) or stage.image_size < MIN_MODEL_IMAGE_SIZE:
            raise ValueError(
                f"Stage {index}: image_size must be an integer >= {MIN_MODEL_IMAGE_SIZE}, got {stage.image_size!r}."
            )
        if not 0 <= stage.randaug_magnitude <= MAX_RANDAUG_MAGNITUDE:
            raise ValueError(
                f"Stage {index}: randaug_magnitude {stage.randaug_magnitude} is outside [0, "
                f"{MAX_RANDAUG_MAGNITUDE:g}] (the paper uses 5-25)."
            )
        for name in ("mixup_alpha", "cutmix_alpha"):
            if getattr(stage, name) < 0:
                raise ValueError(f"Stage {index}: {name} must be >= 0 (0 = off), got {getattr(stage, name)}.")
        if stage.dropout_rate is not None and not 0 <= stage.dropout_rate < 1:
            raise ValueError(f"Stage {index}: dropout_rate must be in [0, 1), got {stage.dropout_rate}.")
        if stage.survival_prob is not None and not 0 < stage.survival_prob <= 1:
            raise ValueError(f"Stage {index}: survival_prob must be in (0, 1], got {stage.survival_prob}.")
    if expected_start != schedule.total:
        raise ValueError(
            f"The stages end at {schedule.unit} {expected_start} but the schedule has {schedule.total} "
            f"{schedule.unit}s: the last stage must end at {schedule.total}."
        )
    for stage in schedule.stages:
        if stage.batch_size is not None and (not isinstance(stage.batch_size, (int, np.integer)) or stage.batch_size < 1):
            raise ValueError(f"Stage {stage.index}: batch_size must be a positive integer or None, got {stage.batch_size!r}.")
        for name in ("batch_ratio", "lr_scale"):
            if not getattr(stage, name) > 0:
                raise ValueError(f"Stage {stage.index}: {name} must be > 0, got {getattr(stage, name)}.")
    if schedule.lr_scaling not in LR_SCALING_RULES:
        raise ValueError(f"lr_scaling must be one of {LR_SCALING_RULES}, got {schedule.lr_scaling!r}.")
    check_size_multiple(schedule.size_multiple)
    if schedule.planned_sizes and len(schedule.planned_sizes) != len(schedule.stages):
        raise ValueError(f"planned_sizes needs one size per stage, got {len(schedule.planned_sizes)} for "
                         f"{len(schedule.stages)} stages.")
    if schedule.random_resize_every is not None and schedule.random_resize_every < 1:
        raise ValueError(
            f"random_resize_every must be a positive number of {schedule.unit}s (the schedule's unit), got "
            f"{schedule.random_resize_every}."
        )

def check_size_multiple(multiple):
    if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1):
        raise ValueError(f"size_multiple must be a positive integer (16: stage sizes a stride-32 network rewards) or "
                         f"None (Algorithm 1's sizes), got {multiple!r}.")
