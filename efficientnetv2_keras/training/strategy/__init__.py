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

One module per job: `choice` (`get_strategy`), `tpu`, `cluster` (the TF_CONFIG meeting point and
MultiWorkerMirroredStrategy), `keras_distribution` (the JAX adapter), `batches` (per-replica batches,
distributed datasets, JAX's even split), `batch_norm` (synchronized BatchNorm), `precision` (mixed
precision), `keras_fixes` (Keras' multi-worker fit).
"""

from efficientnetv2_keras.training.strategy.batch_norm import synchronize_batch_norm, wants_synchronized_batch_norm
from efficientnetv2_keras.training.strategy.batches import (
    check_batches_divide,
    distribute_dataset,
    global_batch_size,
    per_replica_batch_size,
)
from efficientnetv2_keras.training.strategy.choice import get_strategy
from efficientnetv2_keras.training.strategy.cluster import (
    DEFAULT_WORKER_TIMEOUT,
    is_multi_worker,
    multi_worker_strategy,
    wait_for_workers,
)
from efficientnetv2_keras.training.strategy.errors import ClusterError, StrategyUnavailableError
from efficientnetv2_keras.training.strategy.keras_distribution import KerasDistribution, distribution_scope
from efficientnetv2_keras.training.strategy.keras_fixes import fit_multi_worker
from efficientnetv2_keras.training.strategy.precision import (
    configure_mixed_precision,
    default_mixed_precision,
    resolve_mixed_precision,
)
from efficientnetv2_keras.training.strategy.tpu import is_tpu_strategy

__all__ = [
    "get_strategy",
    "KerasDistribution",
    "distribution_scope",
    "StrategyUnavailableError",
    "ClusterError",
    "DEFAULT_WORKER_TIMEOUT",
    "multi_worker_strategy",
    "wait_for_workers",
    "is_multi_worker",
    "is_tpu_strategy",
    "per_replica_batch_size",
    "global_batch_size",
    "distribute_dataset",
    "check_batches_divide",
    "wants_synchronized_batch_norm",
    "synchronize_batch_norm",
    "default_mixed_precision",
    "resolve_mixed_precision",
    "configure_mixed_precision",
    "fit_multi_worker",
]


def __getattr__(name):
    # `check_even_batches(strategy, config, ...)` reads the recipe, so it is the resolver's
    # (training.recipe_data); still importable from here.
    if name == "check_even_batches":
        from efficientnetv2_keras.training.recipe_data import check_even_batches

        return check_even_batches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
