"""One place that turns a validated recipe (`hparams.Config`) into what training needs.

    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.recipe import resolve_recipe

    recipe = resolve_recipe(load_config("digits_demo"))    # reads the data source's size once
    recipe.train_size, recipe.eval_size                      # 48, 48
    recipe.steps_per_epoch, recipe.epochs                    # train.min_steps applied
    with strategy.scope():
        model = recipe.build_model()                         # model.init_checkpoint loaded, head skipped
        recipe.compile(model)                                # LR schedule, optimizer + EMA, loss, metrics
    train, steering = recipe.train_dataset(strategy)         # one dataset for every stage + its callback
    model.fit(train, epochs=recipe.fit_epochs, steps_per_epoch=recipe.fit_steps_per_epoch,
              validation_freq=recipe.validation_freq, callbacks=[steering])

`hparams.py` only knows the schema: which keys exist, their types and ranges. Everything derived from
the values (image sizes from the variant, static augmentation, the progressive schedule, steps and
epochs with `train.min_steps`, the minival split, the class count, the monitored metric) is worked
out here, once, and carried by the `Recipe`.
"""

import dataclasses
import math
import sys
from typing import Any, Optional

from efficientnetv2_keras import hparams
from efficientnetv2_keras.limits import augment_argument
from efficientnetv2_keras.models import WeightsDownloadError, build_model, load_pretrained
from efficientnetv2_keras.models.family import get_model_spec
from efficientnetv2_keras.progressive.schedule import REGULARIZERS, progressive_schedule
from efficientnetv2_keras.training import plan
from efficientnetv2_keras.training.losses import build_loss, build_metrics, default_monitor
from efficientnetv2_keras.training.optimizers import build_optimizer
from efficientnetv2_keras.training.schedules import TrainingProgress, build_lr_schedule

# ------------------------------------------------------------------------------------------------
# Values derived from a config alone (no data needed).
# ------------------------------------------------------------------------------------------------


