"""TPUStrategy: found only where the environment hints at a TPU, or a clear error saying why not."""

import os

import tensorflow as tf
from absl import logging

from efficientnetv2_keras.training.strategy.errors import StrategyUnavailableError
from efficientnetv2_keras.training.strategy.keras_distribution import KerasDistribution

# Cheap signs that a TPU may be reachable; without any, "auto" never asks the TPU resolver (which
# can query the GCE metadata server).
_TPU_ENV_VARS = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS",
                 "TPU_WORKER_HOSTNAMES")

def tpu_hinted(tpu):
    if tpu:
        return True
    if any(os.environ.get(name) for name in _TPU_ENV_VARS):
        return True
    return os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")  # TPU VM devices

def tpu_strategy(tpu=None):
    """TPUStrategy or raises StrategyUnavailableError explaining why no TPU was found."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise StrategyUnavailableError(
            f"strategy 'tpu' was requested but no TPU was found ({type(error).__name__}: {error}). On a "
            "Cloud TPU VM run on the TPU host; otherwise pass the TPU name or grpc:// address "
            "(runtime.tpu=...), or use runtime.strategy=auto/gpus/cpu."
        ) from None
    logging.info("TPU devices: %s", tf.config.list_logical_devices("TPU"))
    return tf.distribute.TPUStrategy(resolver)

def is_tpu_strategy(strategy):
    if isinstance(strategy, KerasDistribution):
        return strategy.platform == "tpu"
    tpu_types = tuple(
        t for t in (getattr(tf.distribute, "TPUStrategy", None),
                    getattr(tf.distribute.experimental, "TPUStrategy", None)) if t is not None
    )
    return isinstance(strategy, tpu_types)
