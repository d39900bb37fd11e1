"""The paper's training recipe as Keras pieces (paper §5; the released code's `main.py`, `utils.py` and configs).

* `recipe` (with `recipe_settings`, `recipe_data`): the resolver, the one reader of the recipe schema;
  `resolve_recipe` turns a validated config once into a `Recipe` (`resolved`): sizes, steps with
  `min_steps`, the progressive schedule, the splits, and frozen settings for the model (`recipe_model`)
  and its compilation (`compiling`). The `build_*(config, ...)` and `*_from_config` forms are its too.
* `schedules`: warmup + exponential staircase decay (ImageNet), warmup + cosine (21k, finetuning),
  warmup + constant/linear; `scaled_learning_rate` (lr_base * batch / 256); `make_lr_schedule`.
* `optimizers`: RMSProp(0.9, 0.9, 1e-3) and friends with EMA; L2 weight decay on kernels only, in the
  gradient (the reported loss is the cross-entropy; `LogL2Loss` logs the L2 term); `make_optimizer`.
* `ema`: EMA-decay ramp, averaged BatchNorm statistics, swapping EMA weights in for evaluation and
  checkpoints (`EMACallback`).
* `losses`: label-smoothed softmax CE, 21k multi-label softmax/sigmoid CE, precision@k / recall@k.
* `strategy` (a package): `get_strategy`, TPU, multi-worker, the JAX adapter, mixed precision,
  per-replica batch sizes.
* `trainer` (the fit loop), `run_folder` (a run's files), `callbacks` (best/last checkpoints),
  `backup`, `resume`, `run_log`, `divergence`, `evaluation` (the test split per checkpoint), `report`
  (plots, results tables).
"""

from efficientnetv2_keras.training.ema import (
    EMACallback,
    EMAWarmupMixin,
    apply_ema_weights,
    batch_norm_statistics,
    ema_optimizer,
    ema_variables,
    ema_weights,
    max_ema_difference,
    swap_ema_weights,
)
from efficientnetv2_keras.models import load_pretrained
from efficientnetv2_keras.training.losses import (
    MultiLabelSoftmaxCrossEntropy,
    PrecisionAtK,
    RecallAtK,
)
from efficientnetv2_keras.training.optimizers import (
    SGD,
    Adam,
    AdamW,
    L2WeightDecayMixin,
    LogL2Loss,
    RMSprop,
    is_decayed,
    split_weight_decay_variables,
    weight_decay_loss,
)
from efficientnetv2_keras.training.recipe import (  # a whole recipe in: the resolver's
    Recipe,
    build_loss,
    build_lr_schedule,
    build_metrics,
    build_model_from_config,
    build_optimizer,
    compile_from_config,
    default_monitor,
    epochs_for_min_steps,
    is_multi_label,
    resolve_num_classes,
    resolve_recipe,
    training_steps,
)
from efficientnetv2_keras.training.schedules import (
    LinearWarmup,
    constant_with_warmup,
    cosine_decay_with_warmup,
    exponential_decay_with_warmup,
    linear_decay_with_warmup,
    scaled_learning_rate,
)
# `strategy` needs TensorFlow (tf.distribute); everything else is keras only, so it is imported on
# first use and the other pieces work on the JAX and PyTorch backends too.
_STRATEGY_NAMES = (
    "configure_mixed_precision",
    "default_mixed_precision",
    "distribute_dataset",
    "get_strategy",
    "global_batch_size",
    "is_tpu_strategy",
    "per_replica_batch_size",
    "resolve_mixed_precision",
)


def __getattr__(name):
    if name in _STRATEGY_NAMES or name == "strategy":
        import importlib

        module = importlib.import_module("efficientnetv2_keras.training.strategy")
        return module if name == "strategy" else getattr(module, name)
    raise AttributeError(f"module 'efficientnetv2_keras.training' has no attribute {name!r}")


__all__ = [
    # schedules
    "LinearWarmup",
    "scaled_learning_rate",
    "exponential_decay_with_warmup",
    "cosine_decay_with_warmup",
    "linear_decay_with_warmup",
    "constant_with_warmup",
    "build_lr_schedule",
    # optimizers and weight decay
    "RMSprop",
    "SGD",
    "Adam",
    "AdamW",
    "L2WeightDecayMixin",
    "LogL2Loss",
    "is_decayed",
    "weight_decay_loss",
    "split_weight_decay_variables",
    "build_optimizer",
    # EMA
    "EMAWarmupMixin",
    "EMACallback",
    "ema_weights",
    "swap_ema_weights",
    "apply_ema_weights",
    "ema_optimizer",
    "ema_variables",
    "max_ema_difference",
    "batch_norm_statistics",
    # losses and metrics
    "MultiLabelSoftmaxCrossEntropy",
    "PrecisionAtK",
    "RecallAtK",
    "build_loss",
    "build_metrics",
    "default_monitor",
    # strategy and precision
    "get_strategy",
    "is_tpu_strategy",
    "default_mixed_precision",
    "resolve_mixed_precision",
    "configure_mixed_precision",
    "per_replica_batch_size",
    "global_batch_size",
    "distribute_dataset",
    # finetuning and steps
    "load_pretrained",
    "epochs_for_min_steps",
    "training_steps",
    # from a recipe
    "Recipe",
    "resolve_recipe",
    "build_model_from_config",
    "compile_from_config",
    "resolve_num_classes",
    "is_multi_label",
]