def image_sizes(config):
    """(train size without progressive learning, eval size) in pixels, from the recipe and the variant."""
    spec = get_model_spec(config.model.name)
    eval_size = config.data.eval_size or spec.eval_size
    train_size = config.data.train_size
    if train_size is None:
        train_size = spec.train_size
    elif train_size == "eval":  # the released finetune configs: 1.0 x eval size, rounded down to 16
        train_size = max(16, eval_size // 16 * 16)
    return int(train_size), int(eval_size)


def static_augmentation(config):
    """RandAugment magnitude, mixup and CutMix alphas when progressive learning is off.

    `data.*` values, else the variant's official ones (released effnetv2_configs.py); CutMix follows
    mixup when unset, as in the released configs.
    """
    spec = get_model_spec(config.model.name)
    data = config.data
    magnitude = spec.randaug_magnitude if data.randaug_magnitude is None else data.randaug_magnitude
    mixup = spec.mixup_alpha if data.mixup_alpha is None else data.mixup_alpha
    cutmix = mixup if data.cutmix_alpha is None else data.cutmix_alpha
    return {"randaug_magnitude": float(magnitude), "mixup_alpha": float(mixup), "cutmix_alpha": float(cutmix)}


def dataset_options(config):
    """Keyword arguments for `data.build_dataset` shared by every stage and split.

    Not included: source, split, image_size, batch_size, training, input_context and the scheduled
    regularizers (RandAugment magnitude, mixup/CutMix alphas: see `static_augmentation` and the
    progressive schedule).
    """
    data = config.data
    return {
        "randaug_layers": data.randaug_layers,
        "randaug_ops": data.randaug_ops,
        "label_format": data.label_format,
        "augment": augment_argument(data.augment),
        "crop_area_range": (data.crop_area_min, 1.0),
        "flip": data.flip,
        "eval_crop_padding": data.eval_crop_padding,
        "shuffle_buffer": data.shuffle_buffer,
        "cache": data.cache,
        "seed": config.runtime.seed,
        "data_dir": data.data_dir,
    }


def progressive_overrides(config):
    """The `progressive.*` ranges that are set, as keyword arguments for `progressive_schedule`."""
    return {
        key: (tuple(value) if isinstance(value, list) else value)
        for key in REGULARIZERS
        if (value := getattr(config.progressive, key)) is not None
    }


def schedule_from_config(config, epochs, num_replicas=1, steps_per_epoch=None):
    """The recipe's progressive-learning stages over `epochs` (None when `progressive.enabled` is off).

    With `progressive.batch_scaling` the stages get their own batch (train.batch_size at the last stage,
    ~1/size^2 before it, multiples of `num_replicas`, capped at `progressive.max_batch_size`) and the
    learning-rate scale of `lr_scaling_rule(config)`; with `steps_per_epoch` (base-batch steps in an
    epoch of data) also their steps (`ProgressiveSchedule.fit_layout`), shown in the table. Too few
    epochs for `progressive.num_stages`: a ConfigError naming the override that fixes it.
    """
    if not config.progressive.enabled:
        return None
    plan.check_stages(config, epochs)
    batching = {}
    if config.progressive.batch_scaling:
        batching = {"batch_size": config.train.batch_size, "batch_scaling": True,
                    "max_batch_size": config.progressive.max_batch_size, "num_replicas": num_replicas,
                    "lr_scaling": lr_scaling_rule(config)}
    return progressive_schedule(
        config.model.name,
        config.progressive.preset,
        total_epochs=epochs,
        num_stages=config.progressive.num_stages,
        random_resize_every=config.progressive.random_resize_every,
        seed=config.runtime.seed,
        size_multiple=config.progressive.size_multiple,
        steps_per_epoch=steps_per_epoch,
        **batching,
        **progressive_overrides(config),
    )


ADAPTIVE_OPTIMIZERS = ("rmsprop", "adam", "adamw")


def lr_scaling_rule(config):
    """`progressive.lr_scaling`, else by optimizer: "sqrt" for the adaptive ones (RMSprop, Adam, AdamW:
    Malladi et al. 2022 derive the square-root rule for them), "linear" for SGD and momentum (Goyal et
    al. 2017)."""
    if config.progressive.lr_scaling:
        return config.progressive.lr_scaling
    return "sqrt" if config.train.optimizer in ADAPTIVE_OPTIMIZERS else "linear"


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


def resolve_num_classes(config, source=None):
    """`data.num_classes`, else the source's class count (known sources need no data on disk)."""
    if config.data.num_classes:
        return config.data.num_classes
    if source is not None:
        return int(source.num_classes)
    from efficientnetv2_keras.data import IMAGENET21K_CLASSES, KERAS_DATASETS, PAPER_TFDS_DATASETS, get_source

    name = config.data.source
    options = config.data.source_options
    if name in PAPER_TFDS_DATASETS:
        return PAPER_TFDS_DATASETS[name][0]
    if name.startswith("tfrecord21k:"):
        return int(options.get("num_classes", IMAGENET21K_CLASSES))
    if name.startswith("tfrecord:"):
        return int(options.get("num_classes", 1000))
    if name.startswith("keras:") and name[len("keras:"):] in KERAS_DATASETS:
        return KERAS_DATASETS[name[len("keras:"):]].num_classes
    return int(get_source(name, data_dir=config.data.data_dir, **options).num_classes)


def is_multi_label(config, source=None):
    """Whether the labels are multi-hot (from data.label_format, else the source)."""
    if config.data.label_format is not None:
        return config.data.label_format in ("multi_hot", "multi_hot_normalized")
    if source is not None:
        return bool(source.multi_label)
    return config.data.source.startswith("tfrecord21k:")


def epochs_for_min_steps(epochs, min_steps, steps_per_epoch):
    """max(epochs, ceil(min_steps / steps_per_epoch)): the released finetuning's `min_steps` rule.

    The finetuning recipes (paper §5.2-5.3) train for at least 10,000 steps however small the dataset
    (released `main.py`): CIFAR-10 at batch 512 has 97 steps per epoch -> 104 epochs.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    if not min_steps:
        return int(epochs)
    return max(int(epochs), math.ceil(min_steps / steps_per_epoch))


def training_steps(config, num_train_examples=None):
    """(steps_per_epoch, epochs, total_steps) of a recipe, `train.min_steps` applied.

    steps_per_epoch is `train.steps_per_epoch`, else num_train_examples // train.batch_size (the
    training pipeline drops the last partial batch).
    """
    train = config.train
    steps_per_epoch = train.steps_per_epoch
    if steps_per_epoch is None:
        if num_train_examples is None:
            raise ValueError("Give num_train_examples or set train.steps_per_epoch.")
        steps_per_epoch = int(num_train_examples) // train.batch_size
        if steps_per_epoch < 1:
            raise ValueError(
                f"The training split has {num_train_examples} examples, fewer than one batch of "
                f"{train.batch_size}: lower train.batch_size."
            )
    epochs = epochs_for_min_steps(train.epochs, train.min_steps, steps_per_epoch)
    return steps_per_epoch, epochs, steps_per_epoch * epochs


def build_model_from_config(config, num_classes=None, input_shape=None, load_checkpoint=True):
    """The recipe's model (`model.*`), with `model.init_checkpoint` loaded (head skipped if asked).

    The classifier ends in a softmax, or a sigmoid for `train.loss: sigmoid`. Call under the strategy's
    scope, after `configure_mixed_precision`.
    """
    model_config = config.model
    classes = num_classes or resolve_num_classes(config)
    model = build_model(
        model_config.name,
        include_top=True,
        weights=model_config.weights,
        input_shape=input_shape,
        classes=int(classes),
        classifier_activation="sigmoid" if config.train.loss == "sigmoid" else "softmax",
        include_preprocessing=model_config.include_preprocessing,
        dropout_rate=model_config.dropout_rate,
        survival_prob=model_config.survival_prob,
        bn_momentum=model_config.bn_momentum,
        bn_epsilon=model_config.bn_epsilon,
        activation=model_config.activation,
        input_normalization=model_config.input_normalization,
        classifier_initializer=model_config.classifier_initializer,
    )
    if load_checkpoint and model_config.init_checkpoint:
        try:
            load_pretrained(model, model_config.init_checkpoint, skip_head=model_config.skip_head)
        except WeightsDownloadError as error:
            raise WeightsDownloadError(error.problem, "set model.init_checkpoint to a local weights file (.weights.h5, "
                                       ".keras or a keras.applications .h5), or model.init_checkpoint=null to train "
                                       "from scratch") from error
    return model


def compile_from_config(model, config, steps_per_epoch, total_steps, multi_label=None, num_classes=None,
                        progress=None):
    """Compiles `model` with the recipe's LR schedule, optimizer (EMA, weight decay), loss and metrics.

    progress: a `schedules.TrainingProgress` for stages with their own batch size (LR and EMA over
    training progress, see `schedules.build_lr_schedule`).

    Returns the optimizer (before any LossScaleOptimizer wrapping that `compile` does under
    mixed_float16; `model.optimizer` is the one in use).
    """
    multi_label = is_multi_label(config) if multi_label is None else multi_label
    schedule = build_lr_schedule(config, steps_per_epoch, total_steps, progress=progress)
    optimizer = build_optimizer(config, schedule, model)
    classes = num_classes or model.output_shape[-1]
    model.compile(
        optimizer=optimizer,
        loss=build_loss(config, multi_label=multi_label),
        metrics=build_metrics(config, num_classes=classes, multi_label=multi_label),
        jit_compile=config.train.jit_compile,
        steps_per_execution=config.train.steps_per_execution,
    )
    return optimizer


# ------------------------------------------------------------------------------------------------
# Values that need the data source.
# ------------------------------------------------------------------------------------------------


def source_from_config(config):
    """The recipe's data source (`data.source`, `data.data_dir`, `data.source_options`)."""
    from efficientnetv2_keras.data import get_source

    if config.data.source == "folder:":  # finetune_folder.yaml: the folder comes from the command line
        raise hparams.ConfigError("data.source is 'folder:' without a folder: set data.source=folder:/path/to/images "
                                  "(--override=data.source=folder:/path/to/images).")
    return get_source(config.data.source, data_dir=config.data.data_dir, **config.data.source_options)


