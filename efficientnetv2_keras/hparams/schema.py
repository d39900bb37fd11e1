"""The recipe schema: six sections of typed keys, each with its default, its one-line meaning (citing the
paper or the released code) and its limits. Defaults are the paper's ImageNet recipe (§5.1 text and
Table 6) and, where the paper is silent, the released code's (`hparams.py`). Choices and limits come
from `limits`, the values the code that consumes them accepts.
"""

import dataclasses
from typing import Optional, Union

import yaml

from efficientnetv2_keras.limits import (  # noqa: F401  (the choices: importable from efficientnetv2_keras.hparams)
    ACTIVATIONS,
    AUGMENTS,
    INPUT_NORMALIZATIONS,
    LABEL_FORMATS,
    LOSSES,
    LR_SCALING_RULES,
    LR_SCHEDULES,
    MAX_RANDAUG_MAGNITUDE,
    MIN_MODEL_IMAGE_SIZE,
    MIN_PIPELINE_IMAGE_SIZE,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    RANDAUGMENT_OP_NAMES,
    STRATEGIES,
)

Pair = Optional[Union[float, list]]  # null | a constant | [min, max]


class ConfigError(ValueError):
    """A recipe is malformed: unknown key, wrong type, value out of range, missing file."""


def _key(default, doc, *, choices=None, low=None, high=None, low_open=False, high_open=False):
    """A schema entry: its default, its one-line meaning (with the paper or released-code source) and limits."""
    meta = {"doc": doc, "choices": choices, "low": low, "high": high, "low_open": low_open, "high_open": high_open}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class ModelConfig:
    """The network (the released `effnetv2_configs.py`, `effnetv2_model.py`)."""

    name: str = _key("efficientnetv2-s", "Variant: efficientnetv2-{b0,b1,b2,b3,s,m,l,xl} or a short form (s, b0).")
    dropout_rate: Optional[float] = _key(
        None, "Head dropout; null = the variant's official rate (S 0.2, M 0.3, L/XL 0.4; released effnetv2_configs.py). "
        "Progressive learning may schedule it.", low=0.0, high=1.0, high_open=True)
    survival_prob: float = _key(0.8, "Stochastic depth: survival of the last block, linear in depth (§5.1: 0.8).",
                                low=0.0, high=1.0, low_open=True)
    bn_momentum: float = _key(0.99, "BatchNorm moving-average momentum (§5.1: 0.99; the released code and "
                                    "keras.applications use 0.9).", low=0.0, high=1.0, high_open=True)
    bn_epsilon: float = _key(1e-3, "BatchNorm epsilon (released hparams.py: 1e-3).", low=0.0, low_open=True)
    sync_batch_norm: Optional[bool] = _key(
        None, "BatchNorm statistics over the global batch of all replicas; null = on under TPUStrategy (released "
        "main_tf2.py: bn_type tpu_bn) and MultiWorkerMirroredStrategy (keeps the workers identical), off elsewhere. "
        "TensorFlow backend only.")
    activation: str = _key("silu", "Activation of every block (released hparams.py: silu).", choices=ACTIVATIONS)
    include_preprocessing: bool = _key(True, "Model takes [0, 255] pixels and normalizes inside (as keras.applications).")
    weights: Optional[str] = _key(None, "Weights for build_model: null, 'imagenet' or a weights file; the head "
                                        "must match. For finetuning use init_checkpoint.")
    init_checkpoint: Optional[str] = _key(None, "Pretrained weights loaded after building ('imagenet', .keras, "
                                                ".weights.h5 or keras.applications .h5; released ft_init_ckpt).")
    skip_head: bool = _key(False, "Keep the new classifier when loading init_checkpoint (transfer learning).")
    input_normalization: Optional[str] = _key(
        None, "What include_preprocessing applies: imagenet (mean/std) or symmetric ((x-128)/128); null = the "
        "variant's, or that of a converted init_checkpoint's JSON.", choices=INPUT_NORMALIZATIONS)
    classifier_initializer: Optional[str] = _key(
        None, "Initializer of the classifier kernel; null = the released code's uniform +-1/sqrt(classes), zeros = "
        "every class at chance (short from-scratch runs with few classes start far above chance loss otherwise).",
        choices=("zeros",))


