"""The model family: exact parameter counts, keras.applications parity, serialization, errors."""

import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest

import efficientnetv2_keras as ev2
from efficientnetv2_keras.models.weights import KERAS_APPLICATIONS

# Official totals (google/automl efficientnetv2/effnetv2_model_test.py), 1000 classes, BN statistics included.
OFFICIAL_PARAMS = {
    "b0": 7_200_312,
    "b1": 8_212_124,
    "b2": 10_178_374,
    "b3": 14_467_622,
    "s": 21_612_360,
    "m": 54_431_388,
    "l": 119_027_848,
    "xl": 208_896_832,
}
# The variants keras.applications has (all but XL).
IN_KERAS_APPLICATIONS = [v for v in OFFICIAL_PARAMS if ev2.get_model_spec(v).name in KERAS_APPLICATIONS]


def _trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(n=2, size=64, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("variant", list(OFFICIAL_PARAMS))
def test_parameter_counts_equal_the_official_totals(variant):
    model = ev2.build_model(variant)
    assert model.count_params() == OFFICIAL_PARAMS[variant]
    if variant == "s":
        assert _trainable_count(model) == 21_458_488


def test_constructors_and_names():
    model = ev2.EfficientNetV2B0(include_top=False, pooling="avg", input_shape=(32, 32, 3))
    assert model.name == "efficientnetv2-b0"
    assert model.output.shape == (None, 1280)
    assert ev2.get_model_spec("EfficientNetV2S") is ev2.get_model_spec("s")
    assert [ev2.get_model_spec(v).name for v in ("b0", "xl")] == ["efficientnetv2-b0", "efficientnetv2-xl"]


def test_paper_blocks_make_the_named_layers():
    """Fused-MBConv and MBConv (paper Figure 2) with their keras.applications layer names."""
    from efficientnetv2_keras.models.blocks import BlockSettings

    inputs = keras.Input((16, 16, 8))
    common = {"kernel": 3, "settings": BlockSettings()}
    x = ev2.fused_mbconv_block(inputs, in_filters=8, out_filters=8, stride=1, expand_ratio=1, se_ratio=0.0,
                               prefix="f_", **common)  # fmt: skip
    x = ev2.mbconv_block(x, in_filters=8, out_filters=16, stride=2, expand_ratio=4, se_ratio=0.25, prefix="m_", **common)
    model = keras.Model(inputs, x)
    names = [layer.name for layer in model.layers]
    assert model.output.shape == (None, 8, 8, 16)
    assert "f_add" in names and "m_add" not in names  # a residual only where the block keeps the shape
    assert "f_project_activation" in names and "m_project_activation" not in names  # MBConv's output is linear
    assert "f_expand_conv" not in names and model.get_layer("m_dwconv2").strides == (2, 2)
    # The squeeze width comes from the block input (8 * 0.25), the gates cover the expanded 32 channels.
    assert (model.get_layer("m_se_reduce").filters, model.get_layer("m_se_expand").filters) == (2, 32)


def test_same_shaped_layers_start_with_different_weights():
    model = ev2.EfficientNetV2B0()
    first, second = model.get_layer("block6b_expand_conv"), model.get_layer("block6c_expand_conv")
    assert first.kernel.shape == second.kernel.shape
    assert not np.allclose(first.kernel.numpy(), second.kernel.numpy())
    # The released code's fan-out normal: std sqrt(2 / (1 * 1 * out_channels)).
    assert first.kernel.numpy().std() == pytest.approx(np.sqrt(2.0 / first.kernel.shape[-1]), rel=0.05)


def test_the_classifier_starts_as_the_released_code_s_unless_asked_for_zeros():
    # The released code's dense init draws from +-1/sqrt(classes): with 10 classes the first logits spread
    # over several units and a model trained from scratch starts far above chance loss (ln 10).
    released = ev2.EfficientNetV2B0(weights=None, input_shape=(32, 32, 3), classes=10).get_layer("predictions")
    assert np.abs(released.kernel.numpy()).max() == pytest.approx(1 / np.sqrt(10), rel=0.05)
    zeros = ev2.EfficientNetV2B0(weights=None, input_shape=(32, 32, 3), classes=10, classifier_initializer="zeros")
    assert not zeros.get_layer("predictions").kernel.numpy().any()
    probabilities = zeros(_images(size=32))
    np.testing.assert_allclose(probabilities, 0.1, rtol=1e-6)  # chance: the loss starts at ln 10
    with pytest.raises(ValueError, match="classifier_initializer"):
        ev2.EfficientNetV2B0(weights=None, classifier_initializer="no such initializer")


def test_block_letters_continue_past_z():
    assert [family_letter for family_letter in map(ev2.models.builder.block_letters, (0, 25, 26, 27, 31))] == [
        "a", "z", "aa", "ab", "af"
    ]


def _parity(variant, size):
    reference = getattr(keras.applications, KERAS_APPLICATIONS[ev2.get_model_spec(variant).name])(
        weights=None, input_shape=(size, size, 3)
    )
    ours = ev2.build_model(variant, input_shape=(size, size, 3))
    ev2.load_weights_from_keras_applications(ours, reference)
    images = _images(2, size)
    expected = reference.predict(images, verbose=0)
    got = ours.predict(images, verbose=0)
    assert np.abs(expected - got).max() < 1e-4


@pytest.mark.parametrize("variant", ["b0", "s"])
def test_outputs_match_keras_applications(variant):
    _parity(variant, 64)


@pytest.mark.slow
@pytest.mark.parametrize("variant", IN_KERAS_APPLICATIONS)
def test_outputs_match_keras_applications_all_variants(variant):
    _parity(variant, 96)


@pytest.fixture(scope="module")
def b0_reference_files(tmp_path_factory):
    """keras.applications B0 (random weights) as the three file formats users have."""
    from keras.src.legacy.saving import legacy_h5_format

    directory = tmp_path_factory.mktemp("weights")
    reference = keras.applications.EfficientNetV2B0(weights=None, input_shape=(64, 64, 3))
    legacy = str(directory / "efficientnetv2-b0.h5")  # the layout keras.applications downloads
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    keras3 = str(directory / "reference.weights.h5")
    reference.save_weights(keras3)
    expected = reference.predict(_images(2, 64), verbose=0)
    return {"legacy": legacy, "keras3": keras3, "expected": expected}


@pytest.mark.parametrize("kind", ["legacy", "keras3"])
def test_load_keras_applications_weight_files(b0_reference_files, kind):
    model = ev2.EfficientNetV2B0(weights=b0_reference_files[kind], input_shape=(64, 64, 3))
    got = model.predict(_images(2, 64), verbose=0)
    assert np.abs(got - b0_reference_files["expected"]).max() < 1e-4


def test_imagenet_weights_come_through_the_keras_download(b0_reference_files, monkeypatch):
    # No download works here: Keras' downloader is pointed at a local file with the same layout.
    from keras.src.applications import efficientnet_v2

    requested = []

    def fake_get_file(fname, origin, **kwargs):
        requested.append(origin)
        return b0_reference_files["legacy"]

    monkeypatch.setattr(efficientnet_v2.file_utils, "get_file", fake_get_file)
    model = ev2.EfficientNetV2B0(weights="imagenet", input_shape=(64, 64, 3))
    assert requested and requested[0].endswith("efficientnetv2-b0.h5")
    got = model.predict(_images(2, 64), verbose=0)
    assert np.abs(got - b0_reference_files["expected"]).max() < 1e-4


def test_weights_errors_leave_the_model_unchanged(b0_reference_files, tmp_path):
    model = ev2.EfficientNetV2S(input_shape=(64, 64, 3))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ev2.WeightsMismatchError, match="efficientnetv2-b0"):
        ev2.load_weights_from_keras_applications(model, b0_reference_files["legacy"])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    with pytest.raises(ev2.WeightsMismatchError, match="1000 classes.*classes=10"):
        ev2.EfficientNetV2B0(weights=b0_reference_files["legacy"], classes=10)
    # Transfer learning: keep a fresh 10-class head, take everything else.
    model = ev2.EfficientNetV2B0(classes=10, input_shape=(64, 64, 3))
    ev2.load_weights_from_keras_applications(model, b0_reference_files["legacy"], skip_head=True)
    backbone = ev2.EfficientNetV2B0(weights=b0_reference_files["legacy"], include_top=False)
    np.testing.assert_array_equal(
        backbone.get_layer("top_conv").kernel.numpy(), model.get_layer("top_conv").kernel.numpy()
    )
    with pytest.raises(ValueError, match="imagenet21k.*not available"):
        ev2.EfficientNetV2S(weights="imagenet21k")
    with pytest.raises(FileNotFoundError):
        ev2.EfficientNetV2S(weights=str(tmp_path / "missing.h5"))


