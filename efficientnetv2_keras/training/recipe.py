"""The recipe resolver: a validated recipe (`hparams.Config`) turned once into what training needs.

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

`hparams` knows the schema: which keys exist, their types and ranges. This module and
`recipe_settings` are the only readers of it: everything derived from the values (image sizes from the
variant, static augmentation, the progressive schedule, steps and epochs with `train.min_steps`, the
minival split, the class count, the monitored metric, the model's and the compilation's settings) is
worked out here, once, and carried by the `Recipe` (`training.resolved`) as plain values and small
frozen settings. `resolve_recipe` unpacks the recipe's sections and passes them, not the recipe, on.
"""

import dataclasses
import math

from efficientnetv2_keras import hparams
from efficientnetv2_keras.progressive.schedule import REGULARIZERS, progressive_schedule
from efficientnetv2_keras.training.recipe_settings import (  # noqa: F401  (the names users import from here)
    augmentation_of,
    build_loss,
    build_lr_schedule,
    build_metrics,
    build_model_from_config,
    build_optimizer,
    compile_from_config,
    compile_settings,
    compiling_of,
    dataset_options,
    default_monitor,
    image_sizes,
    is_multi_label,
    model_settings,
    multi_label_of,
    pipeline_options,
    resolve_num_classes,
    sizes_of,
    static_augmentation,
)
from efficientnetv2_keras.training.losses import monitor_for
from efficientnetv2_keras.training.recipe_data import (  # noqa: F401
    check_even_batches,
    eval_dataset,
    evaluation_of,
    minival_of,
    minival_split,
    resolve_evaluation,
    source_from_config,
    source_of,
    split_error,
    split_error_of,
    test_split,
    test_split_of,
)
from efficientnetv2_keras.training.resolved import Evaluation, Recipe, validation_epochs  # noqa: F401
from efficientnetv2_keras.training.schedules import TrainingProgress

# ------------------------------------------------------------------------------------------------
# The progressive schedule, and steps and epochs (no data needed).
# ------------------------------------------------------------------------------------------------


def progressive_overrides(config):
    """The `progressive.*` ranges that are set, as keyword arguments for `progressive_schedule`."""
    return _overrides(config.progressive)


def _overrides(progressive):
    return {
        key: (tuple(value) if isinstance(value, list) else value)
        for key in REGULARIZERS
        if (value := getattr(progressive, key)) is not None
    }


ADAPTIVE_OPTIMIZERS = ("rmsprop", "adam", "adamw")


def lr_scaling_rule(config):
    """`progressive.lr_scaling`, else by optimizer: "sqrt" for the adaptive ones (RMSprop, Adam, AdamW:
    Malladi et al. 2022 derive the square-root rule for them), "linear" for SGD and momentum (Goyal et
    al. 2017)."""
    return _lr_scaling_rule(config.progressive, config.train.optimizer)


def _lr_scaling_rule(progressive, optimizer):
    if progressive.lr_scaling:
        return progressive.lr_scaling
    return "sqrt" if optimizer in ADAPTIVE_OPTIMIZERS else "linear"


def check_stages(config, epochs):
    """Raises ConfigError naming the fix when `epochs` cannot hold `progressive.num_stages` stages
    (`plan` says why a run stops rather than shrinking the stages)."""
    _check_stages(config.progressive, config.train, epochs)


def _check_stages(progressive, train, epochs):
    if not progressive.enabled or epochs >= progressive.num_stages:
        return
    why = f"train.epochs={train.epochs}"
    if epochs != train.epochs:
        why += f" (train.min_steps={train.min_steps} makes it {epochs} epochs)"
    raise hparams.ConfigError(
        f"{why} is fewer epochs than progressive.num_stages={progressive.num_stages}, and every progressive "
        f"stage needs at least one epoch. For a short run add --override=progressive.num_stages={epochs} "
        "(or progressive.enabled=false for no stages), or train for more epochs."
    )


def schedule_from_config(config, epochs, num_replicas=1, steps_per_epoch=None):
    """The recipe's progressive-learning stages over `epochs` (None when `progressive.enabled` is off).

    With `progressive.batch_scaling` the stages get their own batch (train.batch_size at the last stage,
    ~1/size^2 before it, multiples of `num_replicas`, capped at `progressive.max_batch_size`) and the
    learning-rate scale of `lr_scaling_rule(config)`; with `steps_per_epoch` (base-batch steps in an
    epoch of data) also their steps (`ProgressiveSchedule.fit_layout`), shown in the table. Too few
    epochs for `progressive.num_stages`: a ConfigError naming the override that fixes it.
    """
    return _schedule(config.model.name, config.progressive, config.train, config.runtime.seed, epochs,
                     num_replicas, steps_per_epoch)


