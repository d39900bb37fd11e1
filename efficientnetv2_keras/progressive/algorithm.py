"""`progressive_schedule`: Algorithm 1's stages for a variant and preset (paper Section 4.2, Table 6),
with sizes rounded for the network and, optionally, a batch per stage (`progressive.schedule`)."""

import math

import numpy as np

from efficientnetv2_keras.limits import BATCH_MULTIPLE, PRESETS, REGULARIZERS
from efficientnetv2_keras.models.family import get_model_spec
from efficientnetv2_keras.progressive.stages import (
    SIZE_ROUNDING_BELOW,
    ProgressiveSchedule,
    Stage,
    check_size_multiple,
)

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


def _interpolate(low, high, i, num_stages, official_size=False):
    """Algorithm 1's linear interpolation; `official_size` is the released code's (i+1)/M."""
    if official_size:
        return low + (high - low) * (i + 1) / num_stages
    if num_stages == 1:
        return high
    return low + (high - low) * i / (num_stages - 1)

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

def progressive_schedule(model_name, preset="paper", total_epochs=None, num_stages=4, *, total_steps=None,
                         random_resize_every=None, seed=0, batch_size=None, batch_scaling=False, max_batch_size=None,
                         num_replicas=1, lr_scaling="linear", size_multiple=SIZE_MULTIPLE, steps_per_epoch=None,
                         **overrides):
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
    check_size_multiple(size_multiple)
    if steps_per_epoch is not None and not _positive_int(steps_per_epoch):
        raise ValueError(f"steps_per_epoch must be a positive integer or None, got {steps_per_epoch!r}.")
    ranges = _ranges(spec, preset, overrides, random_resize_every)
    official_sizes = preset == "official" and "image_size" not in overrides
    planned_sizes = [
        int(_interpolate(*ranges["image_size"], i, num_stages, official_size=official_sizes)) for i in range(num_stages)
    ]
    batching = {"batch_size": batch_size, "batch_scaling": batch_scaling, "max_batch_size": max_batch_size,
                "num_replicas": num_replicas, "lr_scaling": lr_scaling}
    stages = _stages(ranges, round_stage_sizes(planned_sizes, size_multiple), total, batching)
    return ProgressiveSchedule(
        stages=stages, total=stages[-1].end, unit=unit, model_name=spec.name, preset=preset,
        random_resize_every=random_resize_every, seed=seed, batch_size=None if batch_size is None else int(batch_size),
        lr_scaling=lr_scaling, size_multiple=size_multiple, steps_per_epoch=steps_per_epoch,
        planned_sizes=tuple(planned_sizes) if size_multiple is not None else (),
    )


def _ranges(spec, preset, overrides, random_resize_every):
    """The preset's (min, max) per regularizer with `overrides` applied; a growing image size."""
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
    return ranges


def _stages(ranges, sizes, total, batching):
    """The `Stage`s: stage i covers [int(i * total / M), int((i + 1) * total / M)) with its size and
    Algorithm 1's regularization, and with a base batch its batch, batch ratio and LR scale."""
    stages, start, num_stages = [], 0, len(sizes)
    batch_size = batching["batch_size"]
    for i in range(num_stages):
        values = _regularization(ranges, i, num_stages)
        values["image_size"] = sizes[i]
        length = int((i + 1) * total / num_stages) - int(i * total / num_stages)
        if batch_size is not None:
            stage_batch = (
                scaled_batch_size(batch_size, values["image_size"], max(sizes), batching["max_batch_size"],
                                  batching["num_replicas"])
                if batching["batch_scaling"] else int(batch_size)
            )
            ratio = stage_batch / batch_size
            values.update(batch_size=stage_batch, batch_ratio=ratio,
                          lr_scale=ratio ** (0.5 if batching["lr_scaling"] == "sqrt" else 1.0))
        # The range is the stage's data; batch-scaled stages take fewer steps for it (fit_layout).
        stages.append(Stage(index=i, start=start, end=start + length, **values))
        start += length
    return tuple(stages)


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
