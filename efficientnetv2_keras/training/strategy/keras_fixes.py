"""Two narrow fixes of Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy (`fit_multi_worker`)."""

import tensorflow as tf

from efficientnetv2_keras.training.strategy.cluster import is_multi_worker

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
