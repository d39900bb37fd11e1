"""RandAugment ops and magnitude scale, preprocessing, mixup/CutMix (small images, fixed seeds)."""

import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_keras.data import RANDAUGMENT_OPS, RandAugment, build_dataset, mix_batch
from efficientnetv2_keras.data import preprocess_for_eval, preprocess_for_finetune, preprocess_for_train
from efficientnetv2_keras.data.mixing import cutmix, mixup, sample_beta
from efficientnetv2_keras.data.randaugment import MAGNITUDE_FREE_OPS

SEED = tf.constant([11, 22])


def textured_image(size=24, seed=0, low=30, high=220):
    """A smooth colour ramp plus noise, in [low, high] so AutoContrast has room to act."""
    rng = np.random.RandomState(seed)
    ramp = np.linspace(0, 1, size)
    base = ramp[:, None, None] * rng.uniform(0, 1, 3) + ramp[None, :, None] * rng.uniform(0, 1, 3)
    image = low + (high - low) * np.clip(base / 2 + rng.normal(0, 0.1, (size, size, 3)), 0, 1)
    return tf.constant(np.round(image).astype(np.uint8))


def mean_abs_change(a, b):
    return float(tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))))


@pytest.mark.parametrize("name", [op for op in RANDAUGMENT_OPS if op not in MAGNITUDE_FREE_OPS])
def test_every_parameterised_op_is_exact_identity_at_magnitude_zero(name):
    image = textured_image()
    for seed in ([1, 2], [3, 4], [5, 6]):  # both random signs, several cutout positions
        out = RandAugment(0).apply_op(image, name, tf.constant(seed))
        np.testing.assert_array_equal(out.numpy(), image.numpy(), err_msg=name)


@pytest.mark.parametrize("name", RANDAUGMENT_OPS)
def test_every_op_changes_the_image_at_magnitude_10_and_keeps_uint8_shape(name):
    image = textured_image()
    out = RandAugment(10).apply_op(image, name, SEED)
    assert out.dtype == tf.uint8 and out.shape == image.shape
    assert mean_abs_change(out, image) > 0.5, name


def test_magnitude_zero_skips_randaugment_entirely():
    image = textured_image()
    assert RandAugment(0).is_identity and RandAugment(10, num_layers=0).is_identity
    np.testing.assert_array_equal(RandAugment(0)(image, SEED).numpy(), image.numpy())


def test_larger_magnitudes_change_images_more_measured():
    # Same seeds for every magnitude: the same ops are picked, only their strength differs.
    images = [textured_image(32, seed=s) for s in range(48)]
    seeds = [tf.constant([s, 7]) for s in range(48)]
    change = {}
    for magnitude in (0, 5, 15):
        layer = RandAugment(magnitude)
        change[magnitude] = np.mean([mean_abs_change(layer(im, sd), im) for im, sd in zip(images, seeds)])
    assert change[0] == 0.0
    assert change[0] < change[5] < change[15], change


def test_magnitude_mapping_matches_the_documented_table():
    at10 = RandAugment(10).parameters(image_side=224)
    assert at10["Rotate"] == 30 and at10["Posterize"] == 4 and at10["Solarize"] == 0
    assert at10["SolarizeAdd"] == 110 and at10["ShearX"] == pytest.approx(0.3)
    assert at10["TranslateX"] == pytest.approx(100) and at10["Cutout"] == pytest.approx(40)
    assert at10["Color"] == pytest.approx(0.9)  # factor 1 +- 0.9 = 0.1 or 1.9, the official extremes
    at0 = RandAugment(0).parameters()
    assert at0["Posterize"] == 8 and at0["Solarize"] == 256 and at0["Rotate"] == 0
    at25 = RandAugment(25).parameters(image_side=128)
    assert at25["Posterize"] == 1 and at25["Solarize"] == 0  # clipped where meaningless
    assert at25["TranslateX"] <= 128 and at25["Cutout"] <= 64
    assert RandAugment(5, reference_size=None).parameters(image_side=300)["TranslateX"] == 50  # official px


@pytest.mark.parametrize("bad", [-1, 30.5, float("nan"), "10", None, True])
def test_magnitude_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(bad)


def test_unknown_op_and_bad_layers_are_errors():
    with pytest.raises(ValueError, match="Unknown RandAugment op"):
        RandAugment(5, ops=("Rotate", "Blur"))
    with pytest.raises(ValueError, match="num_layers"):
        RandAugment(5, num_layers=-1)


def test_randaugment_is_reproducible_from_the_seed():
    image = textured_image()
    layer = RandAugment(12)
    np.testing.assert_array_equal(layer(image, SEED).numpy(), layer(image, SEED).numpy())


def test_train_preprocessing_outputs_float_0_255_at_the_stage_size():
    image = textured_image(40)
    for size in (16, 24):
        out = preprocess_for_train(image, size, SEED, randaugment=RandAugment(10))
        assert out.shape == (size, size, 3) and out.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0


def test_eval_center_crops_below_320_and_keeps_the_whole_image_from_320():
    # A white frame 15 % wide around gray: the official crop (size / (size + 32)) cuts it away at 64 px.
    image = np.full((100, 100, 3), 128, np.uint8)
    image[:15], image[-15:], image[:, :15], image[:, -15:] = 255, 255, 255, 255
    image = tf.constant(image)
    cropped = preprocess_for_eval(image, 64)  # keeps the central 64/96 = 67 %: frame gone
    assert float(tf.reduce_max(cropped)) <= 129.0
    whole = preprocess_for_eval(image, 320)
    assert float(whole[0, 0, 0]) == 255.0
    no_crop = preprocess_for_eval(image, 64, crop_padding=0)
    assert float(no_crop[0, 0, 0]) == 255.0