def test_own_weights_file_round_trip(tiny_spec, tmp_path):
    model = ev2.build_model(tiny_spec, classes=5)
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    restored = ev2.build_model(tiny_spec, classes=5, weights=path)
    images = _images(2, 32)
    np.testing.assert_allclose(model.predict(images, verbose=0), restored.predict(images, verbose=0))
    other = ev2.build_model(tiny_spec, classes=7)
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(ev2.WeightsMismatchError, match="skip_head=True"):
        ev2.load_weights(other, path, spec=tiny_spec)
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))
    # Transfer learning from our own file: everything but the 5-class head.
    ev2.load_weights(other, path, spec=tiny_spec, skip_head=True)
    np.testing.assert_array_equal(other.get_layer("top_conv").kernel.numpy(), model.get_layer("top_conv").kernel.numpy())
    np.testing.assert_array_equal(other.get_layer("predictions").kernel.numpy(), before[-2])


def test_keras_file_round_trip_without_custom_objects(tiny_spec, tmp_path):
    model = ev2.build_model(tiny_spec, classes=3, dropout_rate=0.1, survival_prob=0.9)
    ev2.set_regularization(model, dropout_rate=0.35, survival_prob=0.6)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    images = _images(3, 32)
    np.testing.assert_array_equal(model.predict(images, verbose=0), loaded.predict(images, verbose=0))
    rates = ev2.get_regularization(loaded)
    assert rates["dropout_rate"] == pytest.approx(0.35)
    assert rates["survival_prob"] == pytest.approx(0.6)


