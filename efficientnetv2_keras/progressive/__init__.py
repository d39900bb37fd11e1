"""Progressive learning with adaptive regularization (paper Section 4, Algorithm 1).

* `schedule`: the stages (`progressive_schedule`, `ProgressiveSchedule`, `Stage`; built in `algorithm`,
  held in `stages`, laid out in steps for batch-scaled stages in `fit_layout`). Pure Python and keras'
  model table only: no TensorFlow (tools/gpu_bench.py reads it on a JAX-only machine).
* `callback`: `ProgressiveLearning`, the stages inside one `model.fit`; its dataset side is
  `stage_datasets.StageDatasets` (tf.data).
* `progress`, `learning_rate`: training progress and the learning rate of batch-scaled stages.
* `adjust`: `make_adjustable`, dropout and stochastic depth a stage can set.
The callback and `make_adjustable` are imported on first use.
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
