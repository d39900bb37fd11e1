"""Distribution strategy and mixed-precision selection, on the TensorFlow and JAX backends.

    strategy = get_strategy("auto")             # TPU if found, else all GPUs, else the default
    configure_mixed_precision(resolve_mixed_precision("auto", strategy))
    with strategy.scope():
        model = ...; model.compile(...)
    train = distribute_dataset(strategy, lambda ctx: build_dataset(..., batch_size=global_batch,
                                                                   input_context=ctx))

`batch_size` in the recipes is the global batch over all replicas (the paper's 4096); each replica
gets `per_replica_batch_size(global_batch, strategy)`, which `input_context.get_per_replica_batch_size`
also computes inside `distribute_dataset`.

On the JAX backend (`KERAS_BACKEND=jax`) `get_strategy` returns a `KerasDistribution`: Keras' own
`keras.distribution.DataParallel` over the devices JAX sees (or one device), behind the same small
interface (`scope()`, `num_replicas_in_sync`). The model is built, trained and evaluated inside
`distribution_scope(strategy)`; `fit` then splits every global batch over the devices and averages
the gradients. TPUStrategy and MultiWorkerMirroredStrategy are TensorFlow's and stay TensorFlow-only.
"""

import contextlib
import json
import os
import socket
import time

import keras
import tensorflow as tf
from absl import logging

from efficientnetv2_keras.limits import PRECISIONS, STRATEGIES
from efficientnetv2_keras.training.ema import batch_norm_layers

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


DEFAULT_WORKER_TIMEOUT = 600.0


class ClusterError(RuntimeError):
    """A multi-worker cluster that cannot start: a peer that never came up, a port in use."""


