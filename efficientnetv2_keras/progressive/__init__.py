"""Progressive learning with adaptive regularization (paper §4, Algorithm 1)."""

from efficientnetv2_keras.progressive.adjust import make_adjustable
from efficientnetv2_keras.progressive.callback import ProgressiveLearning
from efficientnetv2_keras.progressive.schedule import (
    PAPER_TABLE_6,
    PRESETS,
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
    "PAPER_TABLE_6",
]
