"""channels_first (NCHW) models: build, channels_last equivalence, keras.applications parity, weights,
preprocessing, features, FLOPs, errors, and progressive training on the TensorFlow and JAX backends.

Every test here runs with `keras.config.set_image_data_format("channels_first")` (restored afterwards);
channels_last references are built inside `image_data_format("channels_last")`.
"""

import contextlib
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_keras as ev2
from conftest import TINY_SPEC
from efficientnetv2_keras.models.builder import IMAGENET_MEAN, IMAGENET_VARIANCE
from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule

MODELS = {"tiny": TINY_SPEC, "b0": "b0"}


@contextlib.contextmanager
def image_data_format(data_format):
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


@pytest.fixture(autouse=True)
def channels_first():
    with image_data_format("channels_first"):
        yield


def _nhwc_images(n=2, size=64, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _nchw(images):
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


# -- building, equivalence with channels_last, weights ---------------------------------------------


def _call(model, images):
    return keras.ops.convert_to_numpy(model(images))  # an eager call: cheaper than predict here


@pytest.mark.parametrize("name", list(MODELS))
def test_builds_and_equals_the_channels_last_model_given_its_weights_file(name, tmp_path):
    path = str(tmp_path / "channels_last.weights.h5")
    with image_data_format("channels_last"):
        reference = ev2.build_model(MODELS[name], classes=5)
        # Non-trivial BN statistics, so a wrong normalization axis could not go unnoticed.
        rng = np.random.RandomState(1)
        for layer in reference.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
                layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
        reference.save_weights(path)

    model = ev2.build_model(MODELS[name], classes=5, weights=path)  # the default input shape
    assert model.input.shape == (None, 3, None, None)
    assert model.count_params() == reference.count_params()
    images = _nhwc_images(2, 64)
    assert np.abs(_call(model, _nchw(images)) - _call(reference, images)).max() < 1e-4
    # The backbone's feature maps: the same numbers, channels on axis 1.
    features = keras.Model(model.input, model.get_layer("top_activation").output)
    reference_features = keras.Model(reference.input, reference.get_layer("top_activation").output)
    expected = _call(reference_features, images).transpose(0, 3, 1, 2)
    got = _call(features, _nchw(images))
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    if name == "tiny":
        fixed = ev2.build_model(TINY_SPEC, input_shape=(3, 64, 64), include_top=False)
        assert fixed.input.shape == (None, 3, 64, 64) and fixed.output.shape == (None, 32, 8, 8)
        # Transfer learning from the channels_last file: all but the head (the file is read into a
        # model built in the current layout).
        other = ev2.build_model(TINY_SPEC, classes=7)
        ev2.load_weights(other, path, spec=TINY_SPEC, skip_head=True)
        np.testing.assert_array_equal(
            other.get_layer("top_conv").kernel.numpy(), reference.get_layer("top_conv").kernel.numpy()
        )
    else:
        assert model.count_params() == 7_200_312 - 1281 * (1000 - 5)  # the official total, 5 classes


@pytest.fixture(scope="module")
def b0_channels_first(tmp_path_factory):
    """Our B0 and keras.applications' (random weights), both channels_first, and its weights files."""
    from keras.src.legacy.saving import legacy_h5_format

    with image_data_format("channels_first"):
        reference = keras.applications.EfficientNetV2B0(weights=None, input_shape=(3, 64, 64))
        ours = ev2.EfficientNetV2B0(input_shape=(3, 64, 64))
        expected = _call(reference, _nchw(_nhwc_images(2, 64)))
    directory = tmp_path_factory.mktemp("b0_channels_first")
    legacy = str(directory / "efficientnetv2-b0.h5")  # the layout keras.applications downloads
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    keras3 = str(directory / "reference.weights.h5")
    reference.save_weights(keras3)
    return {"ours": ours, "model": reference, "legacy": legacy, "keras3": keras3, "expected": expected}


def test_outputs_match_keras_applications_built_channels_first(b0_channels_first, monkeypatch):
    from keras.src.applications import efficientnet_v2

    # weights="imagenet" cannot download here: Keras' downloader is pointed at the local .h5 file.
    monkeypatch.setattr(efficientnet_v2.file_utils, "get_file", lambda *a, **k: b0_channels_first["legacy"])
    model = b0_channels_first["ours"]
    assert model.input.shape == (None, 3, 64, 64) and model.count_params() == 7_200_312
    fresh = model.get_weights()
    images = _nchw(_nhwc_images(2, 64))
    for kind in ("model", "legacy", "keras3", "imagenet"):
        model.set_weights(fresh)  # each source must bring every weight itself
        if kind == "imagenet":
            ev2.load_weights(model, "imagenet")
        else:
            ev2.load_weights_from_keras_applications(model, b0_channels_first[kind])
        assert np.abs(_call(model, images) - b0_channels_first["expected"]).max() < 1e-4, kind


# -- preprocessing, features, FLOPs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s_channels_first():
    with image_data_format("channels_first"):
        return ev2.EfficientNetV2S(include_top=False, input_shape=(3, 64, 64))


def _preprocessed(model, images):
    last = "normalization" if "normalization" in [l.name for l in model.layers] else "rescaling"
    return _call(keras.Model(model.input, model.get_layer(last).output), images)


def test_include_preprocessing_normalizes_over_the_channel_axis(b0_channels_first, s_channels_first):
    # Each channel holds one constant, different per channel: a normalization along the wrong axis
    # would mix them up (or fail to broadcast).
    pixels = np.array([30.0, 120.0, 240.0], "float32")
    images = np.broadcast_to(pixels[None, :, None, None], (2, 3, 64, 64)).copy()
    expected = (pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.sqrt(IMAGENET_VARIANCE)  # B0: ImageNet mean/std
    got = _preprocessed(b0_channels_first["ours"], images)
    np.testing.assert_allclose(got, np.broadcast_to(expected[None, :, None, None], images.shape), atol=1e-5)
    expected = pixels / 128.0 - 1.0  # S: symmetric, [0, 255] -> [-1, 1)
    got = _preprocessed(s_channels_first, images)
    np.testing.assert_allclose(got, np.broadcast_to(expected[None, :, None, None], images.shape), atol=1e-6)


def test_feature_endpoints_are_the_five_reductions(s_channels_first):
    features = ev2.build_feature_extractor(s_channels_first)(_nchw(_nhwc_images(1, 64)))
    assert sorted(features) == [f"reduction_{i}" for i in range(1, 6)]
    assert [tuple(features[f"reduction_{i}"].shape) for i in range(1, 6)] == [
        (1, 24, 32, 32), (1, 48, 16, 16), (1, 64, 8, 8), (1, 160, 4, 4), (1, 256, 2, 2)
    ]


def test_count_flops_in_channels_first():
    # B0 at 224: the official README's 0.72 B multiply-adds, as the channels_last model.
    assert ev2.count_flops(ev2.EfficientNetV2B0(input_shape=(3, 224, 224))) / 1e9 == pytest.approx(0.72, rel=0.01)
    tiny, any_size = ev2.build_model(TINY_SPEC, input_shape=(3, 64, 64)), ev2.build_model(TINY_SPEC)
    with image_data_format("channels_last"):
        # Each model is read in its own layout, whatever the global setting is now.
        assert ev2.count_flops(tiny) == ev2.count_flops(ev2.build_model(TINY_SPEC, input_shape=(64, 64, 3)))
        with pytest.raises(ValueError, match=r"fixed input size, e\.g\. input_shape=\(3, 384, 384\)"):
            ev2.count_flops(any_size)


def test_errors_name_the_channels_first_layout():
    with pytest.raises(ValueError, match=r"channels_first.*\(channels, height, width\).*\(3, 64, 64\)"):
        ev2.EfficientNetV2B0(input_shape=(64, 64, 3))  # a channels_last shape
    with pytest.raises(ValueError, match=r"3 channels.*input_shape=\(1, 64, 64\).*channels_first"):
        ev2.EfficientNetV2B0(input_shape=(1, 64, 64))
    with pytest.raises(ValueError, match=r"\(channels, height, width\)"):
        ev2.EfficientNetV2B0(input_shape=(64, 64))
    with pytest.raises(ValueError, match=r"at least 32.*input_shape=\(3, 16, 16\)"):
        ev2.EfficientNetV2B0(input_shape=(3, 16, 16))
    # Other channel counts are fine without the RGB preprocessing, channels on axis 1.
    gray = ev2.build_model(TINY_SPEC, input_shape=(1, 32, 32), include_preprocessing=False)
    assert gray.input.shape == (None, 1, 32, 32) and gray.output.shape == (None, 1000)
    with image_data_format("channels_last"):
        with pytest.raises(ValueError, match=r"\(height, width, channels\)"):
            ev2.EfficientNetV2B0(input_shape=(3, 64))


# -- data pipeline and progressive training ---------------------------------------------------------


def test_build_dataset_yields_nchw_batches_in_channels_first():
    from efficientnetv2_keras.data import DigitsSource, build_dataset

    source = DigitsSource(image_size=16)
    kwargs = dict(training=True, seed=3, flip=False, randaug_magnitude=5, mixup_alpha=0.2)
    nchw = build_dataset(source, "train[:64]", 32, 16, **kwargs)  # default: keras.config's layout
    assert nchw.element_spec[0].shape.as_list() == [16, 3, 32, 32]
    nhwc = build_dataset(source, "train[:64]", 32, 16, data_format="channels_last", **kwargs)
    assert nhwc.element_spec[0].shape.as_list() == [16, 32, 32, 3]
    for (first, first_labels), (last, last_labels) in zip(nchw.take(2), nhwc.take(2)):
        np.testing.assert_array_equal(first.numpy(), last.numpy().transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(first_labels.numpy(), last_labels.numpy())
    evaluation = build_dataset(source, "test", 40, 8, training=False)
    assert evaluation.element_spec[0].shape.as_list() == [None, 3, 40, 40]
    with pytest.raises(ValueError, match="data_format must be"):
        build_dataset(source, "train", 32, 16, training=True, data_format="NCHW")


def test_progressive_learning_checks_nchw_image_sizes():
    schedule = progressive_schedule(TINY_SPEC, "paper", total_epochs=2, num_stages=2, image_size=(32, 40))

    def dataset_fn(size_of):
        def make(stage):
            images = tf.zeros((4, 3, size_of(stage), size_of(stage)))
            return tf.data.Dataset.from_tensor_slices((images, tf.zeros((4,), tf.int32))).batch(2)
        return make

    ProgressiveLearning(schedule, dataset_fn(lambda stage: stage.image_size)).dataset  # sizes on axes 2, 3
    with pytest.raises(ValueError, match=r"asks for image size 40 but dataset_fn gave images of \(32, 32\)"):
        ProgressiveLearning(schedule, dataset_fn(lambda stage: 32)).dataset


PROGRESSIVE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    keras.config.set_image_data_format("channels_first")
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.data import DigitsSource, build_dataset
    from efficientnetv2_keras.models.family import ModelSpec, StageSpec
    from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule

    TINY_SPEC = ModelSpec("efficientnetv2-tiny", (
        StageSpec("fused_mbconv", 3, 1, 1, 8, 8, 1),
        StageSpec("fused_mbconv", 3, 2, 2, 8, 16, 2),
        StageSpec("mbconv", 3, 2, 2, 16, 24, 2, 0.25)), head_filters=32)
    keras.utils.set_random_seed(0)
    source = DigitsSource(image_size=40)
    schedule = progressive_schedule(TINY_SPEC, "paper", total_epochs=2, num_stages=2, image_size=(32, 40),
                                    randaug_magnitude=0, mixup_alpha=0, dropout_rate=(0.0, 0.2))

    def dataset_fn(stage):
        return build_dataset(source, "train", stage.image_size, 64, training=True, seed=stage.index,
                             flip=False, crop_area_range=(0.6, 1.0))

    model = ev2.build_model(TINY_SPEC, classes=10, survival_prob=1.0)
    assert model.input.shape == (None, 3, None, None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"])
    progressive = ProgressiveLearning(schedule, dataset_fn, verbose=0)
    assert progressive.dataset.element_spec[0].shape.as_list() == [64, 3, None, None]
    sizes = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: sizes.append(next(iter(progressive.dataset))[0].shape))
    history = model.fit(progressive.dataset, epochs=2, callbacks=[progressive, record], verbose=0)
    assert [tuple(s) for s in sizes] == [(64, 3, 32, 32), (64, 3, 40, 40)], sizes
    assert history.history["image_size"] == [32, 40], history.history
    assert abs(ev2.get_regularization(model)["dropout_rate"] - 0.2) < 1e-6
    assert np.isfinite(history.history["loss"]).all(), history.history
    assert history.history["accuracy"][-1] > 0.3, history.history  # chance is 0.1
    print("PROGRESSIVE OK", keras.backend.backend(), history.history["accuracy"])
    """
)


def _run_progressive(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", PROGRESSIVE_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"PROGRESSIVE OK {backend}" in result.stdout, result.stdout[-2000:]


def test_progressive_training_on_tensorflow():
    # In-process: the TensorFlow backend is the one the test session runs on.
    assert keras.backend.backend() == "tensorflow"
    namespace = {"__name__": "progressive_channels_first"}
    exec(compile(PROGRESSIVE_SCRIPT, "<progressive channels_first>", "exec"), namespace)


# Slow: a JAX subprocess compiling every stage (~1-2 CPU minutes); make test runs a progressive fit on JAX in
# tests/test_progressive_backends.py.
@pytest.mark.slow
def test_progressive_training_on_jax():
    pytest.importorskip("jax")
    _run_progressive("jax")
