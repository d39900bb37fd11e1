"""The dataset side of `ProgressiveLearning`: one dataset for `fit` built from the M stage pipelines.

Keras wraps the training dataset once, when `fit` starts, and no public API lets a callback swap it. So
`StageDatasets` hands `fit` one dataset built from the pipelines `dataset_fn(stage)` returns, in one
of two ways:

* One pass per epoch (default, `fit` without `steps_per_epoch`): Keras makes a new iterator every
  epoch, after `on_epoch_begin`. The dataset is `tf.data.Dataset.choose_from_datasets` over the
  finite stage pipelines, steered by an epoch variable that the callback's `on_epoch_begin` sets, so
  every batch of an epoch comes from that epoch's stage. The epoch's iterator, with every buffer of
  its stage pipeline, is dropped at the end of the epoch.
* `steps_per_epoch=N`: Keras keeps one iterator for the whole run, so switching on a variable would
  go wrong: prefetched batches of the old stage would start the new one. Instead the dataset is a
  fixed sequence: for each run of steps that share a stage, that many batches from the stage's
  (repeated) pipeline, continuing through the data from epoch to epoch (epochs may be shorter than
  one pass). Which batch belongs to which stage is decided by its position, not by timing. A stage's
  pipeline is started when its first batch is needed and released (iterator, shuffle and prefetch
  buffers) when its last batch has been read. Stages with their own batch size (`batch_scaling`)
  train round(L_i N / k_i) steps each, their range's data (`ProgressiveSchedule.fit_layout`), in fit
  epochs of `steps_per_epoch` steps (near N); a stage then starts at its step, possibly inside a fit
  epoch.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf


class StageDatasets:
    """The stage pipelines of a `ProgressiveSchedule` as one dataset for `fit` (module docstring).

    Args and attributes: those of `ProgressiveLearning` (schedule, dataset_fn, steps_per_epoch; epoch,
    epochs, layout), which keeps one of these and passes its dataset on.
    """

    def __init__(self, schedule, dataset_fn, steps_per_epoch=None):
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1
        ):
            raise ValueError(f"steps_per_epoch must be a positive int or None, got {steps_per_epoch!r}.")
        if schedule.unit == "step" and not steps_per_epoch:
            raise ValueError(
                "This schedule counts steps; pass steps_per_epoch so stages can be mapped onto epochs, "
                "or build the schedule with total_epochs."
            )
        self.schedule = schedule
        self.dataset_fn = dataset_fn
        self.layout = schedule.fit_layout(int(steps_per_epoch)) if schedule.batch_scaled and steps_per_epoch else None
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        if self.layout is not None:
            self.steps_per_epoch, self.epochs = self.layout.steps_per_epoch, self.layout.epochs
        else:
            self.epochs = schedule.total if schedule.unit == "epoch" else -(-schedule.total // self.steps_per_epoch)
        self._dataset = None
        self.pass_batches = None  # batches per epoch of one-pass stage pipelines, when known
        # The stage of every epoch (at its first step), looked up by the dataset at run time (epochs
        # past the end keep the last stage).
        self._stage_of_epoch = [self.stage_for_epoch(epoch).index for epoch in range(self.epochs)]
        self._runs = self._step_runs() if self.steps_per_epoch else None
        with tf.init_scope():  # plain host variables, also when created under a strategy scope
            # The epoch being trained, set before Keras makes the epoch's iterator: stage pipelines read
            # it (build_dataset(epoch=progressive.epoch)) to draw that epoch's pass.
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="progressive_epoch")
            # steps_per_epoch layout: the step at which the run of steps being started begins.
            self._run_start = tf.Variable(0, dtype=tf.int64, trainable=False, name="progressive_run_start")

    def stage_for_epoch(self, epoch):
        """The stage in effect at the first step of `epoch` (0-based)."""
        if self.layout is not None:
            return self.schedule.stages[self.layout.stage_index_at(epoch * self.steps_per_epoch)]
        position = epoch * self.steps_per_epoch if self.schedule.unit == "step" else epoch
        return self.schedule.stage_at(min(position, self.schedule.total - 1))

    @property
    def dataset(self):
        """The dataset to pass to `fit`: each epoch yields the batches of that epoch's stage."""
        if self._dataset is None:
            self._dataset = self._stream([self._stage_dataset(s) for s in self.schedule.stages])
        return self._dataset

    def distribute(self, strategy):
        """The dataset for `fit` under a multi-worker strategy: built per worker with its input context."""

        def per_worker(input_context):
            return self._stream([self._stage_dataset(s, input_context) for s in self.schedule.stages])

        return strategy.distribute_datasets_from_function(per_worker)

    def _stage_dataset(self, stage, input_context=None):
        takes_context = len(inspect.signature(self.dataset_fn).parameters) >= 2
        dataset = self.dataset_fn(stage, input_context) if takes_context else self.dataset_fn(stage)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                f"dataset_fn must return a tf.data.Dataset, got {type(dataset).__name__} for stage "
                f"{stage.index + 1}."
            )
        cardinality = int(dataset.cardinality())
        if cardinality == 0:
            raise ValueError(
                f"dataset_fn returned an empty dataset for stage {stage.index + 1}: the split has fewer "
                "examples than one batch (with drop_remainder)?"
            )
        if cardinality == tf.data.INFINITE_CARDINALITY and self.steps_per_epoch is None:
            raise ValueError(
                f"dataset_fn returned an endless (repeated) dataset for stage {stage.index + 1}, but without "
                "steps_per_epoch every epoch is one pass over a finite stage pipeline. Build it without "
                "repeat, or give ProgressiveLearning(..., steps_per_epoch=N) and fit(..., steps_per_epoch=N)."
            )
        return dataset

    def _stream(self, datasets):
        _check_element_specs(datasets, self.schedule.stages)
        if self.steps_per_epoch is None:
            return self._one_pass_per_epoch(datasets)
        return self._fixed_steps_per_epoch(datasets)

    def _current_stage_tensor(self):
        epoch = tf.minimum(self.epoch.read_value(), len(self._stage_of_epoch) - 1)
        return tf.gather(tf.constant(self._stage_of_epoch, tf.int64), epoch)

    def _one_pass_per_epoch(self, datasets):
        # The stage is read when each element is produced: Keras makes the epoch's iterator after
        # on_epoch_begin has set the epoch.
        choice = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
        choice = choice.map(lambda _: self._current_stage_tensor())
        switching = tf.data.Dataset.choose_from_datasets(datasets, choice, stop_on_empty_dataset=True)
        cardinalities = {int(d.cardinality()) for d in datasets}
        if len(cardinalities) > 1 and min(cardinalities) > 0:
            # Keras would learn the epoch length from the first epoch and cut longer epochs short.
            raise ValueError(
                "The stage pipelines have different numbers of batches per pass "
                f"({[int(d.cardinality()) for d in datasets]}), e.g. stages with their own batch size "
                "(batch_scaling). One-pass epochs must all have the same length in a single fit: give "
                "ProgressiveLearning(schedule, dataset_fn, steps_per_epoch=N) and fit(..., steps_per_epoch=N), "
                "N = examples // base batch, so each stage reads its data continuously in epochs of N steps."
            )
        self.pass_batches = None
        if len(cardinalities) == 1 and min(cardinalities) > 0:
            # Same batch count in every stage: tell Keras, so the progress bar knows the epoch length.
            self.pass_batches = cardinalities.pop()
            switching = switching.apply(tf.data.experimental.assert_cardinality(self.pass_batches))
        return switching

    def _step_runs(self):
        """Runs of steps with the same stage, [stage index, first step, end step]: the layout's stages,
        else runs of epochs. The last run is open-ended in the dataset, so fit(epochs > self.epochs)
        keeps the last stage, as without steps_per_epoch."""
        if self.layout is not None:
            return [[index, first, first + steps]
                    for index, (first, steps) in enumerate(zip(self.layout.stage_starts, self.layout.stage_steps))]
        runs, steps = [], self.steps_per_epoch
        for epoch, stage in enumerate(self._stage_of_epoch):
            if runs and runs[-1][0] == stage:
                runs[-1][2] = (epoch + 1) * steps
            else:
                runs.append([stage, epoch * steps, (epoch + 1) * steps])
        return runs

    def _fixed_steps_per_epoch(self, datasets):
        runs = self._runs
        stages, firsts, ends = (tf.constant(column, tf.int64) for column in zip(*runs))
        is_last = tf.range(len(runs)) == len(runs) - 1
        repeated = [dataset.repeat() for dataset in datasets]
        steps = self.steps_per_epoch

        def run_batches(stage, first, end, last):
            # Evaluated when the run is reached, i.e. after on_epoch_begin of the first epoch of
            # this fit: a resumed fit starts inside its run, later runs start at their first step.
            start = tf.maximum(first, self.epoch.read_value() * steps)
            with tf.control_dependencies([self._run_start.assign(start)]):  # for stream_position
                count = tf.where(last, tf.constant(-1, tf.int64), end - start)
            choice = tf.data.Dataset.from_tensors(stage).repeat()
            # Only the chosen pipeline is read; the others' iterators are made but never started.
            return tf.data.Dataset.choose_from_datasets(repeated, choice).take(count)

        plan = tf.data.Dataset.from_tensor_slices((stages, firsts, ends, is_last))
        plan = plan.filter(lambda stage, first, end, last: last | (end > self.epoch.read_value() * steps))
        # Options (determinism, threading) reach the stream from its direct inputs only; the stage
        # pipelines are inside flat_map, so pass theirs on.
        options = datasets[0].options()
        for dataset in datasets[1:]:
            options = options.merge(dataset.options())
        return plan.flat_map(run_batches).with_options(options)

    def stream_position(self, stage, examples_per_step):
        """For a `dataset_fn` with `steps_per_epoch`: a function giving how many examples of `stage`'s
        stream earlier epochs read, evaluated when the stage's pipeline starts (a run of its epochs
        begins, or a resumed fit starts inside one):

            dataset_fn = lambda stage: build_dataset(source, "train", stage.image_size, 64, training=True,
                seed=0, repeat=True, position=progressive.stream_position(stage, examples_per_step(64)))

        Without `steps_per_epoch` (one pass per epoch) pass `epoch=progressive.epoch` instead.
        """
        if self.steps_per_epoch is None:
            raise ValueError("stream_position is for ProgressiveLearning(steps_per_epoch=N); with one pass per epoch "
                             "build the stage pipelines with epoch=progressive.epoch.")
        runs = [(first, end) for index, first, end in self._runs if index == stage.index]
        if self._runs[-1][0] == stage.index:  # fit past the schedule keeps the last stage
            runs[-1] = (runs[-1][0], np.iinfo(np.int64).max)
        firsts = tf.constant([first for first, _ in runs], tf.int64, shape=[len(runs)])
        lengths = tf.constant([end - first for first, end in runs], tf.int64, shape=[len(runs)])

        def position():
            # The steps of this stage's runs before the step the run being started begins at.
            start = self._run_start.read_value()
            return tf.reduce_sum(tf.clip_by_value(start - firsts, 0, lengths)) * examples_per_step

        return position


