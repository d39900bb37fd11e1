"""The recipe resolver's readers: a validated recipe (`hparams.Config`) into plain values and settings.

With `training.recipe` (which resolves a whole recipe against its data) this is the one place that reads
the recipe schema; everything below takes what is read here: `ModelSettings` (`recipe_model`),
`CompileSettings` (`compiling`: `LRSettings`, `OptimizerSettings`, the loss's values), the keywords of
`data.build_dataset`. The `build_*(config, ...)` and `*_from_config` functions are the same builders
for a recipe at hand (the released code's way: unpack the config once, pass the values on).
"""

from efficientnetv2_keras.limits import MULTI_LABEL_FORMATS, augment_argument
from efficientnetv2_keras.models.family import get_model_spec
from efficientnetv2_keras.training.compiling import CompileSettings, compile_model
from efficientnetv2_keras.training.losses import make_loss, make_metrics, monitor_for
from efficientnetv2_keras.training.optimizers import OptimizerSettings, make_optimizer
from efficientnetv2_keras.training.recipe_model import ModelSettings, make_model
from efficientnetv2_keras.training.schedules import LRSettings, make_lr_schedule


def image_sizes(config):
    """(train size without progressive learning, eval size) in pixels, from the recipe and the variant."""
    return sizes_of(config.model.name, config.data)


def sizes_of(model_name, data):
    """`image_sizes` from the variant and the recipe's `data` section."""
    spec = get_model_spec(model_name)
    eval_size = data.eval_size or spec.eval_size
    train_size = data.train_size
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
    return augmentation_of(config.model.name, config.data)


def augmentation_of(model_name, data):
    """`static_augmentation` from the variant and the recipe's `data` section."""
    spec = get_model_spec(model_name)
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
    return {**pipeline_options(config.data, config.runtime.seed), "cache": config.data.cache}


def pipeline_options(data, seed):
    """`dataset_options` of one pipeline, from the `data` section and the seed: without `cache`, which the
    resolver applies once (a `CachedSource` of the training split) and evaluation does not need."""
    return {
        "randaug_layers": data.randaug_layers,
        "randaug_ops": data.randaug_ops,
        "label_format": data.label_format,
        "augment": augment_argument(data.augment),
        "crop_area_range": (data.crop_area_min, 1.0),
        "flip": data.flip,
        "eval_crop_padding": data.eval_crop_padding,
        "shuffle_buffer": data.shuffle_buffer,
        "seed": seed,
        "data_dir": data.data_dir,
    }


def _multi_hot(label_format, otherwise):
    """Whether labels are multi-hot: by `data.label_format` when it is set, else `otherwise`."""
    return bool(otherwise) if label_format is None else label_format in MULTI_LABEL_FORMATS


def is_multi_label(config, source=None):
    """Whether the labels are multi-hot (from data.label_format, else the source, else its name)."""
    return multi_label_of(config.data, source)


def multi_label_of(data, source=None):
    """`is_multi_label` from the recipe's `data` section."""
    if data.label_format is None and source is not None:
        return bool(source.multi_label)
    from efficientnetv2_keras.data.sources import names_multi_label  # TensorFlow: imported on first use

    return _multi_hot(data.label_format, names_multi_label(data.source))


def resolve_num_classes(config, source=None):
    """`data.num_classes`, else the source's class count (known sources need no data on disk)."""
    if config.data.num_classes:
        return config.data.num_classes
    if source is not None:
        return int(source.num_classes)
    from efficientnetv2_keras.data.sources import get_source, known_num_classes

    known = known_num_classes(config.data.source, config.data.source_options)
    if known is not None:
        return known
    return int(get_source(config.data.source, data_dir=config.data.data_dir, **config.data.source_options).num_classes)