def test_finetune_preprocessing_resizes_and_cuts_out_a_quarter_pad_square():
    image = tf.fill([20, 30, 3], tf.constant(100, tf.uint8))
    evaluated = preprocess_for_finetune(image, 16, training=False)
    assert evaluated.shape == (16, 16, 3) and float(tf.reduce_max(tf.abs(evaluated - 100.0))) == 0.0
    trained = preprocess_for_finetune(image, 16, SEED, training=True, flip=False)
    changed = float(tf.reduce_mean(tf.cast(tf.reduce_any(trained != 100.0, axis=-1), tf.float32)))
    assert 0.0 < changed <= 0.25 + 1e-6  # a square of side size/2, clipped at the borders


# ------------------------------------------------------------------------------------------------
# Mixup / CutMix.
# ------------------------------------------------------------------------------------------------


def constant_batch(batch=8, size=16, classes=5):
    """Example i is filled with value 10 * i, so every output pixel tells where it came from."""
    images = tf.constant(np.arange(batch, dtype=np.float32)[:, None, None, None] * 10 * np.ones((1, size, size, 3)))
    labels = tf.one_hot(np.arange(batch) % classes, classes)
    return tf.cast(images, tf.float32), labels


def test_mixup_labels_sum_to_one_and_match_the_image_weights():
    images, labels = constant_batch()
    mixed_images, mixed_labels = mixup(images, labels, 0.4, SEED)
    np.testing.assert_allclose(tf.reduce_sum(mixed_labels, 1).numpy(), 1.0, atol=1e-6)
    values = images[:, 0, 0, 0].numpy()
    reverse = values[::-1]
    weight = mixed_labels.numpy()[np.arange(8), np.arange(8) % 5]
    # The original dominates (official max(lambda, 1 - lambda)), and pixels use the same weight.
    same_class = (np.arange(8) % 5) == (np.arange(8)[::-1] % 5)
    expected = mixed_images[:, 0, 0, 0].numpy()
    for i in np.flatnonzero(~same_class):
        assert weight[i] >= 0.5
        assert expected[i] == pytest.approx(weight[i] * values[i] + (1 - weight[i]) * reverse[i], abs=1e-3)


def test_cutmix_label_weight_is_each_examples_pasted_area():
    images, labels = constant_batch(batch=8, size=20, classes=8)
    mixed_images, mixed_labels = cutmix(images, labels, 1.0, SEED)
    np.testing.assert_allclose(tf.reduce_sum(mixed_labels, 1).numpy(), 1.0, atol=1e-6)
    for i in range(8):
        pixels = mixed_images[i, :, :, 0].numpy()
        pasted = np.mean(pixels == 10.0 * (7 - i))
        assert set(np.unique(pixels)) <= {10.0 * i, 10.0 * (7 - i)}
        assert mixed_labels[i, 7 - i].numpy() == pytest.approx(pasted, abs=1e-6)
        assert mixed_labels[i, i].numpy() == pytest.approx(1.0 - pasted, abs=1e-6)


def test_both_alphas_split_the_batch_into_mixup_and_cutmix_halves():
    images, labels = constant_batch(batch=8, size=12, classes=8)
    mixed_images, mixed_labels = mix_batch(images, labels, 0.5, 0.5, SEED)
    np.testing.assert_allclose(tf.reduce_sum(mixed_labels, 1).numpy(), 1.0, atol=1e-6)
    first = mixed_images[:4, :, :, 0].numpy()
    second = mixed_images[4:, :, :, 0].numpy()
    # Mixup half: constant images mixed within the first half (values from examples 0..3 only).
    assert np.all(first >= 0.0) and np.all(first <= 30.0)
    assert all(len(np.unique(im)) == 1 for im in first)  # mixup keeps a constant image constant
    # CutMix half: each pixel is from example 4..7, never a blend.
    assert set(np.unique(second)) <= {40.0, 50.0, 60.0, 70.0}


def test_alpha_zero_is_off_and_negative_alpha_is_an_error():
    images, labels = constant_batch()
    same_images, same_labels = mix_batch(images, labels, 0.0, 0.0, SEED)
    assert same_images is images and same_labels is labels
    with pytest.raises(ValueError, match=">= 0"):
        mix_batch(images, labels, -0.1, 0.0, SEED)


def test_mixing_rejects_sparse_labels():
    images, _ = constant_batch()
    with pytest.raises(ValueError, match="dense float labels"):
        mixup(images, tf.range(8), 0.2, SEED)


def test_small_alphas_of_early_stages_give_finite_weights():
    weights = sample_beta([20000], 0.067, SEED).numpy()  # stage 2 of V2-M (REFERENCE 3.6)
    assert np.all(np.isfinite(weights)) and weights.min() >= 0.0 and weights.max() <= 1.0


def test_pipeline_magnitude_zero_is_the_unaugmented_image_and_larger_magnitudes_change_more():
    # Full-image "crop" (area 1.0), no flip, same size as the source: the training pipeline without
    # RandAugment reproduces the plain evaluation images exactly; then measure RandAugment's change.
    common = dict(source="digits", split="test[:64]", image_size=32, batch_size=64, label_format="sparse")
    reference, _ = next(iter(build_dataset(**common, training=False, eval_crop_padding=0)))
    change = {}
    for magnitude in (0, 5, 15):
        images, _ = next(iter(build_dataset(**common, training=True, randaug_magnitude=magnitude, flip=False,
                                            crop_area_range=(1.0, 1.0), shuffle_buffer=0, seed=0)))  # fmt: skip
        change[magnitude] = mean_abs_change(images, reference)
    assert change[0] == 0.0
    assert change[0] < change[5] < change[15], change
