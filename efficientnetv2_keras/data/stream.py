"""The order and the randomness of a training pipeline: an endless stream of passes over the split.

Pass p of the stream visits every example of this worker's shard once, in an order drawn from (seed,
worker, image size, p). Example k of pass p draws its crop, flip and RandAugment from (seed, p, k), and a
batch draws its mixup/CutMix from the seed of its first example. Nothing depends on how often a dataset
object was iterated in this process, so a pipeline that starts at pass p (`build_dataset(epoch=p)`) or
at example q of the stream (`position=q`), as a resumed run does, continues the uninterrupted run's
stream exactly: the same examples, in the same order, augmented the same way.

What each kind of source guarantees:

* Random access (`DigitsSource`, `ArraySource`, `ImageFolderSource`, and a `CachedSource` in memory
  whose split size per worker is known): every pass is a fresh, uniformly random permutation of the
  shard, whatever `shuffle_buffer` (only 0 matters: no shuffling, every pass in the split's order), so
  a class-sorted folder is mixed from the first batch. A position is reached by skipping indices:
  nothing is decoded.
* Streaming (tensorflow-datasets, TFRecords, a `CachedSource` with a file cache): each pass reads the
  files in a seeded order (a file cache: in the order it was filled) through a seeded shuffle buffer of
  `shuffle_buffer` records, so examples are mixed only as far as the file order and the buffer reach
  (tensorflow-datasets and the ImageNet TFRecords are shuffled when they are written). A position skips
  records (they are read, not decoded); pass boundaries assume `num_examples // workers` records per
  worker, which is exact for one worker.
"""

from __future__ import annotations

import contextlib
import secrets

import keras
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
INT64_MAX = 2**63 - 1
_SALT_STRIDE = 1_000_000_007  # separates the streams of successive iterations of one dataset object


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def start_reader(value, name):
    """An int >= 0, a scalar integer `tf.Variable` or a zero-argument callable -> a function giving an
    int64 tensor, evaluated when an iterator starts reading (None stays None)."""
    if value is None:
        return None
    if _is_int(value):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
        return lambda: tf.constant(value, tf.int64)
    if isinstance(value, tf.Variable):
        if not value.dtype.is_integer or value.shape.rank != 0:
            raise ValueError(f"{name} must be a scalar integer tf.Variable, got {value.dtype.name} {value.shape}.")
        return lambda: tf.cast(value.read_value(), tf.int64)
    if callable(value):
        return lambda: tf.cast(value(), tf.int64)
    raise ValueError(
        f"{name} must be an int >= 0, a scalar integer tf.Variable or a zero-argument function returning one "
        f"(read when an iterator starts), got {value!r}."
    )


def examples_per_step(batch_size, input_context=None):
    """Examples one input pipeline gives per training step: the global batch over the input pipelines."""
    return batch_size // (input_context.num_input_pipelines if input_context is not None else 1)


class FitEpoch(keras.callbacks.Callback):
    """The epoch `fit` is training, for `build_dataset(epoch=...)`: a resumed run continues its data.

    `on_epoch_begin` sets `epoch` (a tf.Variable) before Keras makes the epoch's iterator, so each
    epoch reads pass `epoch` of the stream, also after a restart at epoch k:

        fit_epoch = FitEpoch()
        train = build_dataset(source, "train", 128, 64, training=True, seed=0, epoch=fit_epoch.epoch)
        model.fit(train, epochs=30, callbacks=[fit_epoch, keras.callbacks.BackupAndRestore(backup_dir)])

    With epochs of a fixed number of steps (`fit(steps_per_epoch=N)`, one iterator for the run), read
    one endless stream from where the first epoch of this `fit` starts:

        fit_epoch = FitEpoch(steps_per_epoch=N)
        train = build_dataset(..., repeat=True, position=fit_epoch.stream_position(examples_per_step(64)))
        model.fit(train, epochs=30, steps_per_epoch=N, callbacks=[fit_epoch])
    """

    def __init__(self, steps_per_epoch=None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        with tf.init_scope():  # a plain host variable, also when created under a strategy scope
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="fit_epoch")

    def stream_position(self, examples_per_step):
        """A function giving the examples of the stream read before the current epoch (for `position=`)."""
        if not self.steps_per_epoch:
            raise ValueError("stream_position needs FitEpoch(steps_per_epoch=N); without it use epoch=fit_epoch.epoch.")
        return lambda: self.epoch.read_value() * self.steps_per_epoch * examples_per_step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def _start(epoch, position, pass_size, endless):
    """A function giving (first pass, examples of it to skip, salt) when an iterator starts reading."""
    if position is not None:
        read_position = start_reader(position, "position")

        def from_position():
            examples = read_position()
            return examples // pass_size, examples % pass_size, tf.constant(0, tf.int64)

        return from_position
    if epoch is not None:
        read_epoch = start_reader(epoch, "epoch")
        return lambda: (read_epoch(), tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    with tf.init_scope():
        iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="pipeline_iterations")

    def from_iterations():
        # One pass per iteration: iteration i reads pass i (as epoch=i). An endless stream read again
        # gets a stream of its own (the salt), not the previous one's later passes again.
        iteration = iterations.assign_add(1) - 1
        zero = tf.constant(0, tf.int64)
        return (zero, zero, iteration) if endless else (iteration, zero, zero)

    return from_iterations


