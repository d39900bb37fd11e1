"""BatchNormalization over the global batch of all replicas (`model.sync_batch_norm`)."""

import keras
import tensorflow as tf

from efficientnetv2_keras.training.ema import batch_norm_layers
from efficientnetv2_keras.training.strategy.cluster import is_multi_worker
from efficientnetv2_keras.training.strategy.tpu import is_tpu_strategy

def wants_synchronized_batch_norm(strategy, setting=None):
    """Whether BatchNorm should normalize over the global batch (`model.sync_batch_norm`).

    null (auto): yes under TPUStrategy (the released `main_tf2.py` sets `bn_type='tpu_bn'`, cross-replica
    BatchNorm, on TPU) and under MultiWorkerMirroredStrategy (each worker otherwise keeps moving
    statistics of its own shard, and the workers' models drift apart); no elsewhere (MirroredStrategy
    keeps per-replica statistics and saves the first replica's, as the released code does on GPUs).
    true/false force it; true needs the TensorFlow backend.
    """
    if setting is not None:
        return bool(setting)
    return isinstance(strategy, tf.distribute.Strategy) and (is_multi_worker(strategy) or is_tpu_strategy(strategy))

def synchronize_batch_norm(model, synchronized=True):
    """Makes every BatchNormalization layer of `model` compute its batch statistics over all replicas.

    Keras' `BatchNormalization(synchronized=True)`: each training step all-reduces the per-replica sums,
    so the moving statistics are those of the global batch and the same on every replica and worker.
    Only training under a tf.distribute strategy changes; inference and one replica are unaffected.
    Saved files keep `synchronized: false` in the layer config, so they load on every backend (JAX and
    PyTorch refuse `synchronized=True`); the trainer applies the recipe's setting again on resume.
    Returns the number of layers changed.
    """
    if synchronized and keras.backend.backend() != "tensorflow":
        raise ValueError(f"model.sync_batch_norm=true needs the TensorFlow backend (Keras' synchronized "
                         f"BatchNormalization); KERAS_BACKEND is {keras.backend.backend()!r}.")
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.synchronized = bool(synchronized)
        if "get_config" not in vars(layer):
            layer.get_config = _config_unsynchronized(layer.get_config)
    return len(layers)

def _config_unsynchronized(get_config):
    def config():
        return {**get_config(), "synchronized": False}

    return config
