"""The mixed-precision policy of a device: bfloat16 on TPU, float16 on GPU, float32 on CPU."""

import keras
import tensorflow as tf

from efficientnetv2_keras.limits import PRECISIONS
from efficientnetv2_keras.training.strategy.keras_distribution import KerasDistribution
from efficientnetv2_keras.training.strategy.tpu import is_tpu_strategy

def _uses_gpus(strategy):
    if isinstance(strategy, KerasDistribution):
        return strategy.platform == "gpu"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: whatever device TensorFlow places ops on
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in str(device).upper() for device in devices)

def default_mixed_precision(strategy=None):
    """"mixed_bfloat16" on TPU, "mixed_float16" on GPU, "float32" on CPU (the released code's choice
    with mixed precision on: bfloat16 on TPU, float16 elsewhere)."""
    strategy = strategy or tf.distribute.get_strategy()
    if is_tpu_strategy(strategy):
        return "mixed_bfloat16"
    if _uses_gpus(strategy):
        return "mixed_float16"
    return "float32"

def resolve_mixed_precision(value, strategy=None):
    """`train.mixed_precision` ("auto" or a policy name) -> a Keras dtype policy name."""
    if value not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {value!r}.")
    return default_mixed_precision(strategy) if value == "auto" else value

def configure_mixed_precision(policy):
    """Sets Keras' global dtype policy; call before building the model. Returns the policy name.

    With "mixed_float16", `model.compile` wraps the optimizer in `keras.optimizers.LossScaleOptimizer`
    (dynamic loss scaling) by itself; "mixed_bfloat16" needs no loss scaling.
    """
    if policy not in PRECISIONS or policy == "auto":
        raise ValueError(f"policy must be one of {PRECISIONS[1:]}, got {policy!r}.")
    keras.mixed_precision.set_global_policy(policy)
    return keras.mixed_precision.global_policy().name