def _check_element_specs(datasets, stages, data_format=None):
    """Every stage must yield the same structure; only the batch size and image height/width may differ.

    Images are [batch, height, width, channels], or [batch, channels, height, width] when
    `data_format` (default `keras.config.image_data_format()`) is "channels_first".
    """
    channels_first = (data_format or keras.config.image_data_format()) == "channels_first"
    spatial_axes, other_axes = ((2, 3), (0, 1)) if channels_first else ((1, 2), (0, 3))
    layout = "[batch, channels, height, width]" if channels_first else "[batch, height, width, channels]"
    reference = datasets[0].element_spec
    flat_reference = tf.nest.flatten(reference)
    for dataset, stage in zip(datasets, stages):
        spec = dataset.element_spec
        try:
            tf.nest.assert_same_structure(reference, spec)
        except (ValueError, TypeError):
            raise ValueError(
                f"dataset_fn returned elements of structure {spec} for stage {stage.index + 1} but "
                f"{reference} for stage 1; every stage must yield the same (images, labels) structure."
            ) from None
        flat = tf.nest.flatten(spec)
        images = flat[0]
        if images.shape.rank != 4:
            raise ValueError(
                f"dataset_fn must yield batches whose first element is images {layout}; stage "
                f"{stage.index + 1} gives {images}. Batch the dataset."
            )
        size = tf.TensorShape([images.shape[axis] for axis in spatial_axes])
        if size.is_fully_defined() and tuple(size) != (stage.image_size, stage.image_size):
            raise ValueError(
                f"Stage {stage.index + 1} asks for image size {stage.image_size} but dataset_fn gave "
                f"images of {tuple(size)}: pass stage.image_size to your pipeline."
            )
        for position, (got, expected) in enumerate(zip(flat, flat_reference)):
            got_dims, expected_dims = got.shape.as_list(), expected.shape.as_list()
            if position == 0 and got.shape.rank == 4:  # images: only height and width may differ
                got_dims = [got_dims[axis] for axis in other_axes]
                expected_dims = [expected_dims[axis] for axis in other_axes]
            if got_dims and expected_dims:  # stages may have their own batch size (batch_scaling)
                got_dims, expected_dims = got_dims[1:], expected_dims[1:]
            same_shape = got.shape.rank == expected.shape.rank and got_dims == expected_dims
            if got.dtype != expected.dtype or not same_shape:
                raise ValueError(
                    f"dataset_fn gives {got} at position {position} for stage {stage.index + 1} but "
                    f"{expected} for stage 1: only the image size may change between stages, and the batch size (check "
                    "label_format: mixup/cutmix need dense labels in every stage)."
                )