def _cluster_from_tf_config():
    """(cluster dict, task type, task index) from TF_CONFIG, or a ValueError saying what is wrong."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable on every worker, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
            "(index 1 on the second host); see the README, 'Training on several machines'."
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        return cluster, task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description ({type(error).__name__}: {error}): {text!r}") from None


def _peers(cluster, task_type, task_index):
    return [(kind, index, address) for kind, addresses in cluster.items() if kind in ("chief", "worker")
            for index, address in enumerate(addresses) if (kind, index) != (task_type, task_index)]


def _split_address(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_workers(cluster, task_type, task_index, timeout=DEFAULT_WORKER_TIMEOUT, poll=0.5):
    """Waits until every other chief/worker of `cluster` is listening; a RuntimeError after `timeout` s.

    TensorFlow's own start-up blocks in C++ until every task has registered, for ever and deaf to
    SIGTERM (its preemption notifier takes the signal). So the tasks first meet here, in Python: each
    listens on its own address (the port TensorFlow then takes over) and connects to the others'.
    SIGTERM and Ctrl-C end the wait at once.
    """
    own = cluster.get(task_type, [None] * (task_index + 1))[task_index]
    listener = None
    if own:
        listener = socket.socket(socket.AF_INET6 if ":" in _split_address(own)[0] else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("", _split_address(own)[1]))
        except OSError as error:
            listener.close()
            raise ClusterError(
                f"multi_worker: cannot listen on this task's address {own} ({task_type} {task_index} in "
                f"TF_CONFIG): {error}. Is another process using the port, or is the task index wrong?"
            ) from None
        listener.listen(16)
        listener.settimeout(poll)
    deadline = time.monotonic() + timeout
    waiting = _peers(cluster, task_type, task_index)
    try:
        while waiting:
            still = []
            for kind, index, address in waiting:
                try:
                    socket.create_connection(_split_address(address), timeout=min(poll, 2.0)).close()
                except OSError:
                    still.append((kind, index, address))
            waiting = still
            if not waiting:
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{kind} {index} at {address}" for kind, index, address in waiting)
                raise ClusterError(
                    f"multi_worker: {names} did not come up within {timeout:g} s (runtime.worker_timeout). "
                    "Start every task listed in TF_CONFIG (the same command, each with its own task index), "
                    "check the addresses and that their ports are reachable from here, or raise "
                    "runtime.worker_timeout."
                )
            if listener is not None:  # answer the others while waiting (and pace the loop)
                try:
                    listener.accept()[0].close()
                except OSError:
                    pass
            else:
                time.sleep(poll)
    finally:
        if listener is not None:
            listener.close()


def multi_worker_strategy(timeout=DEFAULT_WORKER_TIMEOUT):
    """MultiWorkerMirroredStrategy over the TF_CONFIG cluster, once every peer is reachable.

    Call it first thing (before any other TensorFlow call): collectives must be configured before
    TensorFlow initializes. Raises ValueError for a missing/malformed TF_CONFIG and RuntimeError when a
    peer is not up within `timeout` seconds. Afterwards SIGTERM ends the process (TensorFlow's
    preemption notifier would otherwise swallow it); the epoch backups make that safe.
    """
    import signal

    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    cluster, task_type, task_index = _cluster_from_tf_config()
    wait_for_workers(cluster, task_type, task_index, timeout)
    cluster_spec = tf.train.ClusterSpec(cluster)
    if task_type in ("chief", "worker") and context.context().coordination_service is None:
        from tensorflow.python.distribute.collective_all_reduce_strategy import coordination_config_pb2

        # What MultiWorkerMirroredStrategy configures itself, plus a registration timeout: a peer that
        # dies between the meeting above and TensorFlow's start-up then fails this task too.
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(cluster_spec),
            cluster_register_timeout_in_ms=int(timeout * 1000),
            coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
                              for job in ("chief", "worker") if job in cluster_spec.jobs],
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: leave signals alone
        pass
    return strategy


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


def check_batches_divide(strategy, batch_size, eval_batch_size, eval_splits=(), num_examples=None):
    """Under `KerasDistribution` over several devices every batch, the last batch of an evaluation split
    included, is split evenly over the devices (JAX refuses an uneven split). Raises a ValueError
    naming the batch size to change, before anything is trained. Checks the training `batch_size`, and
    each of `eval_splits` (None entries skipped) of `num_examples(split)` examples at `eval_batch_size`.
    No-op otherwise (tf.distribute handles uneven last batches)."""
    if not isinstance(strategy, KerasDistribution) or strategy.num_replicas_in_sync == 1:
        return
    devices = strategy.num_replicas_in_sync
    if batch_size % devices:
        raise ValueError(f"train.batch_size={batch_size} does not divide over {devices} devices; use a "
                         f"multiple of {devices}.")
    batch = eval_batch_size
    for split in dict.fromkeys(s for s in eval_splits if s):
        examples = num_examples(split)
        last = examples % batch
        if batch % devices or last % devices:
            raise ValueError(
                f"eval.batch_size={batch} splits the {examples} examples of '{split}' into batches ending with one of "
                f"{last or batch}, which does not divide over {devices} devices (keras.distribution.DataParallel "
                f"needs every batch to). Choose eval.batch_size, a multiple of {devices}, that leaves a last batch "
                f"divisible by {devices}."
            )


def _tensorflow_only(name):
    what = {"tpu": "TPUStrategy", "multi_worker": "MultiWorkerMirroredStrategy"}[name]
    return StrategyUnavailableError(
        f"runtime.strategy={name!r} ({what}) needs the TensorFlow backend, but KERAS_BACKEND is "
        f"{keras.backend.backend()!r}. Run with KERAS_BACKEND=tensorflow, or on JAX use runtime.strategy=auto "
        "(keras.distribution.DataParallel over every local device JAX sees: GPUs, TPU cores, or one CPU)."
    )


def _jax_strategy(name):
    if name in ("tpu", "multi_worker"):
        raise _tensorflow_only(name)
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
        return _jax_strategy(name)
    if keras.backend.backend() != "tensorflow" and name in ("tpu", "multi_worker"):
        raise _tensorflow_only(name)
    if name == "tpu":
        return _tpu_strategy(tpu)
    if name == "auto" and _tpu_hint(tpu):
        try:
            return _tpu_strategy(tpu)
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


def is_tpu_strategy(strategy):
    if isinstance(strategy, KerasDistribution):
        return strategy.platform == "tpu"
    tpu_types = tuple(
        t for t in (getattr(tf.distribute, "TPUStrategy", None),
                    getattr(tf.distribute.experimental, "TPUStrategy", None)) if t is not None
    )
    return isinstance(strategy, tpu_types)


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


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


_PATCHED_REDUCE = []


def fit_multi_worker(model, strategy):
    """Makes Keras' `fit`/`evaluate` work under MultiWorkerMirroredStrategy (Keras 3 on TensorFlow);
    returns `model`, untouched under any other strategy.

    Keras 3's TensorFlow trainer fails there in two places, both in private code, so this patches
    both narrowly (the rest of `fit` is unchanged):
    * before the first step it all-reduces a whole input batch only to learn the input shapes
      (`_maybe_symbolic_build`): with one replica per worker the batch is not a PerReplica value and
      the reduce fails ("Attempt to convert a value (PerReplica...)"). Here the local batch gives the
      shapes, as it does on one machine.
    * it averages the scalar metrics over workers with `strategy.reduce("MEAN", v, axis=0)`, which
      rejects scalars ("Invalid reduction dimension 0"). Here scalars are averaged with axis=None.
    """
    if not is_multi_worker(strategy):
        return model
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    if _PATCHED_REDUCE:
        return model
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def reduce(value):
            local = strategy.experimental_local_results(value)[0] if tf_trainer._is_per_replica_instance(value) else value
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED_REDUCE.append(original)
    return model


def __getattr__(name):
    # `check_even_batches(strategy, config, ...)` reads the recipe, so it is the resolver's
    # (training.recipe_data); still importable from here.
    if name == "check_even_batches":
        from efficientnetv2_keras.training.recipe_data import check_even_batches

        return check_even_batches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
