"""Recipes: schema defaults, every YAML file, inheritance, overrides and the errors people see."""

import dataclasses

import pytest

from efficientnetv2_keras import hparams
from efficientnetv2_keras.training import recipe
from efficientnetv2_keras.hparams import ConfigError, load_config, to_yaml

EXPECTED_RECIPES = {
    *(f"imagenet_{v}" for v in ("b0", "b1", "b2", "b3", "s", "m", "l")),
    *(f"imagenet21k_{v}" for v in ("s", "m", "l", "xl")),
    *(f"finetune_{d}" for d in ("imagenet", "cifar10", "cifar100", "flowers", "cars")),
    "digits_demo",
}


def test_all_issue_recipes_exist():
    assert EXPECTED_RECIPES <= set(hparams.list_recipes())


def test_defaults_are_the_paper_imagenet_recipe():
    config = load_config()
    train = config.train
    # §5.1: RMSProp decay 0.9 momentum 0.9; BN momentum 0.99; wd 1e-5; 350 epochs; batch 4096;
    # warmup to 0.256 then 0.97 every 2.4 epochs; EMA 0.9999; survival 0.8. Released hparams.py: eps 1e-3, LS 0.1.
    assert (train.optimizer, train.rmsprop_rho, train.momentum, train.optimizer_epsilon) == ("rmsprop", 0.9, 0.9, 1e-3)
    assert (train.epochs, train.batch_size, train.lr_base * train.batch_size / 256) == (350, 4096, 0.256)
    assert (train.lr_schedule, train.lr_warmup_epochs, train.lr_decay_factor, train.lr_decay_epochs) == (
        "exponential", 5.0, 0.97, 2.4)
    assert (train.weight_decay, train.ema_decay, train.label_smoothing) == (1e-5, 0.9999, 0.1)
    assert (config.model.survival_prob, config.model.bn_momentum) == (0.8, 0.99)
    assert (config.progressive.enabled, config.progressive.num_stages, config.progressive.preset) == (True, 4, "paper")


@pytest.mark.parametrize("name", sorted(EXPECTED_RECIPES))
def test_every_recipe_loads_and_round_trips(name, tmp_path):
    config = load_config(name)
    assert config.sources[-1].endswith(f"{name}.yaml")
    path = tmp_path / "resolved.yaml"
    to_yaml(config, path)
    assert load_config(str(path)) == config  # the written config reproduces the run
    assert hparams.validate_config(config) == config


def test_recipe_values_follow_the_paper():
    s21k = load_config("imagenet21k_s")
    assert (s21k.train.epochs, s21k.train.lr_base, s21k.train.lr_warmup_epochs, s21k.train.lr_schedule) == (
        60, 0.008, 1.0, "cosine")
    assert (s21k.data.label_format, s21k.train.loss, s21k.progressive.enabled) == (
        "multi_hot_normalized", "softmax", False)
    assert (s21k.model.survival_prob, s21k.data.randaug_magnitude, s21k.data.mixup_alpha) == (1.0, 0.0, 0.0)
    assert recipe.image_sizes(s21k) == (224, 224)
    assert load_config("imagenet21k_xl").model.name == "efficientnetv2-xl"

    cifar = load_config("finetune_cifar10")  # base: finetune_imagenet.yaml
    assert [s.rsplit("/", 1)[-1] for s in cifar.sources] == ["finetune_imagenet.yaml", "finetune_cifar10.yaml"]
    train = cifar.train
    assert (train.batch_size, train.lr_base * train.batch_size / 256, train.min_steps) == (512, 0.001, 10_000)
    assert (train.weight_decay, train.ema_decay, train.label_smoothing, train.lr_schedule) == (
        0.0, 0.9996, 0.1, "cosine")
    assert (cifar.model.dropout_rate, cifar.model.survival_prob, cifar.model.skip_head) == (1e-6, 0.8, True)
    assert (cifar.data.source, cifar.data.augment, cifar.model.init_checkpoint) == ("cifar10", "ft", "imagenet")
    assert recipe.image_sizes(cifar) == (384, 384)  # train size = eval size for finetuning
    assert load_config("finetune_flowers").data.train_split == "train+validation"

    for variant, stages in (("s", 4), ("b2", 4)):
        config = load_config(f"imagenet_{variant}")
        assert (config.train.epochs, config.train.batch_size, config.progressive.num_stages) == (350, 4096, stages)


def test_mistyped_key_names_the_nearest_valid_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'train\.lr_bsae'.*Did you mean 'train\.lr_base'"):
        load_config("imagenet_s", ["train.lr_bsae=0.1"])
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("base: imagenet_s\ntrain:\n  wieght_decay: 0.0\n")
    with pytest.raises(ConfigError, match=r"'train\.wieght_decay' \(in .*typo\.yaml\).*'train\.weight_decay'"):
        load_config(str(recipe))
    recipe.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"Unknown section 'trian'.*Did you mean 'train'"):
        load_config(str(recipe))
    # A key in the wrong section points to its section.
    with pytest.raises(ConfigError, match=r"did you mean 'model\.dropout_rate'"):
        load_config(None, ["train.dropout_rate=0.3"])
    with pytest.raises(ConfigError, match=r"did you mean 'train\.epochs'"):
        load_config(None, ["epochs=3"])


