"""Training recipes: a typed schema, YAML files with `base:` inheritance, "a.b=c" overrides, validation.

    from efficientnetv2_keras.hparams import load_config, to_yaml
    config = load_config("imagenet_s", overrides=["train.batch_size=512", "runtime.strategy=gpus"])
    config.train.lr_base          # 0.016
    print(to_yaml(config))        # the resolved recipe, as written next to checkpoints

A recipe is six sections (`model`, `data`, `train`, `progressive`, `eval`, `runtime`); every key has
a type, a one-line meaning and a default. Defaults are the paper's ImageNet recipe (§5.1 text and
Table 6) and, where the paper is silent, the released code's (`hparams.py`). `describe()` lists
every key. A mistyped key, a wrong type or an out-of-range value is an error that names the key, the
file it came from and, for unknown keys, the nearest valid one.

Recipe files live in the repository's `hparams/` folder, which an installed package carries as
`efficientnetv2_keras/recipes/` (RECIPES_DIR is whichever exists); `load_config("imagenet_s")` finds
`imagenet_s.yaml` there, `load_config("path/to/mine.yaml")` reads a file. A file may start with
`base: other_recipe.yaml` (a name or a path relative to the file) to inherit everything it does not
set itself.
"""

import dataclasses
import difflib
import math
import os
import typing
from typing import Optional, Union

import yaml

from efficientnetv2_keras.files import atomic_write_text
from efficientnetv2_keras.limits import (  # noqa: F401  (OPTIMIZERS ... STRATEGIES: importable from here too)
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
from efficientnetv2_keras.limits import REGULARIZERS as _PAIR_KEYS


def _recipes_dir():
    """The recipes shipped in an installed package (setup.py: package data), else a checkout's hparams/."""
    package = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(package, "recipes")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "hparams")


RECIPES_DIR = _recipes_dir()
BASE_KEY = "base"

Pair = Optional[Union[float, list]]  # null | a constant | [min, max]


class ConfigError(ValueError):
    """A recipe is malformed: unknown key, wrong type, value out of range, missing file."""


def _key(default, doc, *, choices=None, low=None, high=None, low_open=False, high_open=False, min_len=None):
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


# ------------------------------------------------------------------------------------------------
# Validation.
# ------------------------------------------------------------------------------------------------


def _fields(section):
    return {f.name: f for f in dataclasses.fields(SECTION_TYPES[section])}


def _hints(section):
    return typing.get_type_hints(SECTION_TYPES[section])


def _nearest(word, candidates):
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return match[0] if match else None


def _where(origin):
    return f" (in {origin})" if origin else ""


def _unknown_key_error(section, key, origin):
    valid = list(_fields(section))
    message = f"Unknown key '{section}.{key}'{_where(origin)}."
    elsewhere = [s for s in SECTION_TYPES if s != section and key in _fields(s)]
    nearest = _nearest(key, valid)
    if elsewhere:
        message += f" '{key}' is a key of section '{elsewhere[0]}': did you mean '{elsewhere[0]}.{key}'?"
    elif nearest:
        message += f" Did you mean '{section}.{nearest}'?"
    message += f" Valid keys of '{section}': {', '.join(valid)}."
    return ConfigError(message)


def _unknown_section_error(name, origin):
    message = f"Unknown section '{name}'{_where(origin)}."
    owners = [s for s in SECTION_TYPES if name in _fields(s)]
    nearest = _nearest(name, list(SECTION_TYPES) + [BASE_KEY])
    if owners:
        message += f" '{name}' is a key, not a section: did you mean '{owners[0]}.{name}'?"
    elif nearest:
        message += f" Did you mean '{nearest}'?"
    message += f" Valid sections: {', '.join(SECTION_TYPES)} (and '{BASE_KEY}' to inherit a recipe)."
    return ConfigError(message)