def test_regularization_variables_are_not_weights(tiny_spec):
    model = ev2.build_model(tiny_spec)
    names = {id(v) for v in model.weights}
    rate_variables = [v for v in model.non_trainable_variables if v.path.endswith("rate")]
    assert rate_variables and not any(id(v) in names for v in rate_variables)


def _train_step_losses(model, images, labels, steps):
    return [float(model.train_on_batch(images, labels)) for _ in range(steps)]


def test_regularization_changes_compiled_train_step_without_retrace(tiny_spec):
    keras.utils.set_random_seed(1)
    model = ev2.build_model(tiny_spec, classes=4, dropout_rate=0.0, survival_prob=1.0)
    # lr 0: weights never change, so without dropout every step has the same loss.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
    traces = []
    original_step = model.train_step
    model.train_step = lambda data: (traces.append(1), original_step(data))[1]
    images, labels = _images(8, 32), np.arange(8) % 4

    quiet = _train_step_losses(model, images, labels, 3)
    assert max(quiet) - min(quiet) < 1e-6
    ev2.set_regularization(model, dropout_rate=0.8)
    noisy = _train_step_losses(model, images, labels, 3)
    assert max(noisy) - min(noisy) > 1e-4
    ev2.set_regularization(model, dropout_rate=0.0, survival_prob=0.3)
    deep_noisy = _train_step_losses(model, images, labels, 3)
    assert max(deep_noisy) - min(deep_noisy) > 1e-4
    ev2.set_regularization(model, survival_prob=1.0)
    quiet_again = _train_step_losses(model, images, labels, 2)
    assert abs(quiet_again[0] - quiet[0]) < 1e-5
    assert len(traces) == 1  # traced once, every change seen by the same compiled step
    # Inference never drops.
    np.testing.assert_array_equal(model.predict(images, verbose=0), model.predict(images, verbose=0))


def test_set_regularization_errors(tiny_spec):
    backbone = ev2.build_model(tiny_spec, include_top=False)
    with pytest.raises(ValueError, match="include_top=False"):
        ev2.set_regularization(backbone, dropout_rate=0.2)
    with pytest.raises(ValueError, match="survival_prob"):
        ev2.set_regularization(backbone, survival_prob=0.0)
    with pytest.raises(ValueError, match="rate"):
        ev2.AdjustableDropout(1.0)


def test_stochastic_depth_decays_linearly_with_block_index():
    model = ev2.EfficientNetV2B0(survival_prob=0.8)
    depth_layers = [l for l in model.layers if isinstance(l, ev2.StochasticDepth)]
    total_blocks = ev2.get_model_spec("b0").num_blocks
    for layer in depth_layers:
        assert layer.rate == pytest.approx(0.2 * layer.block_fraction, abs=1e-7)
    assert depth_layers[-1].block_fraction == pytest.approx((total_blocks - 1) / total_blocks)
    assert model.get_layer("top_dropout").rate == pytest.approx(0.2)
    assert ev2.EfficientNetV2B2().get_layer("top_dropout").rate == pytest.approx(0.3)  # per variant


