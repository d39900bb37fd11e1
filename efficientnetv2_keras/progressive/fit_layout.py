"""How one `fit` trains batch-scaled stages: each stage's optimizer steps, and fit's epochs over them."""

import dataclasses
import math

import numpy as np

# Batch-scaled stages in one fit (`fit_layout`): fit's epoch length may leave the last stage this
# share of its steps over or under, so that epochs stay near one epoch of data in steps.
LAST_STAGE_SLACK = 0.005


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