def minival_split(config, source):
    """(training split, minival split or None, description) for `data.minival`.

    A count or fraction is carved from data.train_split with `source.hold_out` (seed 0: the same minival
    for every run of a dataset, whatever runtime.seed); a split name is used as it is; null: none.
    """
    data = config.data
    if data.minival is None:
        return data.train_split, None, None
    if isinstance(data.minival, str):
        return data.train_split, data.minival, {"split": data.minival, "examples": source.num_examples(data.minival)}
    train_split, held = source.hold_out(data.train_split, data.minival, seed=0)
    info = {"split": held, "carved_from": data.train_split, "size": data.minival,
            "examples": source.num_examples(held), "train_examples": source.num_examples(train_split)}
    return train_split, held, info


def test_split(config, source):
    """(data.eval_split, None), or (None, why there is none): null, or a split the source lacks with
    data.eval_split_optional. A split the source lacks otherwise: a ConfigError naming the fix."""
    from efficientnetv2_keras.data.sources import UnknownSplitError

    split = config.data.eval_split
    if split is None:
        return None, "data.eval_split is null"
    try:
        source.num_examples(split)
    except UnknownSplitError as error:
        if not config.data.eval_split_optional:
            raise split_error(error, config) from None
        return None, f"{source.name} has no {split!r} split; its splits: {error.available}"
    return split, None


