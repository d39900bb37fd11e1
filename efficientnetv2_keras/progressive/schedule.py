"""The progressive-learning schedule: a pure function from a recipe to M stages (paper Algorithm 1).

Printing, plotting and testing a schedule needs no model and no data.

Presets (paper Section 4.2, Algorithm 1, Table 6; the released code's stage loop in google/automl
`efficientnetv2/main.py`):
  "paper"    Algorithm 1: S_i = S_0 + (S_e - S_0) * i / (M - 1) and likewise for every regularizer,
             with Table 6's min/max for S, M, L. The paper gives no values for B0-B3 and XL; our
             choices: XL uses L's column (the released code configures XL like L); B0-B3 grow from
             128 px to their official train size, RandAugment 5 -> 10 (S's released maximum), no
             mixup, dropout 0.1 -> the variant's official rate.
  "official" What the released code does: size int(128 + (train - 128) * (i + 1) / M) (the first
             stage is already a quarter of the way up), RandAugment linspace(5, ram, M), mixup and
             cutmix linspace(0, mix, M), dropout fixed at the variant's rate (the released code
             computes a dropout schedule and then never applies it). B0-B3 were trained with
             AutoAugment there, which this package does not implement: RandAugment is off for them.
Any regularizer's range can be overridden: `image_size=(128, 256)`, `dropout_rate=(0.1, 0.4)`,
`randaug_magnitude=10` (a constant), `survival_prob=(1.0, 0.8)` (stochastic depth is not scheduled
unless asked). Fractional sizes are truncated to integers, as the released code does.

Stage sizes the network rewards (`size_multiple`, default 16; None keeps Algorithm 1's sizes): the
network has stride 32 with "same" padding, so a feature map is ceil(size / 2^k) and 40 px ends at
2x2 like 48 px. Measured on B0: a 40 px train step costs 88-95 % of a 48 px one (MACs per pixel vs
32 px: 40 px 1.38x, 48 1.09, 56 1.05, 64 0.90, 72 1.11, 80 0.98; multiples of 16 are all <= 1.09).
So the stages between the first and the last below `SIZE_ROUNDING_BELOW` (128 px) are rounded to the
nearest multiple of 16, ties to the smaller size (the cheaper stage), kept within the first and last
stage's sizes; sizes may repeat (regularization still grows with the stage index). The first and last
stage keep their sizes, and so do sizes >= 128 px: the paper's and the released code's sizes there
(V2-S: 185/242/300 and 171/214/257) waste only 4-10 % against the nearest multiple of 16, so both
presets are unchanged by the rule; it changes small custom stages (`image_size=(32, 48)`).

Per-stage batch size (`batch_scaling=True`, our extension of Algorithm 1; neither the paper nor the
released code changes the batch): a small image needs less activation memory and, on every device we
measured, a small batch of small images leaves the device underused (per-step launch and framework
overhead dominate). So stage i trains with batch B_i = B * (S_e / S_i)^2, the batch that keeps the
activation memory of the last stage (B at size S_e), rounded to a multiple of 8 and of the replica
count and capped at `max_batch_size`. `Stage.batch_ratio` = B_i / B. The learning rate is scaled by
`Stage.lr_scale`, one of two rules (`lr_scaling`):
  "linear" k-times the batch, k-times the learning rate: Goyal et al. 2017 ("Accurate, Large
           Minibatch SGD: Training ImageNet in 1 Hour", §2.1), derived for SGD with momentum.
  "sqrt"   k-times the batch, sqrt(k)-times the learning rate: the square-root scaling rule that
           Malladi et al. 2022 ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms",
           NeurIPS, §4) derive for RMSprop and Adam, whose steps are normalized by the gradient's
           second moment. The rule also shortens the moment averages' horizons k times
           (1 - beta -> k (1 - beta) for RMSprop's rho and Adam's betas) and divides epsilon by
           sqrt(k); RMSprop, Adam and AdamW apply that per stage (`training.optimizers.StepUpdateMixin`).
           The recipes pick it for adaptive optimizers (`training.recipe`).

A stage's range stays what it is in data: stage i still covers Algorithm 1's L_i epochs of data
([start, end) in epochs of B-sized steps, as without batch scaling). With N steps of the base batch
in an epoch of data (`steps_per_epoch`, examples // B), stage i trains round(L_i N / k_i) optimizer
steps of its batch, so it sees its L_i epochs of data to within half a step, however short the run.
One `fit` runs those steps in epochs of a fixed length N' near N (`fit_layout`, `FitLayout`), chosen
so that the steps fill whole epochs; a stage may start inside a fit epoch (`ProgressiveLearning`
switches at its step). `ProgressiveSchedule.passes` gives the data a stage trains, the table's data
column; the learning-rate schedule and the EMA are defined over the data seen (training progress),
see `training.schedules.TrainingProgress`.
"""

