"""The search reward of paper §3.3: A * S**w * P**v.

A is the proxy accuracy, S the training step time and P the parameter count (or FLOPs), both
normalized to the backbone's, so the backbone itself scores exactly its accuracy. w = -0.07 and
v = -0.05 are the paper's: a model twice as slow per step needs 2**0.07 - 1 = 5 % more (relative)
accuracy to tie, one twice as large 2**0.05 - 1 = 3.5 %.
"""

import math

PAPER_W = -0.07  # training step time exponent (§3.3)
PAPER_V = -0.05  # parameter size exponent (§3.3)
COSTS = ("params", "flops")


def reward(accuracy, step_time, size, *, base_step_time, base_size, w=PAPER_W, v=PAPER_V):
    """A * (step_time / base_step_time)**w * (size / base_size)**v.

    size/base_size: parameters or FLOPs (the same kind for both).
    """
    values = {"step_time": step_time, "size": size, "base_step_time": base_step_time, "base_size": base_size}
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"reward: {name} must be a positive number, got {value!r}.")
    if not (isinstance(accuracy, (int, float)) and math.isfinite(accuracy) and accuracy >= 0):
        raise ValueError(f"reward: accuracy must be a number >= 0, got {accuracy!r}.")
    return float(accuracy) * (step_time / base_step_time) ** w * (size / base_size) ** v
