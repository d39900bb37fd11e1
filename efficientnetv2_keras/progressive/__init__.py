"""Progressive learning with adaptive regularization (paper §4, Algorithm 1).

The schedule (`progressive_schedule`, pure) needs no TensorFlow; `ProgressiveLearning` (the callback
that runs it inside `model.fit` with tf.data) is imported on first use, so planning a schedule works
on a JAX-only machine (see tools/gpu_bench.py).
"""

from efficientnetv2_keras.progressive.schedule import (
    PAPER_TABLE_6,
    PRESETS,
    ProgressiveSchedule,
    Stage,
    progressive_schedule,
)

__all__ = [
    "ProgressiveLearning",
    "ProgressiveSchedule",
    "Stage",
    "progressive_schedule",
    "PRESETS",
    "PAPER_TABLE_6",
]


def __getattr__(name):
    if name == "ProgressiveLearning":
        from efficientnetv2_keras.progressive.callback import ProgressiveLearning

        return ProgressiveLearning
    raise AttributeError(f"module 'efficientnetv2_keras.progressive' has no attribute {name!r}")