_SPLIT_KEYS = ("train_split", "eval_split", "minival")


def _split_key(data, split):
    """The data.* key whose value names `split` (the whole value, or one part of an 'a+b' split)."""
    for key in _SPLIT_KEYS:
        value = getattr(data, key)
        if isinstance(value, str) and split in [value] + [part.strip() for part in value.split("+")]:
            return key
    return None


def split_error(error, config):
    """A source's `UnknownSplitError` with the recipe override that fixes it (sources know no recipe keys)."""
    key = _split_key(config.data, error.split)
    available = error.available
    missing = [part for part in error.split.split("+") if part.strip() not in available] or [error.split]
    lacks = f"the data has no {' or '.join(repr(part) for part in missing)} split"
    if key == "train_split":
        fix = f"set data.train_split={'train' if 'train' in available else available[0]} ({lacks})"
    elif key == "eval_split":
        fix = f"set data.eval_split to one of {available}, or data.eval_split=null to train without a test split ({lacks})"
    elif key == "minival":
        fix = f"set data.minival to one of {available}, or carve one from the training split with e.g. data.minival=0.1"
    else:
        return error
    return hparams.ConfigError(f"{error} To fix it, {fix}.")


def eval_dataset(config, source, split=None):
    """`split` (default: the test split, data.eval_split) at the eval size, evaluation preprocessing."""
    from efficientnetv2_keras.data import build_dataset

    options = dataset_options(config)
    options.pop("cache")  # evaluation reads each split once
    return build_dataset(source, split or config.data.eval_split, image_sizes(config)[1], config.eval.batch_size,
                         training=False, **options)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A config resolved against its data source: everything the trainer, tools and tests need.

    Build it with `resolve_recipe(config)`; its fields are plain values and its methods make the
    objects (datasets, the model, the compiled model) from them.
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
    eval_size: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    schedule: Any  # ProgressiveSchedule, or None when progressive learning is off
    monitor: str  # the minival metric that selects best.keras
    # Batch-scaled stages (progressive.batch_scaling): optimizer steps -> training progress, for the LR
    # schedule and the EMA; None otherwise.
    progress: Any = None
    # Why no test split is evaluated (data.eval_split null, or optional and absent: config's is then None).
    no_test_split: Optional[str] = None

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
        return self.steps_per_epoch if self.config.train.steps_per_epoch else None

    @property
    def validation_freq(self):
        """fit's `validation_freq`, the list of 1-based epochs validated: every eval.validation_freq epochs
        (when batch-scaled: where the data seen crosses a multiple of it, `validation_epochs`) and the last
        epoch. The checkpoint plan prints the same list."""
        freq = self.config.eval.validation_freq
        return validation_epochs(self.layout, freq) if self.batch_scaled else plan.validated_epochs(self.epochs, freq)

    @property
    def batch_size(self):
        return self.config.train.batch_size

    def class_names(self):
        names = getattr(self.source, "class_names", None)
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    def _dataset_options(self):
        options = dataset_options(self.config)
        options.pop("cache")  # applied once, to train_source (resolve_recipe), not per pipeline
        return options

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
            cutmix_alpha=stage.cutmix_alpha, input_context=input_context, **self._dataset_options(),
            **self._stream_start(batch_size, input_context, progressive, stage),
        )

    def static_dataset(self, input_context=None, fit_epoch=None):
        """The training pipeline without progressive learning: train_size, the static augmentation;
        `fit_epoch` (a `data.FitEpoch` callback) tells it where to start."""
        from efficientnetv2_keras.data import build_dataset

        return build_dataset(
            self.train_source, self.train_split, self.train_size, self.batch_size, training=True,
            input_context=input_context, **static_augmentation(self.config), **self._dataset_options(),
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
        return eval_dataset(self.config, self.source, split)

    def build_model(self, load_checkpoint=True):
        """The recipe's model with this data's class count (call under the strategy's scope)."""
        return build_model_from_config(self.config, num_classes=self.num_classes, load_checkpoint=load_checkpoint)

    def compile(self, model):
        """Compiles `model` for this recipe's steps (LR schedule, optimizer + EMA, loss, metrics)."""
        return compile_from_config(model, self.config, self.steps_per_epoch, self.total_steps,
                                   multi_label=self.multi_label, num_classes=self.num_classes, progress=self.progress)


def _is_multi_worker(strategy):
    tf = sys.modules.get("tensorflow")  # not imported on a JAX-only machine: then no tf.distribute strategy
    return tf is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def resolve_recipe(config, source=None, num_replicas=1):
    """Resolves a validated config (and its data source, built from the config when not given) once.

    With `data.cache`, the training pipelines read a `CachedSource`: the split is decoded once for every
    stage. The class count is the source's. num_replicas: the strategy's replica count
    (`strategy.num_replicas_in_sync`), which batch-scaled stage batches are multiples of.
    """
    from efficientnetv2_keras.weights import apply_weights_info

    # A converted init_checkpoint's JSON: train and evaluate on the inputs its weights expect.
    config = apply_weights_info(config)
    source = source if source is not None else source_from_config(config)
    train_source = source
    if config.data.cache:
        from efficientnetv2_keras.data import CachedSource

        train_source = source if isinstance(source, CachedSource) else CachedSource(source)
    from efficientnetv2_keras.data.sources import UnknownSplitError

    try:
        source.num_examples(config.data.train_split)  # first: what a recipe made for other data gets wrong first
        # The test split now, not when it is read after training (and before the minival adds its splits).
        eval_split, no_test_split = test_split(config, source)
        train_split, minival, minival_info = minival_split(config, source)
    except UnknownSplitError as error:
        raise split_error(error, config) from None
    if eval_split is None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, eval_split=None))
    steps_per_epoch, epochs, total_steps = training_steps(config, source.num_examples(train_split))
    train_size, eval_size = image_sizes(config)
    multi_label = is_multi_label(config, source)
    schedule = schedule_from_config(config, epochs, num_replicas, steps_per_epoch)
    # Batch-scaled stages: each stage's steps (fit_layout) in fewer fit epochs, LR and EMA over progress.
    progress = TrainingProgress.from_schedule(schedule) if schedule and schedule.batch_scaled else None
    return Recipe(
        config=config, source=source, train_source=train_source, num_classes=int(source.num_classes),
        multi_label=multi_label, train_split=train_split, minival=minival, minival_info=minival_info,
        train_size=train_size, eval_size=eval_size, steps_per_epoch=steps_per_epoch, epochs=epochs,
        total_steps=total_steps, schedule=schedule, monitor=default_monitor(config, multi_label), progress=progress,
        no_test_split=no_test_split,
    )


__all__ = [
    "Recipe",
    "resolve_recipe",
    "image_sizes",
    "static_augmentation",
    "dataset_options",
    "progressive_overrides",
    "schedule_from_config",
    "validation_epochs",
    "resolve_num_classes",
    "is_multi_label",
    "epochs_for_min_steps",
    "training_steps",
    "build_model_from_config",
    "compile_from_config",
    "source_from_config",
    "minival_split",
    "test_split",
    "split_error",
    "eval_dataset",
]
