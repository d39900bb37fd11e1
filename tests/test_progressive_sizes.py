"""Stage sizes the network rewards: small middle stages rounded to multiples of 16 (pure functions)."""

import pytest

from efficientnetv2_keras.progressive import progressive_schedule
from efficientnetv2_keras.progressive.schedule import round_stage_sizes


def _sizes(schedule):
    return [stage.image_size for stage in schedule.stages]


def test_middle_stages_below_128_px_round_to_multiples_of_16_ties_down():
    # 40 px ends at 2x2 after stride 32 like 48 px and costs nearly as much: 40 -> 32 (the cheaper one).
    assert round_stage_sizes([32, 40, 48]) == [32, 32, 48]
    assert round_stage_sizes([32, 40, 48, 56, 64]) == [32, 32, 48, 48, 64]
    assert round_stage_sizes([32, 41, 48]) == [32, 48, 48]  # the nearest multiple, up when nearer
    # The first and the last stage keep their sizes; the rounded ones stay between them.
    assert round_stage_sizes([33, 40, 47]) == [33, 33, 47]
    assert round_stage_sizes([40, 56, 72]) == [40, 48, 72]
    # Sizes >= 128 px are the paper's and the released code's: kept.
    assert round_stage_sizes([128, 185, 242, 300]) == [128, 185, 242, 300]
    assert round_stage_sizes([96, 120, 136, 160]) == [96, 112, 136, 160]
    assert round_stage_sizes([32, 40, 48], multiple=None) == [32, 40, 48]
    assert round_stage_sizes([32, 40, 48], multiple=8) == [32, 40, 48]


def test_schedule_rounds_small_stages_by_default_and_says_so():
    schedule = progressive_schedule("b0", "paper", total_epochs=24, num_stages=3, image_size=(32, 48),
                                    dropout_rate=(0.1, 0.2))
    assert _sizes(schedule) == [32, 32, 48] and schedule.size_multiple == 16
    # Regularization still grows with the stage index (Algorithm 1); sizes may repeat.
    assert [stage.dropout_rate for stage in schedule.stages] == pytest.approx([0.1, 0.15, 0.2])
    assert schedule.rounded_sizes() == [(1, 40, 32)]
    assert ("Sizes below 128 px rounded to multiples of 16 (stage 2: 40 -> 32): a stride-32 network pads 40 px "
            "up to the cost of 48 px.") in schedule.table()
    # None keeps Algorithm 1's sizes, and the table says nothing about rounding.
    plain = progressive_schedule("b0", "paper", total_epochs=24, num_stages=3, image_size=(32, 48), size_multiple=None)
    assert _sizes(plain) == [32, 40, 48] and "rounded" not in plain.table()


def test_batch_scaling_follows_the_rounded_size():
    schedule = progressive_schedule("b0", "paper", total_epochs=24, num_stages=3, image_size=(32, 48),
                                    batch_size=32, batch_scaling=True)
    # Stage 2 trains at 32 px, so at the 32 px batch: 32 * (48 / 32)^2 = 72.
    assert [stage.batch_size for stage in schedule.stages] == [72, 72, 32]


@pytest.mark.parametrize("preset", ["paper", "official"])
@pytest.mark.parametrize("variant", ["b0", "b1", "b2", "b3", "s", "m", "l", "xl"])
def test_presets_keep_the_paper_and_released_sizes(variant, preset):
    # Every preset size is >= 128 px, where the waste against a multiple of 16 is a few percent.
    rounded = progressive_schedule(variant, preset, total_epochs=350)
    plain = progressive_schedule(variant, preset, total_epochs=350, size_multiple=None)
    assert _sizes(rounded) == _sizes(plain) and "rounded" not in rounded.table()


def test_bad_size_multiple_is_a_clear_error():
    for bad in (0, -16, 16.0, "16", True):
        with pytest.raises(ValueError, match="size_multiple must be a positive integer"):
            progressive_schedule("b0", "paper", total_epochs=6, num_stages=3, image_size=(32, 48), size_multiple=bad)


def test_recipe_key_carries_the_rule():
    from efficientnetv2_keras.hparams import ConfigError, load_config
    from efficientnetv2_keras.training.recipe import schedule_from_config

    assert load_config("fashion_mnist_b0").progressive.size_multiple == 16  # the schema's default
    assert load_config("digits_demo").progressive.size_multiple is None  # the demo keeps 40 px (its comments)
    config = load_config("digits_demo", overrides=["progressive.size_multiple=16"])
    assert _sizes(schedule_from_config(config, config.train.epochs)) == [32, 32, 48]
    off = load_config("digits_demo", overrides=["progressive.size_multiple=null"])
    assert _sizes(schedule_from_config(off, off.train.epochs)) == [32, 40, 48]
    with pytest.raises(ConfigError, match="progressive.size_multiple"):
        load_config("digits_demo", overrides=["progressive.size_multiple=0"])