def _pass_keys(stream_key, pass_index):
    """Three int64 keys of one pass: its order (two), and the seeds of its examples."""
    return tf.random.stateless_uniform([3], tf.stack([stream_key, pass_index]), minval=None, maxval=None,
                                       dtype=tf.int64)


def _index_pass(count, shuffle):
    """Pass -> (record index, example seed) for every example of a random-access shard, permuted
    (`shuffle`) or in the split's order."""

    def one_pass(pass_index, skip, stream_key):
        keys = _pass_keys(stream_key, pass_index)
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=keys[:2])
        within = tf.range(skip, count, dtype=tf.int64)
        seeds = tf.stack([tf.fill(tf.shape(within), keys[2]), within], axis=1)
        return tf.data.Dataset.from_tensor_slices((order[skip:], seeds))

    return one_pass


def _streaming_pass(records_for, shuffle_buffer):
    """Pass -> (record, example seed) through a seeded file order and shuffle buffer."""

    def one_pass(pass_index, skip, stream_key):
        keys = _pass_keys(stream_key, pass_index)
        with _without_global_seed():
            records = records_for(keys[0])
            if shuffle_buffer > 1:
                records = records.shuffle(shuffle_buffer, seed=keys[1], reshuffle_each_iteration=False)
        seeds = tf.data.Dataset.range(INT64_MAX).map(lambda within: tf.stack([keys[2], within]))
        return tf.data.Dataset.zip(records, seeds).skip(skip)

    return one_pass


@contextlib.contextmanager
def _without_global_seed():
    """While a pass function is traced: no global seed in its graph.

    `Dataset.shuffle(seed=<tensor>)` compares (global seed, seed) with (0, 0) in Python, which under a
    global seed of 0 (`keras.utils.set_random_seed(0)`, as the trainer calls) asks for a symbolic tensor's
    truth value and fails. The pass seeds are complete without the global seed, so it is set aside.
    """
    graph = tf.compat.v1.get_default_graph()
    global_seed, graph.seed = graph.seed, None
    try:
        yield
    finally:
        graph.seed = global_seed


def _passes(start, one_pass, endless, base_key):
    """The passes from the start `start()` gives when an iterator begins reading, flattened."""

    @tf.autograph.experimental.do_not_convert
    def begin(_):
        first, skip, salt = start()
        stream_key = base_key + salt * _SALT_STRIDE  # int64 arithmetic wraps around: still a key
        passes = tf.data.Dataset.range(first, INT64_MAX if endless else first + 1)
        return passes.flat_map(
            tf.autograph.experimental.do_not_convert(
                lambda index: one_pass(index, tf.where(index == first, skip, 0), stream_key)
            )
        )

    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).flat_map(begin)


def training_examples(source, split, *, input_context, base_key, shuffle_buffer, endless, epoch=None,
                      position=None):  # fmt: skip
    """The training stream; see the module docstring.

    Returns (dataset of (item, example seed [2]), fetch, examples per pass when every pass yields exactly
    that many, else None): `fetch(item)` gives the decoded (image, label), to be called in the pipeline's
    per-example map (one map per example instead of two). Sources that skip unreadable files are fetched
    here already, so those can be dropped (fetch is then the identity).
    """
    base_key = secrets.randbits(62) if base_key is None else base_key
    indexed = source.indexed_records(split, input_context)
    if indexed is not None:
        records, count = indexed
        one_pass, pass_size = _index_pass(count, shuffle=shuffle_buffer > 0), count
    else:
        records, count = None, None
        one_pass = _streaming_pass(_records_for(source, split, input_context, base_key), shuffle_buffer)
        # Counted now, outside the dataset's functions (TFRecords are counted by reading them once).
        pass_size = _estimated_shard_size(source, split, input_context) if position is not None else None
    dataset = _passes(_start(epoch, position, pass_size, endless), one_pass, endless, base_key)

    def fetch(item):
        record = tf.data.experimental.at(records, item) if records is not None else item
        return record if source.records_decoded else source.decode(record)

    if source.skip_decode_errors:  # unreadable files (and a cache without them) are dropped, and logged
        dataset = dataset.map(lambda item, seed: (fetch(item), seed), num_parallel_calls=AUTOTUNE)
        return dataset.ignore_errors(log_warning=True), (lambda example: example), None
    return dataset, fetch, count


def _records_for(source, split, input_context, base_key):
    """Pass key -> the records of one pass of a streaming source: files in a seeded order; a cache as filled."""
    if source.records_decoded:  # a CachedSource: one cache, filled in its first pass's order
        cached = source.records(split, shuffle_files=True, input_context=input_context, seed=base_key % INT64_MAX)
        return lambda key: cached
    return lambda key: source.records(split, shuffle_files=True, input_context=input_context, seed=key)


def _estimated_shard_size(source, split, input_context):
    exact = source.shard_size(split, input_context)
    if exact is not None:
        return exact
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    return max(1, source.num_examples(split) // pipelines)
