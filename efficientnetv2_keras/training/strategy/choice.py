"""`get_strategy`: a distribution strategy by name, on the TensorFlow and JAX backends."""

import keras
import tensorflow as tf
from absl import logging

from efficientnetv2_keras.limits import STRATEGIES
from efficientnetv2_keras.training.strategy.cluster import DEFAULT_WORKER_TIMEOUT, multi_worker_strategy
from efficientnetv2_keras.training.strategy.errors import StrategyUnavailableError
from efficientnetv2_keras.training.strategy.keras_distribution import jax_strategy, tensorflow_only_error
from efficientnetv2_keras.training.strategy.tpu import tpu_hinted, tpu_strategy

def get_strategy(name="auto", tpu=None, worker_timeout=DEFAULT_WORKER_TIMEOUT):
    """A `tf.distribute.Strategy` by name (a `KerasDistribution` on the JAX backend).

    "auto": TPUStrategy if a TPU resolves (tried only when the environment hints at one, so it is
            fast and quiet elsewhere), MirroredStrategy over all GPUs if any, else the default strategy.
    "tpu": TPUStrategy, or a StrategyUnavailableError (a RuntimeError) when no TPU is found.
    "gpus": MirroredStrategy over all local GPUs (StrategyUnavailableError without GPUs).
    "multi_worker": MultiWorkerMirroredStrategy (cluster from the TF_CONFIG environment variable); a
                    ClusterError (a RuntimeError) when a peer is not reachable within `worker_timeout` seconds.
    "cpu": OneDeviceStrategy on the CPU, even when GPUs are visible.
    On JAX: "auto" is DataParallel over all devices of JAX's default platform (one device: no
    distribution), "gpus" over all GPUs, "cpu" one CPU device; "tpu" and "multi_worker" raise a
    StrategyUnavailableError saying they need TensorFlow.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
    if keras.backend.backend() == "jax":
        return jax_strategy(name)
    if keras.backend.backend() != "tensorflow" and name in ("tpu", "multi_worker"):
        raise tensorflow_only_error(name)
    if name == "tpu":
        return tpu_strategy(tpu)
    if name == "auto" and tpu_hinted(tpu):
        try:
            return tpu_strategy(tpu)
        except RuntimeError as error:
            logging.info("No TPU (%s); trying GPUs.", error)
    if name == "multi_worker":  # before anything initializes TensorFlow's context (collectives need that)
        return multi_worker_strategy(worker_timeout)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "gpus":
        if not gpus:
            raise StrategyUnavailableError("strategy 'gpus' was requested but TensorFlow sees no GPU "
                               "(tf.config.list_physical_devices('GPU') is empty); use 'auto' or 'cpu' "
                               "(--strategy=auto, or runtime.strategy=auto).")
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if gpus:  # auto
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()
