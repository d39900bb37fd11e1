"""From a recipe (`hparams.Config`) to a model, and to a compiled model.

    config = load_config("finetune_cifar10")
    strategy = get_strategy(config.runtime.strategy)
    configure_mixed_precision(resolve_mixed_precision(config.train.mixed_precision, strategy))
    with strategy.scope():
        model = build_model_from_config(config)               # loads init_checkpoint, skips the head
        steps_per_epoch, epochs, total_steps = training_steps(config, num_train_examples)
        compile_from_config(model, config, steps_per_epoch, total_steps)
"""

from efficientnetv2_keras.models import build_model
from efficientnetv2_keras.training.finetune import load_pretrained
from efficientnetv2_keras.training.losses import build_loss, build_metrics
from efficientnetv2_keras.training.optimizers import build_optimizer
from efficientnetv2_keras.training.schedules import build_lr_schedule


def resolve_num_classes(config, source=None):
    """`data.num_classes`, else the source's class count (known sources need no data on disk)."""
    if config.data.num_classes:
        return config.data.num_classes
    if source is not None:
        return int(source.num_classes)
    from efficientnetv2_keras.data import IMAGENET21K_CLASSES, PAPER_TFDS_DATASETS, get_source

    name = config.data.source
    options = config.data.source_options
    if name in PAPER_TFDS_DATASETS:
        return PAPER_TFDS_DATASETS[name][0]
    if name.startswith("tfrecord21k:"):
        return int(options.get("num_classes", IMAGENET21K_CLASSES))
    if name.startswith("tfrecord:"):
        return int(options.get("num_classes", 1000))
    return int(get_source(name, data_dir=config.data.data_dir, **options).num_classes)


def is_multi_label(config, source=None):
    """Whether the labels are multi-hot (from data.label_format, else the source)."""
    if config.data.label_format is not None:
        return config.data.label_format in ("multi_hot", "multi_hot_normalized")
    if source is not None:
        return bool(source.multi_label)
    return config.data.source.startswith("tfrecord21k:")


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
    )
    if load_checkpoint and model_config.init_checkpoint:
        load_pretrained(model, model_config.init_checkpoint, skip_head=model_config.skip_head)
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
