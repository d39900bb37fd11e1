"""`ProgressiveLearning`: the paper's Algorithm 1 inside one `model.fit`.

Keras wraps the training dataset once, when `fit` starts, and no public API lets a callback swap
it. So the callback hands `fit` one dataset that switches between the stages' pipelines:
`tf.data.Dataset.choose_from_datasets` over the M pipelines `dataset_fn(stage)` built, steered by a
stage variable that the callback sets in `on_epoch_begin`. With `steps_per_epoch=None`, Keras makes
a new iterator every epoch, after `on_epoch_begin`, so every batch of an epoch comes from that
epoch's stage; pipelines of other stages stay idle (tf.data starts a pipeline's work on its first
read). The model-side regularizers (head dropout, stochastic depth) are Keras variables set in the
same hook (`set_regularization`), read by the already compiled train step.

Weights, optimizer state, the LR schedule and EMA simply carry over: it is one `fit`. The train
step sees images of shape [batch, None, None, 3] and is traced once; XLA (`jit_compile=True`)
compiles once per stage's image size. A run resumed by `keras.callbacks.BackupAndRestore` starts at
the saved epoch, whose stage this callback looks up: resuming in stage k trains with stage k.
"""

import inspect

import keras
import tensorflow as tf

from efficientnetv2_keras.models.regularization import set_regularization

LOGGED_FIELDS = ("image_size", "randaug_magnitude", "mixup_alpha", "cutmix_alpha", "dropout_rate", "survival_prob")


class ProgressiveLearning(keras.callbacks.Callback):
    """Runs a `ProgressiveSchedule` inside one `model.fit`.

    Usage:
        schedule = progressive_schedule("s", "paper", total_epochs=350)
        progressive = ProgressiveLearning(
            schedule, lambda stage: build_dataset(source, "train", stage.image_size, 128,
                training=True, randaug_magnitude=stage.randaug_magnitude,
                mixup_alpha=stage.mixup_alpha, cutmix_alpha=stage.cutmix_alpha))
        model.fit(progressive.dataset, epochs=schedule.total, callbacks=[progressive])

    Args:
      schedule: a `ProgressiveSchedule` (epochs; a step schedule needs `steps_per_epoch`).
      dataset_fn: stage -> finite tf.data pipeline of (images, labels[, weights]) batches for one
        epoch, images of the stage's size. Every stage must give the same element structure. It may
        take a second argument, the `tf.distribute.InputContext`, for `distribute()`.
      steps_per_epoch: only for step schedules: the epoch starting at step e*steps_per_epoch takes
        the stage in effect there (stage boundaries are rounded to epoch starts).
      verbose: print a line when a stage starts.
    Attributes:
      trace_count: how many times `fit` traced the train step. On a fresh model TensorFlow traces
        the first call twice (the optimizer and metrics create their variables in the first trace,
        and tf.function retraces after variable creation); after that, no stage adds a trace.
      current_stage: the `Stage` in effect.
    """

    def __init__(self, schedule, dataset_fn, steps_per_epoch=None, verbose=1):
        super().__init__()
        if schedule.unit == "step" and not steps_per_epoch:
            raise ValueError(
                "This schedule counts steps; pass steps_per_epoch so stages can be mapped onto epochs, "
                "or build the schedule with total_epochs."
            )
        self.schedule = schedule
        self.dataset_fn = dataset_fn
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.trace_count = 0
        self.current_stage = None
        self._dataset = None
        self._wrapped_train_step = False
        with tf.init_scope():  # a plain host variable, also when created under a strategy scope
            self._stage_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="progressive_stage")

    # -- the dataset ---------------------------------------------------------------------------

    @property
    def dataset(self):
        """The dataset to pass to `fit`: each epoch yields the batches of that epoch's stage."""
        if self._dataset is None:
            self._dataset = self._switching_dataset([self._stage_dataset(s) for s in self.schedule.stages])
        return self._dataset

    def distribute(self, strategy):
        """The dataset for `fit` under a multi-worker strategy: built per worker with its input context."""

        def per_worker(input_context):
            return self._switching_dataset(
                [self._stage_dataset(s, input_context) for s in self.schedule.stages]
            )

        return strategy.distribute_datasets_from_function(per_worker)

    def _stage_dataset(self, stage, input_context=None):
        takes_context = len(inspect.signature(self.dataset_fn).parameters) >= 2
        dataset = self.dataset_fn(stage, input_context) if takes_context else self.dataset_fn(stage)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                f"dataset_fn must return a tf.data.Dataset, got {type(dataset).__name__} for stage "
                f"{stage.index}."
            )
        return dataset

    def _switching_dataset(self, datasets):
        _check_element_specs(datasets, self.schedule.stages)
        choice = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
        choice = choice.map(lambda _: self._stage_variable.read_value())
        switching = tf.data.Dataset.choose_from_datasets(datasets, choice, stop_on_empty_dataset=True)
        cardinalities = {int(d.cardinality()) for d in datasets}
        if len(cardinalities) == 1 and min(cardinalities) > 0:
            # Same batch count in every stage: tell Keras, so the progress bar knows the epoch length.
            switching = switching.apply(tf.data.experimental.assert_cardinality(cardinalities.pop()))
        return switching

    # -- the callback --------------------------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        # `fit` calls set_model before it makes the train function: wrapping the train step here
        # counts its traces (Python runs it once per trace, never per batch).
        if getattr(model, "train_function", None) is None and not self._wrapped_train_step:
            original = model.train_step

            def counting_train_step(data):
                self.trace_count += 1
                return original(data)

            model.train_step = counting_train_step
            self._wrapped_train_step = True

    def on_train_begin(self, logs=None):
        self.current_stage = None
        needs_dropout = any(s.dropout_rate is not None for s in self.schedule.stages)
        needs_depth = any(s.survival_prob is not None for s in self.schedule.stages)
        if needs_dropout or needs_depth:
            stage = self.schedule.stages[0]
            try:  # fail now, not at the first stage boundary
                set_regularization(self.model, dropout_rate=stage.dropout_rate, survival_prob=stage.survival_prob)
            except ValueError as error:
                raise ValueError(
                    f"The schedule sets dropout_rate/survival_prob but the model cannot take them: {error} "
                    "Build the schedule with dropout_rate=None (and survival_prob=None)."
                ) from None

    def stage_for_epoch(self, epoch):
        position = epoch * self.steps_per_epoch if self.schedule.unit == "step" else epoch
        return self.schedule.stage_at(min(position, self.schedule.total - 1))

    def on_epoch_begin(self, epoch, logs=None):
        stage = self.stage_for_epoch(epoch)
        if stage is self.current_stage:
            return
        self._stage_variable.assign(stage.index)
        if stage.dropout_rate is not None or stage.survival_prob is not None:
            set_regularization(self.model, dropout_rate=stage.dropout_rate, survival_prob=stage.survival_prob)
        self.current_stage = stage
        if self.verbose:
            settings = ", ".join(
                f"{field} {getattr(stage, field):g}" for field in LOGGED_FIELDS if getattr(stage, field) is not None
            )
            print(f"\nProgressive learning: epoch {epoch + 1} runs stage {stage.index + 1}/{self.schedule.num_stages} ({settings})")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.current_stage is None:
            return
        # Later callbacks (CSVLogger, TensorBoard, History) record these with the metrics.
        logs["stage"] = self.current_stage.index
        for field in LOGGED_FIELDS:
            value = getattr(self.current_stage, field)
            if value is not None:
                logs[field] = float(value)

    def on_train_end(self, logs=None):
        if self._wrapped_train_step:
            # The train function made by this fit keeps the (harmless) counting wrapper.
            del self.model.train_step
            self._wrapped_train_step = False