def _type_name(annotation):
    origin = typing.get_origin(annotation)
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    return {float: "a number", int: "an integer", bool: "true/false", str: "a string", list: "[min, max]",
            dict: "a mapping"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _in_range(value, meta):
    low, high = meta["low"], meta["high"]
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        return False
    if high is not None and (value > high or (meta["high_open"] and value == high)):
        return False
    return True


def _range_text(meta):
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    return f"{'<' if meta['high_open'] else '<='} {high:g}"


_NO_MATCH = object()


def _coerce(value, annotation):
    """`value` as `annotation` (one member of a Union), or _NO_MATCH."""
    if annotation is type(None):
        return None if value is None else _NO_MATCH
    if annotation is bool:
        return value if isinstance(value, bool) else _NO_MATCH
    if annotation is int:
        if isinstance(value, bool):
            return _NO_MATCH
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _NO_MATCH
    if annotation is float:
        if isinstance(value, bool):
            return _NO_MATCH
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _NO_MATCH
        return _NO_MATCH
    if annotation is str:
        return value if isinstance(value, str) else _NO_MATCH
    if annotation is list:
        return list(value) if isinstance(value, (list, tuple)) else _NO_MATCH
    if annotation is dict:
        return dict(value) if isinstance(value, dict) else _NO_MATCH
    return _NO_MATCH


def _check_value(section, key, value, origin=None):
    """Returns the value converted to the key's type; raises ConfigError naming the key otherwise."""
    name = f"{section}.{key}"
    field = _fields(section)[key]
    annotation = _hints(section)[key]
    meta = field.metadata
    members = typing.get_args(annotation) if typing.get_origin(annotation) is Union else (annotation,)
    # bool before int/float (YAML true is not 1); float before str (so "1e-5" is a number when allowed).
    order = sorted(members, key=lambda a: {type(None): 0, bool: 1, int: 2, float: 3, list: 4, dict: 5}.get(a, 6))
    converted = _NO_MATCH
    for member in order:
        converted = _coerce(value, member)
        if converted is not _NO_MATCH:
            break
    if converted is _NO_MATCH:
        raise ConfigError(
            f"{name} must be {_type_name(annotation)}, got {value!r} ({type(value).__name__}){_where(origin)}. "
            f"{name}: {meta['doc']}"
        )
    if converted is None:
        return None

    if section == "progressive" and key in _PAIR_KEYS:
        return _check_pair(name, converted, meta, origin)
    if key == "train_size" and isinstance(converted, str):
        if converted != "eval":
            raise ConfigError(f"{name} must be null, a size in pixels or 'eval', got {converted!r}{_where(origin)}.")
        return converted
    if key == "minival":
        return _check_minival(name, converted, origin)
    if key == "jit_compile" and isinstance(converted, str) and converted != "auto":
        raise ConfigError(f"{name} must be 'auto', true or false, got {converted!r}{_where(origin)}.")
    if meta["choices"] is not None and isinstance(converted, list):  # a list of choices
        for item in converted:
            if item not in meta["choices"]:
                nearest = _nearest(str(item), meta["choices"])
                hint = f" Did you mean {nearest!r}?" if nearest else ""
                raise ConfigError(f"{name}: {item!r} is not one of {list(meta['choices'])}{_where(origin)}.{hint}")
        if not converted:
            raise ConfigError(f"{name} must name at least one op, or be null for all{_where(origin)}.")
        return converted
    if meta["choices"] is not None and converted not in meta["choices"]:
        nearest = _nearest(str(converted), meta["choices"])
        hint = f" Did you mean {nearest!r}?" if nearest else ""
        raise ConfigError(
            f"{name} must be one of {list(meta['choices'])}, got {converted!r}{_where(origin)}.{hint}"
        )
    if isinstance(converted, (int, float)) and not isinstance(converted, bool):
        if not math.isfinite(converted) or not _in_range(converted, meta):
            raise ConfigError(f"{name} must be {_range_text(meta)}, got {converted!r}{_where(origin)}.")
    if isinstance(converted, dict) and not all(isinstance(k, str) for k in converted):
        raise ConfigError(f"{name} must be a mapping with string keys, got {converted!r}{_where(origin)}.")
    return converted


def _check_minival(name, value, origin):
    """A count (int >= 1), a fraction in (0, 1) or a split name."""
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{name} must not be empty; give a count, a fraction or a split name{_where(origin)}.")
        return value.strip()
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 examples, a fraction in (0, 1), a split name or null (no "
                              f"minival), got {value!r}{_where(origin)}.")
        return value
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ConfigError(f"{name} as a fraction of train_split must be in (0, 1), got {value!r}{_where(origin)} "
                          "(a whole number is a count of examples).")
    return value




def _check_pair(name, value, meta, origin):
    """null | constant | [min, max]: numbers in range; image sizes are integers."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != 2:
        raise ConfigError(f"{name} must be a number or a [min, max] pair, got {value!r}{_where(origin)}.")
    checked = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ConfigError(f"{name} must hold numbers, got {item!r}{_where(origin)}.")
        if name.endswith("image_size"):
            if not float(item).is_integer():
                raise ConfigError(f"{name} must hold integer pixel sizes, got {item!r}{_where(origin)}.")
            item = int(item)
        if not _in_range(item, meta):
            raise ConfigError(f"{name} values must be {_range_text(meta)}, got {item!r}{_where(origin)}.")
        checked.append(item)
    return checked if isinstance(value, list) else checked[0]


def _check_section(section, values, origin=None):
    if not isinstance(values, dict):
        raise ConfigError(f"Section '{section}' must be a mapping of keys, got {values!r}{_where(origin)}.")
    fields = _fields(section)
    checked = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in fields:
            raise _unknown_key_error(section, str(key), origin)
        checked[key] = _check_value(section, key, value, origin)
    return checked


def _check_consistency(config):
    """Rules that involve more than one key."""
    from efficientnetv2_keras.models.family import get_model_spec

    try:
        get_model_spec(config.model.name)
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    train, data = config.train, config.data
    if train.loss == "sigmoid" and data.label_format == "multi_hot_normalized":
        raise ConfigError(
            "train.loss=sigmoid needs 0/1 targets: set data.label_format=multi_hot (multi_hot_normalized "
            "is for the softmax loss)."
        )
    if data.label_format == "sparse":
        if train.label_smoothing:
            raise ConfigError("data.label_format=sparse cannot be label-smoothed: use one_hot, or "
                              "train.label_smoothing=0.")
        if train.loss == "sigmoid":
            raise ConfigError("train.loss=sigmoid needs one_hot or multi_hot labels, not sparse.")
    if isinstance(data.minival, str) and data.minival == data.eval_split:
        raise ConfigError(
            f"data.minival is the test split ({data.eval_split!r}): model selection on the test split reports "
            "an optimistic accuracy. Carve one from the training data (e.g. data.minival=0.05) or name another "
            "split."
        )
    progressive = config.progressive
    if progressive.enabled and progressive.batch_scaling:
        if progressive.random_resize_every:
            raise ConfigError("progressive.batch_scaling does not combine with progressive.random_resize_every "
                              "(stages drawn at random cannot each have their own epoch length): turn one off.")
        if progressive.max_batch_size is not None and progressive.max_batch_size < train.batch_size:
            raise ConfigError(f"progressive.max_batch_size ({progressive.max_batch_size}) is below train.batch_size "
                              f"({train.batch_size}), the last stage's batch: raise it or set it to null.")
    for key in _PAIR_KEYS:
        value = getattr(config.progressive, key)
        if isinstance(value, list) and key != "image_size" and key != "survival_prob" and value[0] > value[1]:
            raise ConfigError(
                f"progressive.{key} goes from {value[0]} down to {value[1]}; regularization grows with the "
                "image size (Algorithm 1): give [min, max]."
            )
    return config


def validate_config(config):
    """Re-checks every key of a (possibly edited) Config; returns it with values converted."""
    for section in SECTION_TYPES:
        obj = getattr(config, section)
        for key in _fields(section):
            setattr(obj, key, _check_value(section, key, getattr(obj, key)))
    return _check_consistency(config)


# ------------------------------------------------------------------------------------------------
# Loading: files, bases, overrides.
# ------------------------------------------------------------------------------------------------


def list_recipes(directory=RECIPES_DIR):
    """Names of the recipes in `directory` (default: RECIPES_DIR, the recipes shipped with the package)."""
    if not os.path.isdir(directory):
        return []
    return sorted(f[: -len(".yaml")] for f in os.listdir(directory) if f.endswith(".yaml"))


def _resolve_path(name, relative_to=None):
    """A path, or a recipe name ('imagenet_s' or 'imagenet_s.yaml') in `relative_to` or hparams/."""
    name = os.fspath(name)
    candidates = []
    if os.path.isabs(name):
        candidates.append(name)
    else:
        for folder in ([relative_to] if relative_to else []) + [os.getcwd(), RECIPES_DIR]:
            candidates.append(os.path.join(folder, name))
            if not name.endswith((".yaml", ".yml")):
                candidates.append(os.path.join(folder, name + ".yaml"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    recipes = list_recipes()
    nearest = _nearest(os.path.basename(name).replace(".yaml", ""), recipes)
    hint = f" Did you mean '{nearest}'?" if nearest else ""
    raise ConfigError(f"Recipe {name!r} not found (looked in {sorted(set(os.path.dirname(c) for c in candidates))})."
                      f"{hint} Recipes in {RECIPES_DIR}: {', '.join(recipes) or 'none'}.")


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, train:, ...), got {type(data).__name__}.")
    return data


def _load_file(path, chain=()):
    """Reads a recipe and its bases (recursively); returns ([(section_values, origin)], files)."""
    if path in chain:
        raise ConfigError(f"Recipe bases form a cycle: {' -> '.join(list(chain) + [path])}.")
    data = _read_yaml(path)
    layers, files = [], []
    base = data.pop(BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"'{BASE_KEY}' in {path} must be a recipe name or a path, got {base!r}.")
        base_layers, base_files = _load_file(_resolve_path(base, os.path.dirname(path)), chain + (path,))
        layers += base_layers
        files += base_files
    for section, values in data.items():
        if section not in SECTION_TYPES:
            raise _unknown_section_error(str(section), path)
        layers.append((section, _check_section(section, values or {}, path), path))
    return layers, files + [path]


def _split_overrides(overrides):
    """A list of "a.b=c" strings, or one string with comma-separated pairs (commas inside [] kept)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        overrides = [overrides]
    pairs = []
    for item in overrides:
        depth, current, pieces = 0, "", []
        for char in str(item):
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            if char == "," and depth == 0:
                pieces.append(current)
                current = ""
            else:
                current += char
        pieces.append(current)
        pieces = [p.strip() for p in pieces if p.strip()]
        for previous, piece in zip(pieces, pieces[1:]):
            if "=" not in piece and "=" in previous:  # "a.b=1,2": a list value without its brackets
                key, _, value = previous.partition("=")
                raise ConfigError(
                    f"Override {str(item)!r}: {piece!r} after the comma is not section.key=value. A list value "
                    f"needs brackets: {key.strip()}=[{value.strip()},{piece}]; separate overrides: "
                    f"{key.strip()}=..., other.key=...")
        pairs += pieces
    return pairs


def parse_override(text):
    """'train.lr_base=0.1' -> ('train', 'lr_base', 0.1, extra_path). Values use YAML scalar typing."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like section.key=value (e.g. train.batch_size=256).")
    path, _, raw = text.partition("=")
    parts = [p.strip() for p in path.strip().split(".")]
    if len(parts) < 2 or not all(parts):
        section = parts[0] if parts else ""
        if section and section not in SECTION_TYPES:
            raise _unknown_section_error(section, f"override {text!r}")
        raise ConfigError(f"Override {text!r} must name section.key (e.g. train.batch_size=256).")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts[0], parts[1], value, parts[2:]


def load_config(path_or_name=None, overrides=None):
    """Loads a recipe: defaults <- base files <- the file <- overrides; validated.

    Args:
      path_or_name: a YAML path, a recipe name in hparams/ ("imagenet_s"), a dict of sections, or None
        (the defaults: the paper's ImageNet recipe for EfficientNetV2-S).
      overrides: "section.key=value" strings (a list, or one string with comma-separated pairs); values
        are read as YAML scalars ("0.1" -> float, "true" -> bool, "null" -> None, "[128, 300]" -> list).
        Keys of mapping-valued entries nest: "data.source_options.image_size=64".
    Raises:
      ConfigError: unknown section/key (naming the nearest valid one), wrong type, out-of-range value,
        inconsistent keys, missing file.
    """
    values = {section: {} for section in SECTION_TYPES}
    sources = []
    if isinstance(path_or_name, dict):
        data = dict(path_or_name)
        base = data.pop(BASE_KEY, None)
        if base is not None:
            layers, files = _load_file(_resolve_path(base))
            for section, section_values, _ in layers:
                values[section].update(section_values)
            sources += files
        for section, section_values in data.items():
            if section not in SECTION_TYPES:
                raise _unknown_section_error(str(section), "dict")
            values[section].update(_check_section(section, section_values or {}, "dict"))
        sources.append("<dict>")
    elif path_or_name is not None:
        layers, files = _load_file(_resolve_path(path_or_name))
        for section, section_values, _ in layers:
            values[section].update(section_values)
        sources += files

    for text in _split_overrides(overrides):
        section, key, value, extra = parse_override(text)
        origin = f"override {text!r}"
        if section not in SECTION_TYPES:
            raise _unknown_section_error(section, origin)
        if key not in _fields(section):
            raise _unknown_key_error(section, key, origin)
        if extra:
            if _hints(section)[key] is not dict:
                raise ConfigError(f"{section}.{key} is not a mapping; {origin} cannot set "
                                  f"{'.'.join([section, key] + extra)}.")
            current = dict(values[section].get(key, getattr(SECTION_TYPES[section](), key)))
            target = current
            for part in extra[:-1]:
                target = target.setdefault(part, {})
            target[extra[-1]] = value
            value = current
        values[section][key] = _check_value(section, key, value, origin)
        sources.append(origin)

    config = Config(**{section: SECTION_TYPES[section](**values[section]) for section in SECTION_TYPES},
                    sources=tuple(sources))
    return _check_consistency(config)


class _RecipeDumper(yaml.SafeDumper):
    """Sections and keys in block style, [min, max] pairs in flow style."""


_RecipeDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def to_yaml(config, path=None):
    """The resolved recipe as YAML text; with `path`, also written there atomically (`files.atomic_write_text`)."""
    header = "# Resolved EfficientNetV2 recipe"
    if config.sources:
        header += " from: " + ", ".join(os.path.basename(s) if os.path.isfile(s) else s for s in config.sources)
    text = header + "\n" + yaml.dump(config.to_dict(), Dumper=_RecipeDumper, sort_keys=False, width=100)
    if path is not None:
        atomic_write_text(path, text)
    return text


# ------------------------------------------------------------------------------------------------
# Documentation. (Values derived from a recipe, e.g. image sizes: training/recipe.py.)
# ------------------------------------------------------------------------------------------------


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


__all__ = [
    "Config",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "ProgressiveConfig",
    "EvalConfig",
    "RuntimeConfig",
    "ConfigError",
    "load_config",
    "validate_config",
    "parse_override",
    "to_yaml",
    "list_recipes",
    "describe",
    "RECIPES_DIR",
]