def _schedule(model_name, progressive, train, seed, epochs, num_replicas=1, steps_per_epoch=None):
    if not progressive.enabled:
        return None
    _check_stages(progressive, train, epochs)
    batching = {}
    if progressive.batch_scaling:
        batching = {"batch_size": train.batch_size, "batch_scaling": True,
                    "max_batch_size": progressive.max_batch_size, "num_replicas": num_replicas,
                    "lr_scaling": _lr_scaling_rule(progressive, train.optimizer)}
    return progressive_schedule(
        model_name,
        progressive.preset,
        total_epochs=epochs,
        num_stages=progressive.num_stages,
        random_resize_every=progressive.random_resize_every,
        seed=seed,
        size_multiple=progressive.size_multiple,
        steps_per_epoch=steps_per_epoch,
        **batching,
        **_overrides(progressive),
    )


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
    return _training_steps(config.train, num_train_examples)


def _training_steps(train, num_train_examples=None):
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


# ------------------------------------------------------------------------------------------------
# The whole recipe against its data.
# ------------------------------------------------------------------------------------------------


def _splits(data, source):
    """(train split, minival, minival info, test split, why no test split), checked against the source."""
    from efficientnetv2_keras.data.sources import UnknownSplitError

    try:
        source.num_examples(data.train_split)  # first: what a recipe made for other data gets wrong first
        # The test split now, not when it is read after training (and before the minival adds its splits,
        # so that an error lists the source's own).
        try:
            eval_split, no_test_split = test_split_of(data, source)
        except hparams.ConfigError:
            # It may be the part the minival holds out of the training split: the architecture search
            # scores its candidates there, never on the test split.
            minival = minival_of(data, source)
            if minival[1] is None or minival[1] != data.eval_split:
                raise
            return (*minival, data.eval_split, None)
        return (*minival_of(data, source), eval_split, no_test_split)
    except UnknownSplitError as error:
        raise split_error_of(error, data) from None


def _train_source(source, cache):
    """With `data.cache`, the source the training pipelines read: the split decoded once for every stage."""
    if not cache:
        return source
    from efficientnetv2_keras.data import CachedSource

    return source if isinstance(source, CachedSource) else CachedSource(source)


def resolve_recipe(config, source=None, num_replicas=1):
    """Resolves a validated config (and its data source, built from the config when not given) once.

    With `data.cache`, the training pipelines read a `CachedSource`: the split is decoded once for every
    stage. The class count is the source's. num_replicas: the strategy's replica count
    (`strategy.num_replicas_in_sync`), which batch-scaled stage batches are multiples of.
    """
    from efficientnetv2_keras.weights import apply_weights_info

    # A converted init_checkpoint's JSON: train and evaluate on the inputs its weights expect.
    config = apply_weights_info(config)
    model, data, train, seed = config.model, config.data, config.train, config.runtime.seed
    source = source if source is not None else source_of(data)
    train_source = _train_source(source, data.cache)
    train_split, minival, minival_info, eval_split, no_test_split = _splits(data, source)
    if eval_split is None:
        config = dataclasses.replace(config, data=dataclasses.replace(data, eval_split=None))
    steps_per_epoch, epochs, total_steps = _training_steps(train, source.num_examples(train_split))
    multi_label = multi_label_of(data, source)
    schedule = _schedule(model.name, config.progressive, train, seed, epochs, num_replicas, steps_per_epoch)
    return Recipe(
        config=config, source=source, train_source=train_source, num_classes=int(source.num_classes),
        multi_label=multi_label, train_split=train_split, minival=minival, minival_info=minival_info,
        train_size=sizes_of(model.name, data)[0], steps_per_epoch=steps_per_epoch, epochs=epochs,
        total_steps=total_steps, schedule=schedule, monitor=monitor_for(multi_label), batch_size=train.batch_size,
        model_settings=model_settings(model, train.loss), compile_settings=compile_settings(train, data.label_format),
        evaluation=evaluation_of(config, source, eval_split, no_test_split),
        pipeline_options=pipeline_options(data, seed), static_augmentation=augmentation_of(model.name, data),
        fixed_steps_per_epoch=bool(train.steps_per_epoch), validation_every=config.eval.validation_freq,
        backup_interval_s=train.backup_interval_s, sync_batch_norm=model.sync_batch_norm, data_source=data.source,
        # Batch-scaled stages: each stage's steps (fit_layout) in fewer fit epochs, LR and EMA over progress.
        progress=TrainingProgress.from_schedule(schedule) if schedule and schedule.batch_scaled else None,
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
