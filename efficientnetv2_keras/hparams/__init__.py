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

Modules: `schema` (the sections, their keys and defaults; `describe`), `checks` (types, ranges, choices
and the rules between keys), `loading` (files, bases, overrides, YAML). The choices and limits are
`efficientnetv2_keras.limits`'.
"""

from efficientnetv2_keras.hparams.checks import validate_config
from efficientnetv2_keras.hparams.loading import (
    RECIPES_DIR,
    list_recipes,
    load_config,
    parse_override,
    split_overrides,
    to_yaml,
)
from efficientnetv2_keras.hparams.schema import (  # noqa: F401  (the choices, as before: limits' tuples)
    ACTIVATIONS,
    AUGMENTS,
    LABEL_FORMATS,
    LOSSES,
    LR_SCALING_RULES,
    LR_SCHEDULES,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    RANDAUGMENT_OP_NAMES,
    SECTION_TYPES,
    STRATEGIES,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    ProgressiveConfig,
    RuntimeConfig,
    TrainConfig,
    describe,
)

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
    "split_overrides",
    "to_yaml",
    "list_recipes",
    "describe",
    "RECIPES_DIR",
]