import dataclasses
import math
from typing import Optional

import numpy as np

from efficientnetv2_keras.limits import (
    BATCH_MULTIPLE,
    LR_SCALING_RULES,
    MAX_RANDAUG_MAGNITUDE,
    MIN_MODEL_IMAGE_SIZE,
    PRESETS,
    REGULARIZERS,
)
from efficientnetv2_keras.models.family import get_model_spec

# Paper Table 6: (min, max) per model. Image size, RandAugment magnitude, mixup alpha, dropout rate.
PAPER_TABLE_6 = {
    "efficientnetv2-s": {"image_size": (128, 300), "randaug_magnitude": (5, 15), "mixup_alpha": (0, 0), "dropout_rate": (0.1, 0.3)},
    "efficientnetv2-m": {"image_size": (128, 380), "randaug_magnitude": (5, 20), "mixup_alpha": (0, 0.2), "dropout_rate": (0.1, 0.4)},
    "efficientnetv2-l": {"image_size": (128, 380), "randaug_magnitude": (5, 25), "mixup_alpha": (0, 0.4), "dropout_rate": (0.1, 0.5)},
}
PAPER_TABLE_6["efficientnetv2-xl"] = PAPER_TABLE_6["efficientnetv2-l"]
OFFICIAL_BASE_SIZE = 128  # `ibase` of the released code: the smallest progressive image size
# Stage sizes below SIZE_ROUNDING_BELOW are rounded to multiples of SIZE_MULTIPLE (module docstring:
# B0's train step and MACs per pixel, measured with `effnetv2-benchmark --sections=stages`).
SIZE_MULTIPLE = 16
SIZE_ROUNDING_BELOW = 128
# Batch-scaled stages in one fit (`fit_layout`): fit's epoch length may leave the last stage this
# share of its steps over or under, so that epochs stay near one epoch of data in steps.
LAST_STAGE_SLACK = 0.005
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


@dataclasses.dataclass(frozen=True)
class FitLayout:
    """How one `fit` trains batch-scaled stages (`ProgressiveSchedule.fit_layout`).

    Stage i runs `stage_steps[i]` optimizer steps of `ratios[i]` x the base batch, one stage after the
    other, and fit runs all of them as `epochs` epochs of `steps_per_epoch` steps: a stage may start
    inside a fit epoch. `base_steps` is the schedule's unit in steps of the base batch: one epoch of
    data, or 1 in a step schedule.
    """

    stage_steps: tuple
    ratios: tuple
    steps_per_epoch: int
    epochs: int
    base_steps: int
    unit: str = "epoch"

    @property
    def total_steps(self):
        return sum(self.stage_steps)

    @property
    def stage_starts(self):
        """The first optimizer step (0-based) of each stage."""
        return tuple(int(start) for start in np.cumsum((0,) + self.stage_steps[:-1]))

    def stage_index_at(self, step):
        """The stage that optimizer step `step` (0-based) belongs to; steps past the end keep the last."""
        return int(np.searchsorted(self.stage_starts, step, side="right")) - 1

    def data(self, index):
        """The data stage `index` trains, in the schedule's unit (epochs of the base batch)."""
        return self.stage_steps[index] * self.ratios[index] / self.base_steps

    def data_after(self, steps):
        """The data the first `steps` optimizer steps train, in the schedule's unit (steps past the end
        continue the last stage)."""
        seen = 0.0
        for index, (start, length) in enumerate(zip(self.stage_starts, self.stage_steps)):
            done = max(steps - start, 0)
            seen += (done if index == len(self.stage_steps) - 1 else min(done, length)) * self.ratios[index]
        return seen / self.base_steps

    def describe(self, batch_size):
        data = (f"an epoch of data is {self.base_steps} steps of batch {batch_size}" if self.unit == "epoch"
                else f"{self.unit}s of batch {batch_size}")
        return (f"One fit: {self.epochs} epochs of {self.steps_per_epoch} steps ({self.total_steps} steps; {data}); "
                "stages start at their own step, also inside a fit epoch.")