@dataclasses.dataclass
class DataConfig:
    """The input pipeline (the released `preprocessing.py`, `datasets.py`); arguments of `data.build_dataset`."""

    source: str = _key("imagenet2012", "Data source for data.get_source: digits, imagenet2012, cifar10, ..., "
                                       "tfds:<name>, folder:<dir>, tfrecord:<dir>, tfrecord21k:<dir>, "
                                       "keras:<fashion_mnist|mnist|cifar10|cifar100> (keras.datasets).")
    source_options: dict = _key({}, "Extra keyword arguments for data.get_source (e.g. split_patterns, image_size).")
    data_dir: Optional[str] = _key(None, "tensorflow-datasets data_dir, or the TFRecord folder for an empty "
                                         "'tfrecord:' source.")
    train_split: str = _key("train", "Training split (tfds slices such as 'train[:98%]' and 'a+b' work).")
    eval_split: Optional[str] = _key("validation", "Test split: evaluated once, after training, for the final and "
                                                   "the best checkpoint (ImageNet: the 50,000 'validation' images); "
                                                   "null = none (the run trains and validates only).")
    eval_split_optional: bool = _key(False, "When the source has no eval_split (an image folder without a test/ "
                                            "split folder): train and validate without a test split, and say so, "
                                            "instead of stopping with an error.")
    minival: Optional[Union[int, float, str]] = _key(
        25_000, "Held-out split for validation during training and best.keras selection, carved from "
        "train_split (which then excludes it): a number of examples, a fraction in (0, 1), a split name, or null "
        "(no validation, no best.keras). The released code holds out 25,000 ImageNet training images.")
    num_classes: Optional[int] = _key(None, "Classes of the head; null = the source's (1000, 21843, 10, ...).",
                                      low=1)
    train_size: Optional[Union[int, str]] = _key(
        None, "Training image size without progressive learning: null = the variant's train size, pixels, or "
        "'eval' = eval size rounded down to 16 (finetuning, released datasets.py).", low=MIN_PIPELINE_IMAGE_SIZE)
    eval_size: Optional[int] = _key(None, "Evaluation image size; null = the variant's (S 384, M/L 480; §3.3).",
                                    low=MIN_PIPELINE_IMAGE_SIZE)
    label_format: Optional[str] = _key(
        None, "Labels: null = one_hot (multi_hot_normalized for multi-label sources), one_hot, "
        "multi_hot_normalized (21k softmax, §5.2), multi_hot (sigmoid loss), sparse.", choices=LABEL_FORMATS)
    augment: str = _key("randaug", "randaug (crop+flip+RandAugment, §5.1), ft (finetune: resize+flip+cutout, "
                                   "§5.3) or none.", choices=AUGMENTS)
    randaug_layers: int = _key(2, "RandAugment ops per image (released code: 2).", low=0)
    randaug_ops: Optional[list] = _key(
        None, "RandAugment ops to draw from; null = all 16 of the released autoaugment.py. Narrow it "
        "where ops destroy the label (no Invert/Solarize/Equalize for handwriting).", choices=RANDAUGMENT_OP_NAMES)
    randaug_magnitude: Optional[float] = _key(
        None, "RandAugment magnitude without progressive learning; null = the variant's official one; 0 = off.",
        low=0.0, high=MAX_RANDAUG_MAGNITUDE)
    mixup_alpha: Optional[float] = _key(None, "Mixup alpha without progressive learning; null = the variant's "
                                              "official one; 0 = off.", low=0.0)
    cutmix_alpha: Optional[float] = _key(None, "CutMix alpha without progressive learning; null = as mixup_alpha "
                                               "(the released configs); 0 = off.", low=0.0)
    crop_area_min: float = _key(0.05, "Smallest area fraction kept by the random crop (released preprocessing.py: 0.05).",
                                low=0.0, high=1.0, low_open=True)
    flip: bool = _key(True, "Random horizontal flips in training.")
    eval_crop_padding: int = _key(32, "Eval center crop size/(size+padding) below 320 px (released preprocessing.py: 32); "
                                      "0 = resize only.", low=0)
    shuffle_buffer: int = _key(10_000, "Training shuffle buffer, in records.", low=0)
    cache: bool = _key(False, "Cache decoded images in memory (small datasets).")


