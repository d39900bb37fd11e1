"""What a recipe resolves into (`training.recipe.resolve_recipe`): plain values and small frozen settings,
and the objects made from them (the training and evaluation datasets, the model, its compilation).

Nothing here reads the recipe schema: the resolver read it once.
"""

import dataclasses
import sys
from typing import Any, Optional

from efficientnetv2_keras.training import plan
from efficientnetv2_keras.training.compiling import CompileSettings, compile_model
from efficientnetv2_keras.training.recipe_model import ModelSettings, make_model


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """How a recipe evaluates: a split at the eval size, with evaluation preprocessing."""

    source: Any
    split: Optional[str]  # the test split (data.eval_split); None: none, `no_test_split` says why
    image_size: int  # the eval size
    batch_size: int  # eval.batch_size
    pipeline_options: dict  # `data.build_dataset` keywords shared with training (no cache: one read per split)
    no_test_split: Optional[str] = None

    def dataset(self, split=None):
        """`split` (default: the test split) at the eval size, evaluation preprocessing."""
        from efficientnetv2_keras.data import build_dataset

        return build_dataset(self.source, split or self.split, self.image_size, self.batch_size, training=False,
                             **self.pipeline_options)


def validation_epochs(layout, validation_freq):
    """fit's `validation_freq` for batch-scaled stages (their `FitLayout`), whose fit epochs cover
    different amounts of data: the fit epochs (1-based) where the data seen crosses a multiple of
    `validation_freq` epochs of data, and always the last epoch."""
    epochs, seen = [], 0.0
    for epoch in range(1, layout.epochs + 1):
        before, seen = seen, layout.data_after(epoch * layout.steps_per_epoch)
        # The last stage may end a few steps short of its data (fit_layout): count a near-miss as crossed.
        if int(seen / validation_freq + 1e-2) > int(before / validation_freq + 1e-2):
            epochs.append(epoch)
    return sorted(set(epochs) | {layout.epochs})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A config resolved against its data source: everything the trainer, tools and tests need.

    Build it with `resolve_recipe(config)`; its fields are plain values and frozen settings, and its
    methods make the objects (datasets, the model, the compiled model) from them. `config` is the
    resolved recipe, for writing it down (config.yaml); nothing below the resolver reads it.
    """

    config: Any
    source: Any
    train_source: Any  # `source`, or with `data.cache` its training split decoded once for every stage
    num_classes: int
    multi_label: bool
    train_split: str  # data.train_split without the minival
    minival: Optional[str]  # the split validated during training (None: no validation)
    minival_info: Optional[dict]
    train_size: int  # without progressive learning
    steps_per_epoch: int
    epochs: int
    total_steps: int
    schedule: Any  # ProgressiveSchedule, or None when progressive learning is off
    monitor: str  # the minival metric that selects best.keras
    batch_size: int  # train.batch_size (the last stage's when batch-scaled)
    model_settings: ModelSettings
    compile_settings: CompileSettings
    evaluation: Evaluation
    pipeline_options: dict  # `data.build_dataset` keywords of every training pipeline (the cache applied once)
    static_augmentation: dict  # RandAugment magnitude, mixup and CutMix alphas without progressive learning
    fixed_steps_per_epoch: bool  # train.steps_per_epoch is set: fit epochs of that many steps
    validation_every: int  # eval.validation_freq
    backup_interval_s: float
    sync_batch_norm: Optional[bool]  # model.sync_batch_norm (None: by strategy)
    data_source: str  # data.source, as the recipe names it
    # Batch-scaled stages (progressive.batch_scaling): optimizer steps -> training progress, for the LR
    # schedule and the EMA; None otherwise.
    progress: Any = None

    @property
    def model_name(self):
        return self.model_settings.name

    @property
    def eval_size(self):
        return self.evaluation.image_size

    @property
    def no_test_split(self):
        """Why no test split is evaluated (data.eval_split null, or optional and absent), else None."""
        return self.evaluation.no_test_split

    @property
    def batch_scaled(self):
        """Stages with their own batch: fit runs `fit_epochs` epochs of `fit_steps_per_epoch` steps, each
        stage its layout's steps, reading its data continuously (one-pass epochs would differ in length)."""
        return self.progress is not None

    @property
    def layout(self):
        """Batch-scaled stages' `FitLayout` (each stage's steps, fit's epochs and their length); else None."""
        return self.schedule.fit_layout(self.steps_per_epoch) if self.batch_scaled else None

    @property
    def fit_epochs(self):
        """fit's `epochs`: the layout's when batch-scaled (fewer: bigger early batches), else `epochs`."""
        return self.layout.epochs if self.batch_scaled else self.epochs

    @property
    def fit_steps_per_epoch(self):
        """fit's `steps_per_epoch`: with train.steps_per_epoch, or batch-scaled stages (the layout's, near
        steps_per_epoch), epochs of that many steps read the training data as one stream; else None
        (every epoch is one pass)."""
        if self.batch_scaled:
            return self.layout.steps_per_epoch
        return self.steps_per_epoch if self.fixed_steps_per_epoch else None

    @property
    def validation_freq(self):
        """fit's `validation_freq`, the list of 1-based epochs validated: every eval.validation_freq epochs
        (when batch-scaled: where the data seen crosses a multiple of it, `validation_epochs`) and the last
        epoch. The checkpoint plan prints the same list."""
        if self.batch_scaled:
            return validation_epochs(self.layout, self.validation_every)
        return plan.validated_epochs(self.epochs, self.validation_every)

    def class_names(self):
        names = getattr(self.source, "class_names", None)
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    def _stream_start(self, batch_size, input_context, callback, stage=None):
        """Where a training pipeline starts reading, from the callback that tells it the epoch: pass `epoch`
        (one pass per epoch), or with fit_steps_per_epoch the stream's position (data/stream.py)."""
        from efficientnetv2_keras.data import examples_per_step

        if callback is None:
            return {}
        if self.fit_steps_per_epoch is None:
            return {"epoch": callback.epoch}
        per_step = examples_per_step(batch_size, input_context)
        if stage is None:  # a FitEpoch
            return {"repeat": True, "position": callback.stream_position(per_step)}
        return {"repeat": True, "position": callback.stream_position(stage, per_step)}

    def stage_dataset(self, stage, input_context=None, progressive=None):
        """The training pipeline of one progressive stage: its image size, regularization and (batch
        scaling) batch size; `progressive` (the `ProgressiveLearning` callback) tells it where to start."""
        from efficientnetv2_keras.data import build_dataset

        batch_size = stage.batch_size or self.batch_size
        return build_dataset(
            self.train_source, self.train_split, stage.image_size, batch_size, training=True,
            randaug_magnitude=stage.randaug_magnitude, mixup_alpha=stage.mixup_alpha,
            cutmix_alpha=stage.cutmix_alpha, input_context=input_context, **self.pipeline_options,
            **self._stream_start(batch_size, input_context, progressive, stage),
        )

    def static_dataset(self, input_context=None, fit_epoch=None):
        """The training pipeline without progressive learning: train_size, the static augmentation;
        `fit_epoch` (a `data.FitEpoch` callback) tells it where to start."""
        from efficientnetv2_keras.data import build_dataset

        return build_dataset(
            self.train_source, self.train_split, self.train_size, self.batch_size, training=True,
            input_context=input_context, **self.static_augmentation, **self.pipeline_options,
            **self._stream_start(self.batch_size, input_context, fit_epoch),
        )

    def train_dataset(self, strategy=None, verbose=1):
        """(the dataset for `fit`, the callback that steers it): the `ProgressiveLearning` callback, or
        without progressive learning a `data.FitEpoch`. Pass the callback to `fit`: it tells the pipelines
        the epoch, so a resumed run reads the data the uninterrupted run would have.

        Under MultiWorkerMirroredStrategy each worker builds its own shard (`input_context`).
        """
        from efficientnetv2_keras.data import FitEpoch
        from efficientnetv2_keras.progressive import ProgressiveLearning

        multi_worker = strategy is not None and _is_multi_worker(strategy)
        if self.schedule is not None:
            # Batch-scaled stages take the steps of an epoch of data (the callback lays them out).
            steps = self.steps_per_epoch if self.batch_scaled else self.fit_steps_per_epoch
            progressive = ProgressiveLearning(
                self.schedule, lambda stage, context=None: self.stage_dataset(stage, context, progressive),
                steps_per_epoch=steps, verbose=verbose,
            )
            return (progressive.distribute(strategy) if multi_worker else progressive.dataset), progressive
        fit_epoch = FitEpoch(self.fit_steps_per_epoch)
        if multi_worker:
            dataset_fn = lambda context: self.static_dataset(context, fit_epoch)  # noqa: E731
            return strategy.distribute_datasets_from_function(dataset_fn), fit_epoch
        return self.static_dataset(fit_epoch=fit_epoch), fit_epoch

    def eval_dataset(self, split=None):
        """`split` (default: the test split, data.eval_split) at the eval size, evaluation preprocessing."""
        return self.evaluation.dataset(split)

    def build_model(self, load_checkpoint=True):
        """The recipe's model with this data's class count (call under the strategy's scope)."""
        return make_model(self.model_settings, self.num_classes, load_checkpoint=load_checkpoint)

    def compile(self, model):
        """Compiles `model` for this recipe's steps (LR schedule, optimizer + EMA, loss, metrics)."""
        return compile_model(model, self.compile_settings, self.steps_per_epoch, self.total_steps,
                             multi_label=self.multi_label, num_classes=self.num_classes, progress=self.progress)


def _is_multi_worker(strategy):
    tf = sys.modules.get("tensorflow")  # not imported on a JAX-only machine: then no tf.distribute strategy
    return tf is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
