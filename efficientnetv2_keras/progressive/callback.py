"""`ProgressiveLearning`: the paper's Algorithm 1 inside one `model.fit`.

The callback keeps a `StageDatasets` (progressive/stage_datasets.py), which builds the one dataset
`fit` reads from the M stage pipelines (one pass per epoch, or `steps_per_epoch` batches per epoch),
and makes each stage the one in effect when its first epoch or step starts.
The model-side regularizers (head dropout, stochastic depth) are Keras variables set in
`on_epoch_begin`, or `on_train_batch_begin` for a stage that starts inside an epoch
(`set_regularization`), read by the already compiled train step.

Weights, optimizer state, the LR schedule and EMA simply carry over: it is one `fit`. Batch-scaled
stages put the optimizer's learning rate (a float or a `LearningRateSchedule`) under their rule when
`fit` starts: x the stage's lr_scale, the schedule over training progress (`progressive.learning_rate`).
The callback touches neither the model's train step nor the trainer, so it works the same on the TensorFlow,
JAX and PyTorch backends (the stage pipelines are tf.data, which every Keras backend's `fit` reads).
On TensorFlow the train step sees images of shape [batch, None, None, 3] and is traced once; XLA
(`jit_compile=True`, and always on JAX) compiles once per stage's image size. A run resumed by `keras.callbacks.BackupAndRestore` starts at
the saved epoch, whose stage this callback looks up: resuming in stage k trains with stage k.
"""

import keras

from efficientnetv2_keras.messages import say
from efficientnetv2_keras.models.regularization import set_regularization
from efficientnetv2_keras.progressive.schedule import REGULARIZERS
from efficientnetv2_keras.progressive.stage_datasets import StageDatasets

# The stage's settings added to each epoch's logs: the regularizers and the stage's own batch size
# (batch_scaling; StageTimer counts the images from it).
LOGGED_FIELDS = REGULARIZERS + ("batch_size",)


