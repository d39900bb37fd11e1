"""The global batch over replicas: each replica's share, the datasets per worker, and JAX's even split."""

import tensorflow as tf

from efficientnetv2_keras.training.strategy.keras_distribution import KerasDistribution

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