def layout_stage_steps(stages, steps_per_epoch, unit="epoch"):
    """The `FitLayout` of stages with their own batch: stage i trains its range's data in
    round(length x base steps / batch_ratio) steps (at least one); fit's epoch length is chosen near
    `steps_per_epoch` so that whole epochs hold every step, the last stage taking the few steps'
    difference when none does exactly (`_fit_epochs`)."""
    base_steps = steps_per_epoch if unit == "epoch" else 1
    steps = [max(1, math.floor((s.end - s.start) * base_steps / s.batch_ratio + 0.5)) for s in stages]
    epochs, fit_steps = _fit_epochs(sum(steps), steps_per_epoch, steps[-1])
    steps[-1] += epochs * fit_steps - sum(steps)
    return FitLayout(tuple(steps), tuple(float(s.batch_ratio) for s in stages), fit_steps, epochs, base_steps, unit)


def _fit_epochs(total, target, last_stage_steps):
    """(epochs, steps per epoch) for `total` steps: epochs nearest `target` steps whose product misses
    `total` by at most LAST_STAGE_SLACK of the last stage (which takes the difference), else the
    nearest product, with epochs of target / 2 to 2 x target steps where one divides nearly enough;
    never leaving the last stage without a step."""
    slack = math.floor(LAST_STAGE_SLACK * last_stage_steps)
    shortest, longest = max(1, -(-target // 2)), 2 * target
    # The lengths that divide `total` most nearly for each epoch count, and `target` itself.
    counts = range(max(1, total // longest), total // shortest + 2)
    lengths = {target} | {max(1, total // epochs + extra) for epochs in counts for extra in (0, 1)}
    candidates = []
    for length in lengths:
        epochs = max(1, math.floor(total / length + 0.5))
        difference = epochs * length - total
        if last_stage_steps + difference >= 1:
            # Within the slack the length nearest `target` wins; beyond it, the smallest difference.
            beyond = max(abs(difference) - slack, 0)
            candidates.append((beyond, abs(length - target), abs(difference), epochs, length))
    *_, epochs, length = min(candidates)
    return epochs, length


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
    _check_size_multiple(schedule.size_multiple)
    if schedule.planned_sizes and len(schedule.planned_sizes) != len(schedule.stages):
        raise ValueError(f"planned_sizes needs one size per stage, got {len(schedule.planned_sizes)} for "
                         f"{len(schedule.stages)} stages.")
    if schedule.random_resize_every is not None and schedule.random_resize_every < 1:
        raise ValueError(
            f"random_resize_every must be a positive number of {schedule.unit}s (the schedule's unit), got "
            f"{schedule.random_resize_every}."
        )


def _interpolate(low, high, i, num_stages, official_size=False):
    """Algorithm 1's linear interpolation; `official_size` is the released code's (i+1)/M."""
    if official_size:
        return low + (high - low) * (i + 1) / num_stages
    if num_stages == 1:
        return high
    return low + (high - low) * i / (num_stages - 1)


def _check_size_multiple(multiple):
    if multiple is not None and (isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1):
        raise ValueError(f"size_multiple must be a positive integer (16: stage sizes a stride-32 network rewards) or "
                         f"None (Algorithm 1's sizes), got {multiple!r}.")


def round_stage_sizes(sizes, multiple=SIZE_MULTIPLE, below=SIZE_ROUNDING_BELOW):
    """Stage sizes the network rewards (module docstring): each stage between the first and the last
    whose size is below `below` goes to the nearest multiple of `multiple` (ties to the smaller, the
    cheaper stage), kept within the first and last stage's sizes. `multiple` None: `sizes` unchanged."""
    sizes = [int(size) for size in sizes]
    if multiple is None or len(sizes) < 3:
        return sizes
    low, high = min(sizes[0], sizes[-1]), max(sizes[0], sizes[-1])
    rounded = list(sizes)
    for index in range(1, len(sizes) - 1):
        if sizes[index] < below:
            nearest = multiple * math.ceil(sizes[index] / multiple - 0.5)  # x.5 goes down: 40 -> 32
            rounded[index] = min(max(nearest, low), high)
    return rounded


def _preset_ranges(spec, preset):
    """(min, max) per regularizer for a preset; None = not scheduled."""
    if preset == "paper":
        if spec.name in PAPER_TABLE_6:
            ranges = dict(PAPER_TABLE_6[spec.name])
        else:  # B0-B3: our documented choice (module docstring)
            ranges = {
                "image_size": (128, spec.train_size),
                "randaug_magnitude": (5, 10),
                "mixup_alpha": (0, 0),
                "dropout_rate": (0.1, spec.dropout_rate),
            }
        ranges["cutmix_alpha"] = (0, 0)
    elif preset == "official":
        ranges = {
            "image_size": (OFFICIAL_BASE_SIZE, spec.train_size),
            "randaug_magnitude": (5, spec.randaug_magnitude) if spec.randaug_magnitude else (0, 0),
            "mixup_alpha": (0, spec.mixup_alpha),
            "cutmix_alpha": (0, spec.mixup_alpha),
            "dropout_rate": (spec.dropout_rate, spec.dropout_rate),
        }
    else:
        raise ValueError(f"Unknown progressive preset {preset!r}; choose one of {PRESETS}.")
    ranges["survival_prob"] = None
    return ranges


def _as_range(name, value):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}.")
    return value


def progressive_schedule(
    model_name,
    preset="paper",
    total_epochs=None,
    num_stages=4,
    *,
    total_steps=None,
    random_resize_every=None,
    seed=0,
    batch_size=None,
    batch_scaling=False,
    max_batch_size=None,
    num_replicas=1,
    lr_scaling="linear",
    size_multiple=SIZE_MULTIPLE,
    steps_per_epoch=None,
    **overrides,
):
    """Builds the stages of progressive learning with adaptive regularization.

    Args:
      model_name: a variant ("efficientnetv2-s", "s", ...) or a `ModelSpec`; its Table 6 column
        (paper) or released config (official) gives the ranges.
      preset: "paper" or "official" (module docstring).
      total_epochs / total_steps: the length of training; give exactly one. Stage i covers
        [int(i * N / M), int((i + 1) * N / M)), as the released code splits it.
      num_stages: M (the paper uses 4: about 87 epochs each over 350).
      random_resize_every: draw a random stage every k epochs (k steps with total_steps) instead of
        growing (paper Table 13).
      batch_size: the batch of the last (largest) stage, e.g. the recipe's `train.batch_size`; every
        stage then records it (`Stage.batch_size`).
      batch_scaling: grow the batch as the image shrinks, B_i = batch_size * (S_max / S_i)^2 rounded to
        a multiple of lcm(8, num_replicas) and capped at max_batch_size, with the learning rate
        scaled by `lr_scaling` (module docstring). Stage ranges stay the data they cover; each stage
        trains it in B_i / batch_size times fewer steps (`fit_layout`).
      max_batch_size: the largest stage batch (e.g. what fits in memory at the first stage's size;
        None: no cap).
      num_replicas: replicas the global batch is split over (stage batches are multiples of it).
      lr_scaling: "linear" (LR x B_i / batch_size, for SGD) or "sqrt" (LR x sqrt(B_i / batch_size),
        for RMSprop and Adam); module docstring.
      size_multiple: round the stages between the first and the last below 128 px to multiples of it
        (default 16: a stride-32 network pads 40 px up to the cost of 48 px; module docstring); None
        keeps Algorithm 1's sizes. The table says which stages it changed.
      steps_per_epoch: steps of the base batch in one epoch of data (examples // batch_size), when
        known: the table then shows each batch-scaled stage's steps and the data they train.
      **overrides: a (min, max) pair or a constant for any of image_size, randaug_magnitude,
        mixup_alpha, cutmix_alpha, dropout_rate, survival_prob; None turns a regularizer's schedule
        off (dropout/survival left to the model; augmentation off).
    """
    spec = get_model_spec(model_name)
    unit, total = _schedule_length(total_epochs, total_steps, num_stages)
    _check_batch_options(batch_size, batch_scaling, max_batch_size, num_replicas, random_resize_every)
    _check_size_multiple(size_multiple)
    if steps_per_epoch is not None and not _positive_int(steps_per_epoch):
        raise ValueError(f"steps_per_epoch must be a positive integer or None, got {steps_per_epoch!r}.")
    unknown = set(overrides) - set(REGULARIZERS)
    if unknown:
        raise ValueError(f"Unknown schedule override(s) {sorted(unknown)}; valid: {REGULARIZERS}.")

    ranges = _preset_ranges(spec, preset)
    for name, value in overrides.items():
        ranges[name] = _as_range(name, value)
    size_range = ranges["image_size"]
    if size_range is None:
        raise ValueError("image_size cannot be None: every stage needs an image size.")
    if size_range[1] < size_range[0] and not random_resize_every:
        raise ValueError(
            f"Progressive learning grows the image size, but image_size goes from {size_range[0]} "
            f"down to {size_range[1]}. Swap them, or use random_resize_every for Mix & Match."
        )

    official_sizes = preset == "official" and "image_size" not in overrides
    stages = []
    start = 0
    planned_sizes = [
        int(_interpolate(*size_range, i, num_stages, official_size=official_sizes)) for i in range(num_stages)
    ]
    sizes = round_stage_sizes(planned_sizes, size_multiple)
    for i in range(num_stages):
        values = _regularization(ranges, i, num_stages)
        values["image_size"] = sizes[i]
        length = int((i + 1) * total / num_stages) - int(i * total / num_stages)
        if batch_size is not None:
            stage_batch = (
                scaled_batch_size(batch_size, values["image_size"], max(sizes), max_batch_size, num_replicas)
                if batch_scaling else int(batch_size)
            )
            ratio = stage_batch / batch_size
            values.update(batch_size=stage_batch, batch_ratio=ratio,
                          lr_scale=ratio ** (0.5 if lr_scaling == "sqrt" else 1.0))
        # The range is the stage's data; batch-scaled stages take fewer steps for it (fit_layout).
        stages.append(Stage(index=i, start=start, end=start + length, **values))
        start += length
    return ProgressiveSchedule(
        stages=tuple(stages),
        total=start,
        unit=unit,
        model_name=spec.name,
        preset=preset,
        random_resize_every=random_resize_every,
        seed=seed,
        batch_size=None if batch_size is None else int(batch_size),
        lr_scaling=lr_scaling,
        size_multiple=size_multiple,
        planned_sizes=tuple(planned_sizes) if size_multiple is not None else (),
        steps_per_epoch=steps_per_epoch,
    )


def _schedule_length(total_epochs, total_steps, num_stages):
    """(unit, total) from exactly one of total_epochs and total_steps, long enough for num_stages."""
    if (total_epochs is None) == (total_steps is None):
        raise ValueError("Give exactly one of total_epochs or total_steps.")
    unit, total = ("epoch", total_epochs) if total_epochs is not None else ("step", total_steps)
    if not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(f"num_stages must be a positive integer, got {num_stages!r}.")
    if not isinstance(total, int) or total < num_stages:
        raise ValueError(
            f"total_{unit}s must be an integer >= num_stages ({num_stages}) so every stage gets at "
            f"least one {unit}, got {total!r}."
        )
    return unit, total


def _regularization(ranges, index, num_stages):
    """Stage `index`'s value of every scheduled quantity (Algorithm 1's interpolation); unscheduled
    dropout/survival None (the model's own), unscheduled augmentation 0."""
    values = {}
    for name, value_range in ranges.items():
        if value_range is None:
            values[name] = None if name in ("dropout_rate", "survival_prob") else 0.0
        else:
            values[name] = float(_interpolate(*value_range, index, num_stages))
    return values


def scaled_batch_size(batch_size, image_size, max_image_size, max_batch_size=None, num_replicas=1):
    """The batch at `image_size` with the activation memory of `batch_size` at `max_image_size`.

    batch_size * (max_image_size / image_size)^2, rounded to the nearest multiple of
    lcm(8, num_replicas), capped at max_batch_size (rounded down to that multiple), never below
    batch_size; `batch_size` itself at the largest size.
    """
    if image_size >= max_image_size:
        return int(batch_size)
    multiple = math.lcm(BATCH_MULTIPLE, int(num_replicas))
    scaled = batch_size * (max_image_size / image_size) ** 2
    # Half-way rounds up (36 -> 40), not to an even multiple as Python's round() would (36 -> 32).
    scaled = max(multiple, math.floor(scaled / multiple + 0.5) * multiple)
    if max_batch_size is not None:
        scaled = min(scaled, max(multiple, max_batch_size // multiple * multiple))
    return int(max(scaled, batch_size))


def _positive_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _check_batch_options(batch_size, batch_scaling, max_batch_size, num_replicas, random_resize_every):
    positive_int = _positive_int
    if batch_size is not None and not positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not positive_int(num_replicas):
        raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}.")
    if max_batch_size is not None and not positive_int(max_batch_size):
        raise ValueError(f"max_batch_size must be a positive integer or None, got {max_batch_size!r}.")
    if not batch_scaling:
        return
    if batch_size is None:
        raise ValueError(
            "batch_scaling=True needs batch_size: the batch of the last (largest) stage, e.g. the recipe's "
            "train.batch_size."
        )
    if max_batch_size is not None and max_batch_size < batch_size:
        raise ValueError(f"max_batch_size ({max_batch_size}) is below batch_size ({batch_size}).")
    if batch_size % num_replicas:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of num_replicas ({num_replicas}).")
    if random_resize_every:
        raise ValueError(
            "batch_scaling does not combine with random_resize_every: stages drawn at random would each "
            "need their own epoch length. Use one or the other."
        )