def model_settings(model, loss):
    """The recipe's `model` section as `ModelSettings`; the classifier ends in a sigmoid for the sigmoid loss."""
    options = {"weights": model.weights, "include_preprocessing": model.include_preprocessing,
               "classifier_activation": "sigmoid" if loss == "sigmoid" else "softmax",
               "dropout_rate": model.dropout_rate, "survival_prob": model.survival_prob,
               "bn_momentum": model.bn_momentum, "bn_epsilon": model.bn_epsilon, "activation": model.activation,
               "input_normalization": model.input_normalization,
               "classifier_initializer": model.classifier_initializer}
    return ModelSettings(model.name, options, model.init_checkpoint, model.skip_head)


def optimizer_settings(train):
    """The recipe's `train` section's optimizer keys as `OptimizerSettings`."""
    return OptimizerSettings(train.optimizer, train.weight_decay, train.ema_decay, train.ema_warmup,
                             train.ema_bn_statistics, train.gradient_clip_norm, train.rmsprop_rho, train.momentum,
                             train.optimizer_epsilon)


def lr_settings(train):
    """The recipe's `train` section's learning-rate keys as `LRSettings`."""
    return LRSettings(train.lr_schedule, train.lr_base, train.lr_min, train.batch_size, train.lr_warmup_epochs,
                      train.lr_decay_factor, train.lr_decay_epochs)


def compile_settings(train, label_format):
    """The recipe's `CompileSettings` from its `train` section and `data.label_format`."""
    return CompileSettings(lr_settings(train), optimizer_settings(train), train.loss, train.label_smoothing,
                           label_format, train.jit_compile, train.steps_per_execution)


def compiling_of(config):
    """(CompileSettings, multi-label) of a recipe, for a model compiled without the recipe's data source
    (multi-label by `data.label_format`, else by the source's name: `is_multi_label`)."""
    return compile_settings(config.train, config.data.label_format), is_multi_label(config)


def build_model_from_config(config, num_classes=None, input_shape=None, load_checkpoint=True):
    """The recipe's model (`model.*`), with `model.init_checkpoint` loaded (head skipped if asked).

    The classifier ends in a softmax, or a sigmoid for `train.loss: sigmoid`. Call under the strategy's
    scope, after `configure_mixed_precision`.
    """
    classes = num_classes or resolve_num_classes(config)
    return make_model(model_settings(config.model, config.train.loss), classes, input_shape=input_shape,
                      load_checkpoint=load_checkpoint)


def compile_from_config(model, config, steps_per_epoch, total_steps, multi_label=None, num_classes=None,
                        progress=None):
    """Compiles `model` with the recipe's LR schedule, optimizer (EMA, weight decay), loss and metrics
    (`compiling.compile_model`); returns the optimizer."""
    multi_label = is_multi_label(config) if multi_label is None else multi_label
    settings = compile_settings(config.train, config.data.label_format)
    return compile_model(model, settings, steps_per_epoch, total_steps, multi_label=multi_label,
                         num_classes=num_classes, progress=progress)


def build_lr_schedule(config, steps_per_epoch, total_steps, progress=None):
    """The recipe's learning-rate schedule (`train.lr_*`): `schedules.make_lr_schedule`."""
    return make_lr_schedule(lr_settings(config.train), steps_per_epoch, total_steps, progress=progress)


def build_optimizer(config, lr_schedule, model=None):
    """The recipe's optimizer (`train.*`) with EMA and weight decay: `optimizers.make_optimizer`."""
    return make_optimizer(optimizer_settings(config.train), lr_schedule, model)


def build_loss(config, multi_label=False, from_logits=False):
    """The recipe's loss (`train.loss`, `train.label_smoothing`, `data.label_format`; `multi_label` for a
    null label_format): `losses.make_loss`."""
    train, label_format = config.train, config.data.label_format
    return make_loss(train.loss, train.label_smoothing, label_format, _multi_hot(label_format, multi_label),
                     from_logits=from_logits)


def build_metrics(config, num_classes=None, multi_label=False):
    """The recipe's metrics: `losses.make_metrics`."""
    label_format = config.data.label_format
    return make_metrics(num_classes, label_format, _multi_hot(label_format, multi_label))


def default_monitor(config, multi_label=False):
    """The validation metric that picks the "best" checkpoint (higher is better)."""
    return monitor_for(_multi_hot(config.data.label_format, multi_label))