def test_feature_endpoints_are_the_five_reductions():
    model = ev2.EfficientNetV2S(include_top=False, input_shape=(64, 64, 3))
    extractor = ev2.build_feature_extractor(model)
    features = extractor(_images(1, 64))
    assert sorted(features) == [f"reduction_{i}" for i in range(1, 6)]
    assert [features[f"reduction_{i}"].shape[1] for i in range(1, 6)] == [32, 16, 8, 4, 2]
    assert [features[f"reduction_{i}"].shape[-1] for i in range(1, 6)] == [24, 48, 64, 160, 256]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_outputs_float32(tiny_spec, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        for kwargs in ({}, {"include_top": False}, {"include_top": False, "pooling": "max"}):
            model = ev2.build_model(tiny_spec, classes=3, **kwargs)
            assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
            output = model(_images(2, 32), training=True)
            assert output.dtype == "float32"
            assert np.isfinite(keras.ops.convert_to_numpy(output)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_inputs_give_clear_errors(tiny_spec):
    with pytest.raises(ValueError, match="Unknown EfficientNetV2 variant 'q'.*efficientnetv2-b0"):
        ev2.build_model("q")
    with pytest.raises(ValueError, match="pooling must be one of"):
        ev2.EfficientNetV2B0(include_top=False, pooling="mean")
    with pytest.raises(ValueError, match="3 channels"):
        ev2.EfficientNetV2B0(input_shape=(64, 64, 1))
    with pytest.raises(ValueError, match="at least 32"):
        ev2.EfficientNetV2B0(input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="classes must be a positive integer"):
        ev2.EfficientNetV2B0(classes=0)
    # Other channel counts are fine for a model trained from scratch without the RGB preprocessing.
    gray = ev2.build_model(tiny_spec, input_shape=(32, 32, 1), include_preprocessing=False)
    assert gray.output.shape == (None, 1000)
    model = ev2.build_model(tiny_spec, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        model.predict(np.zeros((1, 32, 32, 1), "float32"), verbose=0)


def test_flops_match_the_official_readme():
    # FLOPs are multiply-adds; official README: B0 0.72 B at 224, S 8.4 B at 384. We count conv and
    # dense multiply-adds; the official profiler also counts element-wise ops (< 1 % more).
    assert ev2.count_flops(ev2.EfficientNetV2B0(input_shape=(224, 224, 3))) / 1e9 == pytest.approx(0.72, rel=0.01)
    assert ev2.count_flops(ev2.EfficientNetV2S(input_shape=(384, 384, 3))) / 1e9 == pytest.approx(8.4, rel=0.01)


@pytest.mark.slow
def test_flops_match_the_official_readme_m_l():
    assert ev2.count_flops(ev2.EfficientNetV2M(input_shape=(480, 480, 3))) / 1e9 == pytest.approx(24.7, rel=0.01)
    assert ev2.count_flops(ev2.EfficientNetV2L(input_shape=(480, 480, 3))) / 1e9 == pytest.approx(56.3, rel=0.01)


JAX_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    import numpy as np
    import keras
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.models.family import ModelSpec, StageSpec
    assert keras.backend.backend() == "jax"
    assert "tensorflow" not in sys.modules, "the model package must not import tensorflow"
    spec = ModelSpec("efficientnetv2-tiny", (
        StageSpec("fused_mbconv", 3, 1, 1, 8, 8, 1),
        StageSpec("fused_mbconv", 3, 2, 2, 8, 16, 2),
        StageSpec("mbconv", 3, 2, 2, 16, 24, 2, 0.25)), head_filters=32)
    model = ev2.build_model(spec, classes=4, dropout_rate=0.0, survival_prob=1.0)
    x = np.random.RandomState(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.arange(8) % 4
    assert model(x).shape == (8, 4)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    quiet = [float(model.train_on_batch(x, y)) for _ in range(2)]
    ev2.set_regularization(model, dropout_rate=0.8)
    noisy = [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert abs(quiet[0] - quiet[1]) < 1e-6, quiet
    assert max(noisy) - min(noisy) > 1e-4, noisy
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert ev2.EfficientNetV2B0().count_params() == 7_200_312
    print("JAX OK")
    """
)


# Slow: a JAX subprocess (~1 CPU minute); make test trains a model on JAX in tests/test_progressive_backends.py.
@pytest.mark.slow
def test_jax_backend_forward_and_train_step():
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "JAX OK" in result.stdout


def test_a_recipe_s_classifier_initializer_reaches_the_model():
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.recipe_model import make_model
    from efficientnetv2_keras.training.recipe_settings import model_settings

    config = load_config("digits_demo")
    assert config.model.classifier_initializer == "zeros"
    model = make_model(model_settings(config.model, config.train.loss), 10, input_shape=(32, 32, 3))
    assert not model.get_layer("predictions").kernel.numpy().any()
