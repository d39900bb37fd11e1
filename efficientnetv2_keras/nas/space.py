"""The search space of paper §3.3 as data, and seeded sampling from it.

A stage-based factorized space over the backbone's stages (paper §3.3, after MnasNet): per stage the
operator {MBConv, Fused-MBConv}, the kernel size {3, 5}, the expansion ratio {1, 4, 6}, the number of
layers (a range around the backbone's) and squeeze-and-excitation on/off. Channel sizes are the
backbone's ("reusing the same channel sizes from the backbone as they are already searched"), and so
is the stride pattern. A sample is a `ModelSpec`: `build_model` builds it, `save_model_spec` writes it
and a recipe uses the file as `model.name`.
"""

import dataclasses
import hashlib
import json
import random

from efficientnetv2_keras.models.family import (
    BLOCK_TYPES,
    FUSED_MBCONV,
    MBCONV,
    ModelSpec,
    StageSpec,
    get_model_spec,
    spec_to_dict,
)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What may change per stage of `backbone` (a `ModelSpec` or a variant name).

    operators, kernels, expand_ratios, se_ratios: the choices for every stage (paper §3.3: {MBConv,
      Fused-MBConv}, {3, 5}, {1, 4, 6}; SE off (0) or on (0.25, the family's ratio)).
    repeats_delta: a stage has its backbone's number of layers (before depth scaling) +- this, at least 1.
    min_repeats, max_repeats: optional bounds on a stage's layers after the delta.
    """

    backbone: ModelSpec
    operators: tuple = (MBCONV, FUSED_MBCONV)
    kernels: tuple = (3, 5)
    expand_ratios: tuple = (1, 4, 6)
    se_ratios: tuple = (0.0, 0.25)
    repeats_delta: int = 1
    min_repeats: int = 1
    max_repeats: int = None

    def __post_init__(self):
        object.__setattr__(self, "backbone", get_model_spec(self.backbone))
        for name in ("operators", "kernels", "expand_ratios", "se_ratios"):
            values = tuple(getattr(self, name))
            if not values:
                raise ValueError(f"SearchSpace.{name} must offer at least one choice.")
            object.__setattr__(self, name, values)
        bad = [op for op in self.operators if op not in BLOCK_TYPES]
        if bad:
            raise ValueError(f"SearchSpace.operators: {bad} are not block types; choose from {BLOCK_TYPES}.")
        if self.repeats_delta < 0 or self.min_repeats < 1:
            raise ValueError("SearchSpace.repeats_delta must be >= 0 and min_repeats >= 1.")
        if self.max_repeats is not None and self.max_repeats < self.min_repeats:
            raise ValueError("SearchSpace.max_repeats must be >= min_repeats.")

    def repeat_choices(self, stage):
        low = max(self.min_repeats, stage.repeats - self.repeats_delta)
        high = stage.repeats + self.repeats_delta
        if self.max_repeats is not None:
            high = min(high, self.max_repeats)
        return tuple(range(low, max(low, high) + 1))

    def stage_choices(self, index):
        """The choices of stage `index` (0-based) as a dict of field -> tuple."""
        stage = self.backbone.stages[index]
        return {
            "block": self.operators,
            "kernel": self.kernels,
            "expand_ratio": self.expand_ratios,
            "repeats": self.repeat_choices(stage),
            "se_ratio": self.se_ratios,
        }

    @property
    def size(self):
        """Number of distinct tables in the space."""
        total = 1
        for index in range(len(self.backbone.stages)):
            for values in self.stage_choices(index).values():
                total *= len(values)
        return total

    def sample(self, rng):
        """One table, drawn uniformly per stage and choice with `rng` (a `random.Random`)."""
        stages = []
        for index, stage in enumerate(self.backbone.stages):
            picks = {name: rng.choice(values) for name, values in self.stage_choices(index).items()}
            stages.append(StageSpec(
                block=picks["block"], kernel=picks["kernel"], stride=stage.stride,
                expand_ratio=picks["expand_ratio"], in_filters=stage.in_filters,
                out_filters=stage.out_filters, repeats=picks["repeats"], se_ratio=float(picks["se_ratio"]),
            ))
        return self.with_stages(tuple(stages))

    def with_stages(self, stages, name=None):
        """The backbone with `stages` (everything else, widths and scaling included, unchanged)."""
        spec = dataclasses.replace(self.backbone, stages=tuple(stages), name="tmp")
        return dataclasses.replace(spec, name=name or f"{self.backbone.name}-nas-{table_digest(spec)}")

    def contains(self, spec):
        """Whether `spec`'s stage table is in this space (the backbone's channels and strides, allowed choices)."""
        if len(spec.stages) != len(self.backbone.stages):
            return False
        for index, (stage, base) in enumerate(zip(spec.stages, self.backbone.stages)):
            if (stage.stride, stage.in_filters, stage.out_filters) != (base.stride, base.in_filters, base.out_filters):
                return False
            for name, values in self.stage_choices(index).items():
                if getattr(stage, name) not in values:
                    return False
        return True


def table_digest(spec):
    """A short stable id of a stage table (and its scaling), for names and resuming."""
    data = spec_to_dict(spec)
    data.pop("name")
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


def sample_specs(space, num_samples, seed=0):
    """The first `num_samples` tables for `seed`: the same seed gives the same list, and a longer
    list starts with the shorter one (so a search can be extended). Duplicates are skipped while the
    space has unseen tables."""
    rng = random.Random(seed)
    specs, seen, attempts = [], set(), 0
    while len(specs) < num_samples:
        spec = space.sample(rng)
        attempts += 1
        digest = table_digest(spec)
        if digest in seen and attempts < 100 * num_samples:
            continue
        seen.add(digest)
        specs.append(spec)
    return specs


def scaled_backbone(name="b0", width=None, depth=None, new_name=None):
    """A variant scaled to another width/depth (e.g. B0 at width 0.25, depth 0.5 for a CPU-sized
    search), with the scaling applied to the table: its rows hold the channels and layers that are
    built (width = depth = 1), so the search's repeat range is around the layers that exist."""
    spec = get_model_spec(name)
    if width is None and depth is None:
        return spec
    width = spec.width if width is None else float(width)
    depth = spec.depth if depth is None else float(depth)
    scaled = dataclasses.replace(spec, width=width, depth=depth)
    suffix = (f"-w{width:g}" if width != spec.width else "") + (f"-d{depth:g}" if depth != spec.depth else "")
    return dataclasses.replace(
        spec, name=new_name or spec.name + suffix, stages=scaled.scaled_stages(), width=1.0, depth=1.0,
        head_filters=scaled.head_width,
    )


def describe_table(spec):
    """'F1k3x1 F4k3x2 ... M6k3x8se' : per stage operator+expansion, kernel, layers, SE."""
    parts = []
    for stage in spec.stages:
        op = "F" if stage.block == FUSED_MBCONV else "M"
        parts.append(f"{op}{stage.expand_ratio}k{stage.kernel}x{stage.repeats}{'se' if stage.se_ratio else ''}")
    return " ".join(parts)
