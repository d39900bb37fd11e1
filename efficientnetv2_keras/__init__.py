"""EfficientNetV2 for Keras 3.

The model family (``efficientnetv2_keras.models``) imports keras only, so
``from efficientnetv2_keras import EfficientNetV2S`` works on the JAX and
PyTorch backends and where TensorFlow is not installed. Everything is imported
lazily, on first use: the models (and so keras, which imports TensorFlow on its
TensorFlow backend), and everything that needs TensorFlow (tf.data pipelines,
the progressive-learning callback, training recipes, export). So the commands
(``efficientnetv2_keras.cli``) are first to import TensorFlow, and can keep its
start-up lines off the terminal.
"""

import importlib
import pkgutil

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "ProgressiveLearning": "efficientnetv2_keras.progressive",
    "progressive_schedule": "efficientnetv2_keras.progressive",
    "build_dataset": "efficientnetv2_keras.data",
}
_SUBPACKAGES = ("models", "data", "progressive", "training", "export", "hparams", "weights")
_MODELS = "efficientnetv2_keras.models"


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"efficientnetv2_keras.{name}")
    # `from efficientnetv2_keras import cli` asks for the attribute before importing the submodule: not
    # found here, so that the import goes on without importing the models first.
    if (name.startswith("__") and name != "__all__") or name in _submodules():
        raise AttributeError(f"module 'efficientnetv2_keras' has no attribute {name!r}")
    models = importlib.import_module(_MODELS)
    if name == "__all__":  # `from efficientnetv2_keras import *`: only the model API (TensorFlow-free)
        return list(models.__all__)
    if name in models.__all__:
        return getattr(models, name)
    raise AttributeError(f"module 'efficientnetv2_keras' has no attribute {name!r}")


def _submodules():
    return {module.name for module in pkgutil.iter_modules(__path__)}


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES) | set(importlib.import_module(_MODELS).__all__))
