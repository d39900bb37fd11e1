"""Progressive learning with adaptive regularization (paper Section 4, Algorithm 1).

The schedule (`progressive.schedule`) is pure Python: the recipe schema imports it without
TensorFlow or Keras. The callback and `make_adjustable` (Keras) are imported on first use.
"""

import importlib

from efficientnetv2_keras.progressive.schedule import (
    PAPER_TABLE_6,
    PRESETS,
    REGULARIZERS,
    ProgressiveSchedule,
    Stage,
    progressive_schedule,
)

__all__ = [
    "ProgressiveLearning",
    "make_adjustable",
    "ProgressiveSchedule",
    "Stage",
    "progressive_schedule",
    "PRESETS",
    "REGULARIZERS",
    "PAPER_TABLE_6",
]


def __getattr__(name):
    if name == "ProgressiveLearning":
        return importlib.import_module("efficientnetv2_keras.progressive.callback").ProgressiveLearning
    if name == "make_adjustable":
        return importlib.import_module("efficientnetv2_keras.progressive.adjust").make_adjustable
    raise AttributeError(f"module 'efficientnetv2_keras.progressive' has no attribute {name!r}")