def _check_element_specs(datasets, stages, data_format=None):
    """Every stage must yield the same structure; only the image height/width may differ.

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
                f"dataset_fn returned elements of structure {spec} for stage {stage.index} but "
                f"{reference} for stage 0; every stage must yield the same (images, labels) structure."
            ) from None
        flat = tf.nest.flatten(spec)
        images = flat[0]
        if images.shape.rank != 4:
            raise ValueError(
                f"dataset_fn must yield batches whose first element is images {layout}; stage "
                f"{stage.index} gives {images}. Batch the dataset."
            )
        size = tf.TensorShape([images.shape[axis] for axis in spatial_axes])
        if size.is_fully_defined() and tuple(size) != (stage.image_size, stage.image_size):
            raise ValueError(
                f"Stage {stage.index} asks for image size {stage.image_size} but dataset_fn gave "
                f"images of {tuple(size)}: pass stage.image_size to your pipeline."
            )
        for position, (got, expected) in enumerate(zip(flat, flat_reference)):
            got_dims, expected_dims = got.shape.as_list(), expected.shape.as_list()
            if position == 0 and got.shape.rank == 4:  # images: only height and width may differ
                got_dims = [got_dims[axis] for axis in other_axes]
                expected_dims = [expected_dims[axis] for axis in other_axes]
            same_shape = got.shape.rank == expected.shape.rank and got_dims == expected_dims
            if got.dtype != expected.dtype or not same_shape:
                raise ValueError(
                    f"dataset_fn gives {got} at position {position} for stage {stage.index} but "
                    f"{expected} for stage 0: only the image size may change between stages (check "
                    "label_format: mixup/cutmix need dense labels in every stage)."
                )
