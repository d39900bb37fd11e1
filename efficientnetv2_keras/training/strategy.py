"""Distribution strategy and mixed-precision selection (REFERENCE §3.5 runtime).

    strategy = get_strategy("auto")             # TPU if found, else all GPUs, else the default
    configure_mixed_precision(resolve_mixed_precision("auto", strategy))
    with strategy.scope():
        model = ...; model.compile(...)
    train = distribute_dataset(strategy, lambda ctx: build_dataset(..., batch_size=global_batch,
                                                                   input_context=ctx))

`batch_size` in the recipes is the global batch over all replicas (the paper's 4096); each replica
gets `per_replica_batch_size(global_batch, strategy)`, which `input_context.get_per_replica_batch_size`
also computes inside `distribute_dataset`.
"""

import os

import keras
import tensorflow as tf
from absl import logging

from efficientnetv2_keras.hparams import PRECISIONS, STRATEGIES

# Cheap signs that a TPU may be reachable; without any, "auto" never asks the TPU resolver (which
# can query the GCE metadata server).
_TPU_ENV_VARS = ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "COLAB_TPU_ADDR", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS",
                 "TPU_WORKER_HOSTNAMES")


def _tpu_hint(tpu):
    if tpu:
        return True
    if any(os.environ.get(name) for name in _TPU_ENV_VARS):
        return True
    return os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")  # TPU VM devices


class StrategyUnavailableError(RuntimeError):
    """The requested runtime.strategy cannot run on this machine (no TPU, no GPU): the commands report it
    as a usage error (efficientnetv2_keras.cli)."""


def _tpu_strategy(tpu=None):
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


def get_strategy(name="auto", tpu=None):
    """A `tf.distribute.Strategy` by name.

    "auto": TPUStrategy if a TPU resolves (tried only when the environment hints at one, so it is
            fast and quiet elsewhere), MirroredStrategy over all GPUs if any, else the default strategy.
    "tpu": TPUStrategy, or a RuntimeError when no TPU is found.
    "gpus": MirroredStrategy over all local GPUs (RuntimeError without GPUs).
    "multi_worker": MultiWorkerMirroredStrategy (cluster from the TF_CONFIG environment variable).
    "cpu": OneDeviceStrategy on the CPU, even when GPUs are visible.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "auto" and _tpu_hint(tpu):
        try:
            return _tpu_strategy(tpu)
        except RuntimeError as error:
            logging.info("No TPU (%s); trying GPUs.", error)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "gpus":
        if not gpus:
            raise StrategyUnavailableError("strategy 'gpus' was requested but TensorFlow sees no GPU "
                               "(tf.config.list_physical_devices('GPU') is empty); use 'auto' or 'cpu' "
                               "(--strategy=auto, or runtime.strategy=auto).")
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if gpus:  # auto
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()


def is_tpu_strategy(strategy):
    tpu_types = tuple(
        t for t in (getattr(tf.distribute, "TPUStrategy", None),
                    getattr(tf.distribute.experimental, "TPUStrategy", None)) if t is not None
    )
    return isinstance(strategy, tpu_types)


def _uses_gpus(strategy):
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: whatever device TensorFlow places ops on
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in str(device).upper() for device in devices)


def default_mixed_precision(strategy=None):
    """"mixed_bfloat16" on TPU, "mixed_float16" on GPU, "float32" on CPU (REFERENCE §3.5 runtime)."""
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


def per_replica_batch_size(global_batch_size, strategy=None):
    """The batch each replica computes: global / num_replicas_in_sync (must divide evenly)."""
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"The global batch size {global_batch_size} does not divide over {replicas} replicas; use a "
            f"multiple of {replicas} (e.g. {max(replicas, global_batch_size // replicas * replicas)})."
        )
    return global_batch_size // replicas


def global_batch_size(per_replica_batch, strategy=None):
    """per_replica_batch * num_replicas_in_sync."""
    strategy = strategy or tf.distribute.get_strategy()
    return int(per_replica_batch) * strategy.num_replicas_in_sync


def distribute_dataset(strategy, dataset_fn):
    """`dataset_fn(input_context)` per input pipeline, distributed by `strategy` (for `fit`).

    `dataset_fn` builds the pipeline of one worker: pass `input_context` to `data.build_dataset`,
    which shards by worker and batches `input_context.get_per_replica_batch_size(global_batch)`.
    With the default (non-distributed) strategy the plain dataset is returned.
    """
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return dataset_fn(tf.distribute.InputContext())
    return strategy.distribute_datasets_from_function(dataset_fn)