@dataclasses.dataclass
class TrainConfig:
    """Optimization (paper §5.1; the released `hparams.py`)."""

    epochs: int = _key(350, "Training epochs (§5.1: 350).", low=1)
    batch_size: int = _key(4096, "Global batch size over all replicas (§5.1: 4096).", low=1)
    min_steps: int = _key(0, "Train at least this many steps: epochs = max(epochs, ceil(min_steps / "
                             "steps_per_epoch)) (finetuning 10,000, §5.3).", low=0)
    steps_per_epoch: Optional[int] = _key(None, "Steps per epoch; null = training examples // batch_size.", low=1)
    optimizer: str = _key("rmsprop", "rmsprop (§5.1), sgd, momentum, adam or adamw.", choices=OPTIMIZERS)
    rmsprop_rho: float = _key(0.9, "RMSProp decay (§5.1: 0.9).", low=0.0, high=1.0, high_open=True)
    momentum: float = _key(0.9, "Momentum of rmsprop/momentum (§5.1: 0.9).", low=0.0, high=1.0, high_open=True)
    optimizer_epsilon: float = _key(1e-3, "Epsilon of rmsprop/adam (released utils.build_optimizer: 0.001).", low=0.0, low_open=True)
    lr_base: float = _key(0.016, "Learning rate per 256 images: peak LR = lr_base * batch_size / 256 (§5.1: "
                                 "0.016 -> 0.256 at 4096).", low=0.0, low_open=True)
    lr_schedule: str = _key("exponential", "exponential (staircase, §5.1), cosine (§5.2-5.3), linear or constant.",
                            choices=LR_SCHEDULES)
    lr_warmup_epochs: float = _key(5.0, "Linear warmup from 0 (§5.1: 5 epochs).", low=0.0)
    lr_decay_factor: float = _key(0.97, "Exponential decay factor (§5.1: 0.97).", low=0.0, high=1.0, low_open=True)
    lr_decay_epochs: float = _key(2.4, "Epochs per exponential decay step (§5.1: 2.4).", low=0.0, low_open=True)
    lr_min: float = _key(0.0, "LR floor per 256 images, after warmup (released hparams.py: 0).", low=0.0)
    weight_decay: float = _key(1e-5, "L2 penalty wd * sum(w^2)/2 on conv/dense kernels, not BN or biases "
                                     "(§5.1: 1e-5); adamw: decoupled decay.", low=0.0)
    label_smoothing: float = _key(0.1, "Label smoothing (released hparams.py: 0.1).", low=0.0, high=1.0, high_open=True)
    loss: str = _key("softmax", "softmax cross-entropy (multi-hot labels normalized, §5.2) or sigmoid "
                                "(multi-label, released code).", choices=LOSSES)
    ema_decay: float = _key(0.9999, "EMA of the weights used for evaluation and export (§5.1: 0.9999); 0 = off.",
                            low=0.0, high=1.0, high_open=True)
    ema_warmup: bool = _key(True, "Ramp the EMA decay as min(decay, (1+t)/(10+t)) like the released code's "
                                  "TF1 EMA (matters for short runs).")
    ema_bn_statistics: bool = _key(True, "Average the BatchNorm moving means/variances with the EMA too (the "
                                         "released code); false: the EMA weights use the raw model's statistics.")
    gradient_clip_norm: float = _key(0.0, "Global gradient-norm clipping; 0 = off (released hparams.py gclip).", low=0.0)
    mixed_precision: str = _key("auto", "auto (bf16 on TPU, fp16 + loss scaling on GPU, float32 on CPU), or a "
                                        "Keras dtype policy.", choices=PRECISIONS)
    jit_compile: Union[bool, str] = _key("auto", "XLA: auto (Keras decides; off on CPU where it is slower), "
                                                  "true or false.")
    steps_per_execution: int = _key(1, "Train steps per compiled call.", low=1)
    backup_interval_s: float = _key(300.0, "Seconds of training between backups (and last.keras), which are "
                                           "also written at every stage's end and after the last epoch; 0 = "
                                           "after every epoch.", low=0.0)


