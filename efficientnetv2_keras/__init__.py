"""EfficientNetV2 for Keras 3.

The model family (``efficientnetv2_keras.models``) imports keras only, so
``from efficientnetv2_keras import EfficientNetV2S`` works on the JAX and
PyTorch backends and where TensorFlow is not installed. Everything that needs
TensorFlow (tf.data pipelines, the progressive-learning callback, training
recipes, export) is imported lazily, on first use.
"""

import importlib

from efficientnetv2_keras.models import *  # noqa: F401,F403
from efficientnetv2_keras.models import __all__ as _model_names

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "ProgressiveLearning": "efficientnetv2_keras.progressive",
    "progressive_schedule": "efficientnetv2_keras.progressive",
    "build_dataset": "efficientnetv2_keras.data",
}
_SUBPACKAGES = ("data", "progressive", "training", "export", "hparams", "weights")

# `from efficientnetv2_keras import *` stays TensorFlow-free: only the model API.
__all__ = list(_model_names)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"efficientnetv2_keras.{name}")
    raise AttributeError(f"module 'efficientnetv2_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