def test_wrong_types_and_ranges_are_clear_errors():
    cases = {
        "train.batch_size=abc": r"train\.batch_size must be an integer, got 'abc'",
        "train.batch_size=0": r"train\.batch_size must be >= 1",
        "model.survival_prob=0": r"model\.survival_prob must be in \(0, 1\]",
        "train.optimizer=rmsporp": r"must be one of .* Did you mean 'rmsprop'",
        "train.ema_decay=1.0": r"train\.ema_decay must be in \[0, 1\)",
        "progressive.image_size=[128, 300, 400]": r"\[min, max\] pair",
        "progressive.dropout_rate=[0.4, 0.1]": r"down to",
        "data.train_size=big": r"'eval'",
        "model.name=efficientnetv2-xxl": r"Unknown EfficientNetV2 variant",
        "train.ema_warmup=1": r"true/false",
        "train.loss=sigmoid": None,  # fine with the default label format ...
    }
    for override, pattern in cases.items():
        if pattern is None:
            load_config(None, [override])
            continue
        with pytest.raises(ConfigError, match=pattern):
            load_config(None, [override])
    # ... but not with normalized multi-hot targets.
    with pytest.raises(ConfigError, match="label_format=multi_hot"):
        load_config("imagenet21k_s", ["train.loss=sigmoid"])
    with pytest.raises(ConfigError, match="not found.*Did you mean 'imagenet_s'"):
        load_config("imagenet_ss")


def test_overrides_use_yaml_scalar_typing():
    config = load_config(
        "imagenet_s",
        [
            "train.batch_size=256",
            "train.weight_decay=1e-5",  # YAML 1.1 reads this as a string; the schema makes it a float
            "train.ema_warmup=false",
            "model.dropout_rate=null",
            "progressive.image_size=[128, 256],progressive.mixup_alpha=0.1",  # one comma-separated string
            "data.source_options.image_size=64",
            "runtime.strategy=cpu",
        ],
    )
    assert config.train.batch_size == 256 and isinstance(config.train.batch_size, int)
    assert config.train.weight_decay == 1e-5 and isinstance(config.train.weight_decay, float)
    assert config.train.ema_warmup is False and config.model.dropout_rate is None
    assert config.progressive.image_size == [128, 256] and config.progressive.mixup_alpha == 0.1
    assert recipe.progressive_overrides(config) == {"image_size": (128, 256), "mixup_alpha": 0.1}
    assert config.data.source_options == {"image_size": 64}
    assert config.runtime.strategy == "cpu"
    assert config.train.lr_base == 0.016
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.batch_size"])
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(None, ["train.batch_size.x=1"])


def test_base_inheritance_and_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain:\n  epochs: 7\n")
    (tmp_path / "b.yaml").write_text("base: imagenet_m\ntrain:\n  epochs: 5\n  batch_size: 64\n")
    config = load_config(str(tmp_path / "a.yaml"))
    assert (config.model.name, config.train.epochs, config.train.batch_size) == ("efficientnetv2-m", 7, 64)
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_image_sizes_and_describe():
    assert recipe.image_sizes(load_config("imagenet_s")) == (300, 384)
    b2 = load_config("finetune_imagenet", ["model.name=b2"])
    assert recipe.image_sizes(b2) == (256, 260)  # released finetune configs: 260 rounded down to 16
    table = hparams.describe()
    for section, cls in hparams.SECTION_TYPES.items():
        for field in dataclasses.fields(cls):
            assert f"`{section}.{field.name}`" in table


def test_pipeline_arguments_from_a_recipe():
    s21k = load_config("imagenet21k_s")
    assert recipe.static_augmentation(s21k) == {"randaug_magnitude": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}
    # Unset: the variant's official values (released effnetv2_configs.py: L RandAugment 20, mixup = cutmix 0.5).
    large = load_config("imagenet_l", ["data.cutmix_alpha=0"])
    assert recipe.static_augmentation(large) == {"randaug_magnitude": 20.0, "mixup_alpha": 0.5, "cutmix_alpha": 0.0}
    options = recipe.dataset_options(load_config("digits_demo", ["data.augment=none"]))
    assert options["augment"] is None and options["flip"] is False and options["crop_area_range"] == (0.5, 1.0)
    assert options["eval_crop_padding"] == 0 and options["seed"] == 0


def test_dict_recipes_and_their_base():
    config = load_config({"base": "imagenet_m", "train": {"epochs": 3}})
    assert (config.model.name, config.train.epochs) == ("efficientnetv2-m", 3)
    with pytest.raises(ConfigError, match="Did you mean 'train.epochs'"):
        load_config({"train": {"epoch": 3}})


def test_randaug_ops_are_validated_and_match_the_data_package():
    from efficientnetv2_keras.data import RANDAUGMENT_OPS
    from efficientnetv2_keras.hparams import RANDAUGMENT_OP_NAMES

    assert RANDAUGMENT_OPS is RANDAUGMENT_OP_NAMES  # one list: the data package draws from the schema's
    config = load_config("digits_demo", ["data.randaug_ops=[Rotate, ShearX]"])
    assert config.data.randaug_ops == ["Rotate", "ShearX"]
    with pytest.raises(ConfigError, match="'Rotat' is not one of.*Did you mean 'Rotate'"):
        load_config("digits_demo", ["data.randaug_ops=[Rotat]"])