class ProgressiveLearning(keras.callbacks.Callback):
    """Runs a `ProgressiveSchedule` inside one `model.fit`.

    Usage (one pass over the training split per epoch):
        schedule = progressive_schedule("s", "paper", total_epochs=350)
        cached = CachedSource(source)  # decode and cache the split once, for every stage
        progressive = ProgressiveLearning(
            schedule, lambda stage: build_dataset(cached, "train", stage.image_size, 128,
                training=True, randaug_magnitude=stage.randaug_magnitude,
                mixup_alpha=stage.mixup_alpha, cutmix_alpha=stage.cutmix_alpha,
                seed=0, epoch=progressive.epoch))  # epoch k reads pass k, also in a resumed run
        model.fit(progressive.dataset, epochs=schedule.total, callbacks=[progressive])

    Epochs of a fixed number of steps (e.g. shorter than one pass over a huge dataset), each stage
    one endless stream (`build_dataset(repeat=True, position=progressive.stream_position(...))`):
        progressive = ProgressiveLearning(schedule, dataset_fn, steps_per_epoch=1000)
        model.fit(progressive.dataset, epochs=progressive.epochs,
                  steps_per_epoch=progressive.steps_per_epoch, callbacks=[progressive])

    Args:
      schedule: a `ProgressiveSchedule` (epochs; a step schedule needs `steps_per_epoch`).
      dataset_fn: stage -> tf.data pipeline of (images, labels[, weights]) batches, images of the
        stage's size (and `stage.batch_size` when the schedule sets it: batch scaling, which needs
        `steps_per_epoch`). Every stage must give the same element structure. Without `steps_per_epoch`
        it must be finite: one pass is one epoch. With `steps_per_epoch` it may be finite (it is
        repeated) or repeated already (`build_dataset(repeat=True)`). It may take a second
        argument, the `tf.distribute.InputContext`, for `distribute()`.
      steps_per_epoch: batches per epoch (of the base batch: examples // batch_size for an epoch of
        data); give `fit` `progressive.steps_per_epoch`. Each stage then reads its pipeline
        continuously over its epochs. Needed for step schedules: the epoch starting at step e*N
        takes the stage in effect there (stage boundaries are rounded to epoch starts). Needed for
        batch-scaled schedules, whose stages take `schedule.fit_layout(steps_per_epoch)`'s steps.
      verbose: say a line when a stage starts (`messages.say`: printed, and logged for a job's log).
    Attributes:
      current_stage: the `Stage` in effect.
      epoch: a tf.Variable holding the epoch being trained, set before Keras makes its iterator (for
        `build_dataset(epoch=...)`); `stream_position` gives the `position=` of the steps layout.
      epochs: the epochs the schedule covers, for `fit(epochs=...)`: `schedule.total`, for a step
        schedule ceil(total steps / steps_per_epoch), for batch-scaled stages the layout's epochs.
      steps_per_epoch: fit's `steps_per_epoch`: the one given, or the layout's for batch-scaled stages.
      layout: the batch-scaled stages' `FitLayout` (None otherwise).
      datasets: the `StageDatasets` that builds `dataset` from the stage pipelines.
    """

    def __init__(self, schedule, dataset_fn, steps_per_epoch=None, verbose=1):
        super().__init__()
        self.datasets = StageDatasets(schedule, dataset_fn, steps_per_epoch)
        self.schedule, self.dataset_fn = schedule, dataset_fn
        self.layout, self.epoch = self.datasets.layout, self.datasets.epoch
        self.steps_per_epoch, self.epochs = self.datasets.steps_per_epoch, self.datasets.epochs
        self.verbose = verbose
        self.current_stage = None
        self._first_step = 0  # the first step of the epoch being trained (steps_per_epoch layout)

    @property
    def dataset(self):
        """The dataset to pass to `fit`: each epoch yields the batches of that epoch's stage."""
        return self.datasets.dataset

    def distribute(self, strategy):
        """The dataset for `fit` under a multi-worker strategy: built per worker with its input context."""
        return self.datasets.distribute(strategy)

    def stream_position(self, stage, examples_per_step):
        """`StageDatasets.stream_position`: where `stage`'s endless stream starts (steps_per_epoch)."""
        return self.datasets.stream_position(stage, examples_per_step)

    def stage_for_epoch(self, epoch):
        """The stage in effect at the first step of `epoch` (0-based)."""
        return self.datasets.stage_for_epoch(epoch)

    # -- the callback --------------------------------------------------------------------------

    def set_model(self, model):
        # fit calls this before any callback's on_train_begin (BackupAndRestore restores there), so the
        # optimizer's variables are the same in the run that saves a backup and in the one restoring it.
        super().set_model(model)
        if self.schedule.batch_scaled and getattr(model, "optimizer", None) is not None:
            if self.layout is None:
                raise ValueError(
                    "Batch-scaled stages need ProgressiveLearning(schedule, dataset_fn, steps_per_epoch=N), N = "
                    "examples // base batch (one-pass epochs would differ in length), and "
                    "fit(progressive.dataset, steps_per_epoch=progressive.steps_per_epoch, epochs=progressive.epochs)."
                )
            from efficientnetv2_keras.progressive.learning_rate import scale_learning_rate

            scale_learning_rate(model.optimizer, self.schedule, self.layout)

    def on_train_begin(self, logs=None):
        self.current_stage = None
        self._check_fit_steps()
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

    def _check_fit_steps(self):
        """fit's steps per epoch must match how the dataset was built (see the module docstring)."""
        params = self.params or {}
        if "steps" not in params:  # not called by fit
            return
        fit_steps = params["steps"]
        if self.steps_per_epoch is None:
            # fit reports the dataset's own length when steps_per_epoch is not given.
            if fit_steps is not None and fit_steps != self.datasets.pass_batches:
                raise ValueError(
                    f"fit(steps_per_epoch={fit_steps}) does not work with ProgressiveLearning built without "
                    "steps_per_epoch: Keras would then keep one iterator across epochs, so stages would not "
                    "start at epoch boundaries and one-pass stage pipelines would run out. Either drop "
                    "steps_per_epoch from fit (every epoch is one pass over the stage's data), or build "
                    f"ProgressiveLearning(schedule, dataset_fn, steps_per_epoch={fit_steps}) and call "
                    "fit(progressive.dataset, steps_per_epoch=progressive.steps_per_epoch, ...)."
                )
            return
        if fit_steps != self.steps_per_epoch:
            laid_out = " (its batch-scaled stages' fit_layout)" if self.layout is not None else ""
            raise ValueError(
                f"ProgressiveLearning lays out {self.steps_per_epoch} batches per epoch{laid_out}, but fit runs "
                f"{fit_steps or 'one pass of the dataset'} per epoch: call fit(progressive.dataset, "
                "steps_per_epoch=progressive.steps_per_epoch, epochs=progressive.epochs, ...)."
            )
        per_execution = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self.steps_per_epoch % per_execution:
            raise ValueError(
                f"steps_per_epoch ({self.steps_per_epoch}) must be a multiple of the model's "
                f"steps_per_execution ({per_execution}): Keras reads whole executions, so epochs would "
                "not end where the stages expect."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)  # read by the dataset (before this epoch's first batch)
        self._first_step = epoch * (self.steps_per_epoch or 0)
        self._enter(self.stage_for_epoch(epoch), f"epoch {epoch + 1} runs")

    def on_train_batch_begin(self, batch, logs=None):
        # Batch-scaled stages start at their own step, which may fall inside a fit epoch.
        if self.layout is None:
            return
        step = self._first_step + batch
        stage = self.schedule.stages[self.layout.stage_index_at(step)]
        self._enter(stage, f"step {batch + 1} of epoch {self._first_step // self.steps_per_epoch + 1} starts")

    def _enter(self, stage, where):
        """Makes `stage` the one in effect (its model-side regularization), saying so when verbose."""
        if stage is self.current_stage:
            return
        if stage.dropout_rate is not None or stage.survival_prob is not None:
            set_regularization(self.model, dropout_rate=stage.dropout_rate, survival_prob=stage.survival_prob)
        self.current_stage = stage
        if self.verbose:
            settings = ", ".join(
                f"{field} {getattr(stage, field):g}" for field in LOGGED_FIELDS if getattr(stage, field) is not None
            )
            say(f"\nProgressive learning: {where} stage {stage.index + 1}/{self.schedule.num_stages} ({settings})")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.current_stage is None:
            return
        # Later callbacks (CSVLogger, TensorBoard, History) record these with the metrics. Stages are
        # numbered from 1 wherever a user reads them (logs, messages, results, plots); Stage.index is 0-based.
        logs["stage"] = self.current_stage.index + 1
        for field in LOGGED_FIELDS:
            value = getattr(self.current_stage, field)
            if value is not None:
                logs[field] = float(value)
