"""The JAX backend's "strategy": Keras' own `keras.distribution.DataParallel` behind the small interface of
a tf.distribute strategy that the trainer uses (`scope()`, `num_replicas_in_sync`)."""

import contextlib

import keras

from efficientnetv2_keras.training.strategy.errors import StrategyUnavailableError

class KerasDistribution:
    """The JAX backend's "strategy": `keras.distribution.DataParallel` over `devices`, or one device.

    `scope()` makes the distribution current (variables are replicated over the devices, `fit` and
    `evaluate` shard each batch over them); `num_replicas_in_sync` is the number of devices.
    """

    def __init__(self, devices, pin=False):
        # pin: place even a single device's variables and batches there (the CPU beside visible GPUs).
        self.devices = list(devices)
        self.platform = self.devices[0].split(":")[0].lower()
        distribute = len(self.devices) > 1 or pin
        self.distribution = keras.distribution.DataParallel(devices=self.devices) if distribute else None

    @property
    def num_replicas_in_sync(self):
        return len(self.devices)

    def scope(self):
        return self.distribution.scope() if self.distribution is not None else contextlib.nullcontext()

    def __repr__(self):
        kind = "DataParallel" if self.distribution is not None else "one device"
        return f"KerasDistribution({kind}: {', '.join(self.devices)})"

def distribution_scope(strategy):
    """The scope a whole run (build, fit, evaluate) needs: the Keras distribution's on JAX; nothing for a
    tf.distribute strategy (Keras enters it itself; the model is built under `strategy.scope()`)."""
    return strategy.scope() if isinstance(strategy, KerasDistribution) else contextlib.nullcontext()

def tensorflow_only_error(name):
    what = {"tpu": "TPUStrategy", "multi_worker": "MultiWorkerMirroredStrategy"}[name]
    return StrategyUnavailableError(
        f"runtime.strategy={name!r} ({what}) needs the TensorFlow backend, but KERAS_BACKEND is "
        f"{keras.backend.backend()!r}. Run with KERAS_BACKEND=tensorflow, or on JAX use runtime.strategy=auto "
        "(keras.distribution.DataParallel over every local device JAX sees: GPUs, TPU cores, or one CPU)."
    )

def jax_strategy(name):
    if name in ("tpu", "multi_worker"):
        raise tensorflow_only_error(name)
    if name == "cpu":
        return KerasDistribution(keras.distribution.list_devices("cpu")[:1], pin=True)
    if name == "gpus":
        try:
            gpus = keras.distribution.list_devices("gpu")
        except RuntimeError:
            gpus = []
        if not gpus:
            raise StrategyUnavailableError("strategy 'gpus' was requested but JAX sees no GPU (jax.devices('gpu') "
                               "fails); install jax with CUDA, or use 'auto' or 'cpu'.")
        return KerasDistribution(gpus)
    # auto: every device of JAX's default platform (several CPU devices only when asked for, e.g.
    # XLA_FLAGS=--xla_force_host_platform_device_count=2).
    return KerasDistribution(keras.distribution.list_devices())
