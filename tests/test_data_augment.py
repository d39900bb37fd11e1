"""RandAugment ops and magnitude scale, preprocessing, mixup/CutMix (small images, fixed seeds)."""

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_keras.data import RANDAUGMENT_OPS, RandAugment, build_dataset, mix_batch
from efficientnetv2_keras.data import preprocess_for_eval, preprocess_for_finetune, preprocess_for_train
from efficientnetv2_keras.data.mixing import cutmix, mixup, sample_beta

SEED = tf.constant([11, 22])
ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")


def textured_image(size=24, seed=0, low=30, high=220):
    """A smooth colour ramp plus noise, in [low, high] so AutoContrast has room to act."""
    rng = np.random.RandomState(seed)
    ramp = np.linspace(0, 1, size)
    base = ramp[:, None, None] * rng.uniform(0, 1, 3) + ramp[None, :, None] * rng.uniform(0, 1, 3)
    image = low + (high - low) * np.clip(base / 2 + rng.normal(0, 0.1, (size, size, 3)), 0, 1)
    return tf.constant(np.round(image).astype(np.uint8))


def mean_abs_change(a, b):
    return float(tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))))


@functools.lru_cache(maxsize=None)
def natural_images(size, count, seed=0):
    """Varied natural-looking uint8 images: a smooth two-colour gradient, a few flat-coloured shapes,
    pixel noise, and a random exposure (dark to bright, low to high contrast)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(count):
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / np.ptp(t)
        image = (1 - t)[..., None] * rng.uniform(0, 1, 3) + t[..., None] * rng.uniform(0, 1, 3)
        for _ in range(rng.randint(2, 7)):
            (cy, cx), (ry, rx) = rng.uniform(0, 1, 2), rng.uniform(0.05, 0.3, 2)
            if rng.rand() < 0.5:
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            else:
                mask = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
            image[mask] = rng.uniform(0, 1, 3)
        image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
        low = rng.uniform(0, 100)
        high = rng.uniform(low + 80, 255)
        images.append(np.round(low + (high - low) * image).astype(np.uint8))
    return np.stack(images)


def flat(images):
    """Per image: True where it is one colour (every channel's standard deviation below 1)."""
    images = np.asarray(images, np.float32)
    return np.all(images.reshape(len(images), -1, 3).std(axis=1) < 1.0, axis=1)


def augment_all(fn, images):
    """Runs `fn(image, seed)` over a stack of images in tf.data (one traced graph, as in training)."""
    seeds = np.stack([np.arange(len(images)), np.full(len(images), 7)], axis=1).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((images, seeds)).map(fn, num_parallel_calls=2)
    return next(iter(dataset.batch(len(images)))).numpy()


@pytest.mark.parametrize("name", RANDAUGMENT_OPS)
def test_every_op_changes_the_image_and_keeps_uint8_shape(name):
    # The paper's first-stage magnitude 5, except for the enhance ops: the identity at 5 (factor 1.0).
    image = textured_image()
    out = RandAugment(15 if name in ENHANCE_OPS else 5).apply_op(image, name, SEED)
    assert out.dtype == tf.uint8 and out.shape == image.shape
    assert mean_abs_change(out, image) > 0.5, name


def test_magnitude_zero_skips_randaugment_entirely():
    image = textured_image()
    assert RandAugment(0).is_identity and RandAugment(10, num_layers=0).is_identity
    np.testing.assert_array_equal(RandAugment(0)(image, SEED).numpy(), image.numpy())


def test_larger_magnitudes_change_images_more_measured():
    # Same seeds for every magnitude: the same ops are picked, only their strength differs. (Per op the
    # released mapping is not monotone: Posterize and Solarize weaken from 5 to 15; on average it is.)
    images = np.stack([textured_image(32, seed=s).numpy() for s in range(48)])
    change = {}
    for magnitude in (0, 5, 15):
        change[magnitude] = mean_abs_change(augment_all(RandAugment(magnitude), images), images)
    assert change[0] == 0.0
    assert change[0] < change[5] < change[15], change


def test_magnitude_mapping_is_the_released_codes_within_the_documented_caps():
    # Released `autoaugment.py` level_to_arg at level 10 (224 px, the size its pixel constants were set at).
    at10 = RandAugment(10).parameters(image_side=224)
    assert at10 == pytest.approx(dict(
        Rotate=30, Posterize=4, Solarize=256, SolarizeAdd=110, Color=1.9, Contrast=1.9, Brightness=1.9,
        Sharpness=1.9, ShearX=0.3, ShearY=0.3, TranslateX=100, TranslateY=100, Cutout=40))  # fmt: skip
    # Magnitude 5 (the paper's first stage) at 300 px: released values, absolute pixels from 224 px up.
    at5 = RandAugment(5).parameters(image_side=300)
    assert at5 == pytest.approx(dict(
        Rotate=15, Posterize=2, Solarize=128, SolarizeAdd=55, Color=1.0, Contrast=1.0, Brightness=1.0,
        Sharpness=1.0, ShearX=0.15, ShearY=0.15, TranslateX=50, TranslateY=50, Cutout=20))  # fmt: skip
    # Magnitude 20 (M's last stage) at 380 px: Posterize keeps all 8 bits (released int(4 l) = 8),
    # enhance factors extrapolate (0.1 + 1.8 l) except Brightness, SolarizeAdd and Translate hit their caps.
    at20 = RandAugment(20).parameters(image_side=380)
    assert at20["Posterize"] == 8 and at20["Solarize"] == 256 and at20["Rotate"] == 60
    assert at20["Contrast"] == pytest.approx(3.7) and at20["Color"] == pytest.approx(3.7)
    assert at20["Brightness"] == pytest.approx(1.9) and at20["SolarizeAdd"] == 128
    assert at20["TranslateX"] == pytest.approx(0.45 * 380) and at20["Cutout"] == 80
    # Small progressive stages: pixel constants scale with the side below 224 px, capped.
    at10_small = RandAugment(10).parameters(image_side=128)
    assert at10_small["TranslateX"] == pytest.approx(100 * 128 / 224) and at10_small["Cutout"] == 22
    at30_small = RandAugment(30).parameters(image_side=128)
    assert at30_small["TranslateX"] == pytest.approx(0.45 * 128) and at30_small["Cutout"] == 32
    # Low magnitudes (below the paper's 5): Posterize keeps at least 1 bit (released int(4 l) = 0: black).
    assert RandAugment(1).parameters()["Posterize"] == 1 and RandAugment(1).parameters()["Color"] == pytest.approx(0.28)
    # reference_size=None: the released absolute pixels at every size (still capped).
    assert RandAugment(5, reference_size=None).parameters(image_side=128)["TranslateX"] == 50
    assert RandAugment(30, reference_size=None).parameters(image_side=128)["TranslateX"] == pytest.approx(0.45 * 128)


# ------------------------------------------------------------------------------------------------
# No erased images: every op informative at every magnitude the recipes use, at every stage size.
# ------------------------------------------------------------------------------------------------

SWEEP_MAGNITUDES = (5, 10, 15, 20, 25, 30)  # paper Table 6 uses 5-25; the RandAugment paper's range ends at 30
STAGE_SIZES = (128, 300, 380)  # first progressive stage; last stage of S; last stage of M and L (Table 6)


def test_randaugment_does_not_erase_images_at_any_magnitude_and_stage_size():
    # The issue this pins: with factor max(0, 1 +- 0.09 m) and translations growing with the side,
    # 6-42 % of these images came out as one flat colour at magnitudes 15-30 (N = 2).
    count = 48

    def flat_flags(image, seed):  # one graph per size, only the flags leave it
        outs = tf.cast(tf.stack([RandAugment(m)(image, seed) for m in SWEEP_MAGNITUDES]), tf.float32)
        return tf.reduce_all(tf.math.reduce_std(outs, axis=[1, 2]) < 1.0, axis=-1)

    rates = {}
    for size in STAGE_SIZES:
        images = natural_images(size, count)
        assert not flat(images).any()
        for magnitude, rate in zip(SWEEP_MAGNITUDES, augment_all(flat_flags, images).mean(axis=0)):
            rates[magnitude, size] = float(rate)
    assert max(rates.values()) <= 1 / count, rates  # at most one image in 48 per cell
    assert np.mean(list(rates.values())) <= 0.005, rates


@pytest.mark.parametrize("size", STAGE_SIZES)
def test_every_op_keeps_the_image_informative_at_every_magnitude(size):
    # 1-2: the digits demo's early stages; 5-30: the paper's scale. Posterize below 5 keeps 1 bit (the
    # released code: 0 bits = black below 2.5), which blacks out an image darker than 128 everywhere;
    # no recipe uses it there.
    layers = {}  # (op, parameter at this size) -> a layer giving it: capped magnitudes are run once
    for magnitude in (1, 2) + SWEEP_MAGNITUDES:
        layer = RandAugment(magnitude)
        parameters = layer.parameters(size)
        for op in RANDAUGMENT_OPS:
            if not (op == "Posterize" and magnitude < 5):
                layers.setdefault((op, parameters.get(op)), layer)
    cases = sorted(layers, key=str)

    def flat_flags(image, seed):  # only the flags leave the graph
        outs = tf.cast(tf.stack([layers[case].apply_op(image, case[0], seed) for case in cases]), tf.float32)
        return tf.reduce_all(tf.math.reduce_std(outs, axis=[1, 2]) < 1.0, axis=-1)

    flags = augment_all(flat_flags, natural_images(size, 6, seed=1))
    erased = [(op, parameter, layers[op, parameter].magnitude) for op, parameter in cases
              if flags[:, cases.index((op, parameter))].any()]  # fmt: skip
    assert not erased, erased


@pytest.mark.parametrize("size", STAGE_SIZES)
def test_translate_never_moves_the_content_out_of_the_frame(size):
    for magnitude in SWEEP_MAGNITUDES:
        for reference_size in (224, None):
            shift = RandAugment(magnitude, reference_size=reference_size).parameters(size)["TranslateX"]
            assert shift <= 0.45 * size, (magnitude, reference_size, shift)
    image = natural_images(size, 1)[0]
    layer = RandAugment(30, ops=("TranslateX", "TranslateY"))
    for seed in ([1, 2], [3, 4], [5, 6], [7, 8]):
        for name, axis in (("TranslateX", 1), ("TranslateY", 0)):
            out = layer.apply_op(image, name, tf.constant(seed)).numpy()
            filled = np.all(out == 128, axis=(1 - axis, 2))  # whole rows / columns of fill
            kept = size - filled.sum()
            assert kept >= 0.55 * size - 1, (name, seed, kept)
            # The kept band is the original content, moved.
            band = np.take(out, np.flatnonzero(~filled), axis=axis)
            assert any(np.array_equal(band, np.take(image, np.arange(kept) + start, axis=axis))
                       for start in (0, size - kept))  # fmt: skip


def test_importing_the_package_creates_no_tensors_so_multiworker_strategy_still_starts():
    # A tensor created at import initialises the TF context; MultiWorkerMirroredStrategy then fails
    # with "Collective ops must be configured at program startup" (it was `tf.range` in randaugment).
    script = textwrap.dedent(
        """
        import json, os, socket
        sock = socket.socket()
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
        sock.close()
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}})
        import efficientnetv2_keras.data
        for name in ("progressive", "training", "export", "hparams"):  # the rest of the package
            getattr(efficientnetv2_keras, name)
        import tensorflow as tf
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        print("replicas", strategy.num_replicas_in_sync)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("replicas 1")


@pytest.mark.parametrize("bad", [-1, 30.5, float("nan"), "10", None, True])
def test_magnitude_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="magnitude"):
        RandAugment(bad)


def test_unknown_op_and_bad_layers_are_errors():
    with pytest.raises(ValueError, match="Unknown RandAugment op"):
        RandAugment(5, ops=("Rotate", "Blur"))
    with pytest.raises(ValueError, match="num_layers"):
        RandAugment(5, num_layers=-1)


def test_one_layer_serves_several_image_sizes():
    layer = RandAugment(10)
    for size in (24, 32, 24):  # the traced layer needs the static side (pixel parameters)
        assert layer(textured_image(size), SEED).shape == (size, size, 3)


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
    weights = sample_beta([20000], 0.067, SEED).numpy()  # V2-M stage 2, released main.py: linspace(0, 0.2, 4)[1]
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