@dataclasses.dataclass
class ProgressiveConfig:
    """Progressive learning with adaptive regularization (paper §4, Algorithm 1, Table 6)."""

    enabled: bool = _key(True, "Train in stages of growing image size and regularization (§5.1).")
    preset: str = _key("paper", "paper (Algorithm 1 + Table 6) or official (the released code).", choices=PRESETS)
    num_stages: int = _key(4, "Stages M (§5.1: 4, about 87 epochs each).", low=1)
    image_size: Pair = _key(None, "[min, max] stage image sizes; null = the preset's (S: 128 -> 300, Table 6).",
                            low=MIN_MODEL_IMAGE_SIZE)
    randaug_magnitude: Pair = _key(None, "[min, max] RandAugment magnitude; null = the preset's; 0 = off.",
                                   low=0.0, high=MAX_RANDAUG_MAGNITUDE)
    mixup_alpha: Pair = _key(None, "[min, max] mixup alpha; null = the preset's; 0 = off.", low=0.0)
    cutmix_alpha: Pair = _key(None, "[min, max] CutMix alpha; null = the preset's; 0 = off.", low=0.0)
    dropout_rate: Pair = _key(None, "[min, max] head dropout; null = the preset's.", low=0.0, high=1.0,
                              high_open=True)
    survival_prob: Pair = _key(None, "[min, max] stochastic-depth survival; null = not scheduled "
                                     "(model.survival_prob).", low=0.0, high=1.0, low_open=True)
    random_resize_every: Optional[int] = _key(None, "Draw a random stage every k epochs instead of growing "
                                                    "(paper Table 13); null = off.", low=1)
    batch_scaling: bool = _key(False, "Grow the batch as the image shrinks (train.batch_size at the last stage, "
                                      "x (last size / size)^2 before, multiples of 8) at the same activation "
                                      "memory, LR scaled by lr_scaling; a stage covers the same data in fewer "
                                      "epochs.")
    lr_scaling: Optional[str] = _key(None, "LR rule for batch_scaling's larger batches: linear (LR x k, Goyal et "
                                           "al. 2017, for sgd/momentum) or sqrt (LR x sqrt(k), Malladi et al. "
                                           "2022, for rmsprop/adam/adamw, which also take 1 - beta x k and "
                                           "epsilon / sqrt(k)); null = by train.optimizer.",
                                     choices=LR_SCALING_RULES)
    max_batch_size: Optional[int] = _key(None, "Cap on a stage's batch with batch_scaling (what fits in memory at "
                                               "the first stage); null = no cap.", low=1)
    size_multiple: Optional[int] = _key(16, "Round the stages between the first and the last below 128 px to "
                                            "multiples of this (ties down): a stride-32 network pads 40 px up to "
                                            "the cost of 48 px; null = Algorithm 1's sizes.", low=1)


@dataclasses.dataclass
class EvalConfig:
    """Evaluation."""

    batch_size: int = _key(128, "Evaluation batch size (released datasets.py: 128 for 21k).", low=1)
    validation_freq: int = _key(1, "In traineval mode, validate on data.minival (and maybe save best.keras) every "
                                   "N epochs; the test evaluation after training always runs.", low=1)


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how it runs."""

    strategy: str = _key("auto", "auto (TPU if found, else all GPUs, else the default strategy), tpu, gpus, "
                                  "multi_worker or cpu.", choices=STRATEGIES)
    tpu: Optional[str] = _key(None, "TPU name or address for strategy tpu/auto; null = from the environment.")
    seed: Optional[int] = _key(0, "Seed for Keras and the input pipelines; null = random.", low=0)
    worker_timeout: float = _key(600.0, "strategy multi_worker: seconds to wait for every worker in TF_CONFIG "
                                        "to come up before failing with a message.", low=0.0, low_open=True)


SECTION_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "progressive": ProgressiveConfig,
    "eval": EvalConfig,
    "runtime": RuntimeConfig,
}


@dataclasses.dataclass
class Config:
    """A whole recipe. Sections are plain mutable dataclasses; `validate_config` re-checks after edits."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    progressive: ProgressiveConfig = dataclasses.field(default_factory=ProgressiveConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    # Where the recipe came from (files, base first, then overrides); not part of the recipe itself.
    sources: tuple = dataclasses.field(default=(), compare=False, repr=False)

    def to_dict(self):
        """The recipe as nested plain dicts (YAML-ready)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTION_TYPES}


def describe(markdown=True):
    """Every key with its default and meaning: a Markdown table (or plain lines)."""
    rows = []
    for section, cls in SECTION_TYPES.items():
        defaults = cls()
        for field in dataclasses.fields(cls):
            default = yaml.safe_dump(getattr(defaults, field.name), default_flow_style=True).strip()
            default = default.removesuffix("...").strip()
            rows.append((f"{section}.{field.name}", default, field.metadata["doc"]))
    if not markdown:
        return "\n".join(f"{k} = {d}  # {doc}" for k, d, doc in rows)
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {doc} |" for k, d, doc in rows]
    return "\n".join(lines)
