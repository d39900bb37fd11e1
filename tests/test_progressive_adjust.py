"""`make_adjustable`: scheduled dropout and stochastic depth for any functional Keras model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_keras as ev2
from efficientnetv2_keras.progressive import ProgressiveLearning, make_adjustable, progressive_schedule


def _tiny_foreign_model():
    """A non-EfficientNet functional model: a nested Sequential stem, two residual blocks whose branches
    use per-sample Dropout (stochastic depth, rates 0.1 and 0.3), BatchNorm, and an element-wise head Dropout."""
    inputs = keras.Input((None, None, 3))
    stem = keras.Sequential([keras.layers.Conv2D(8, 3, padding="same"), keras.layers.BatchNormalization()], name="stem")
    x = stem(inputs)
    for i, rate in enumerate((0.1, 0.3)):
        branch = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name=f"block{i}_conv")(x)
        branch = keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"block{i}_drop")(branch)
        x = keras.layers.Add(name=f"block{i}_add")([x, branch])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="predictions")(x), name="foreign")


def _fixed_rates_zero(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0  # eager calls read the Python float


def test_make_adjustable_replaces_dropout_keeps_weights_and_outputs():
    keras.utils.set_random_seed(0)
    original = _tiny_foreign_model()
    adjusted = make_adjustable(original)
    assert isinstance(adjusted.get_layer("top_dropout"), ev2.AdjustableDropout)
    assert isinstance(adjusted.get_layer("block0_drop"), ev2.StochasticDepth)
    assert type(original.get_layer("top_dropout")) is keras.layers.Dropout  # the original is unchanged
    # Rates as built; stochastic depth keeps its profile: block_fraction = rate / largest rate.
    assert adjusted.get_layer("top_dropout").rate == pytest.approx(0.2)
    assert [adjusted.get_layer(f"block{i}_drop").rate for i in (0, 1)] == pytest.approx([0.1, 0.3])
    assert [adjusted.get_layer(f"block{i}_drop").block_fraction for i in (0, 1)] == pytest.approx([1 / 3, 1.0])
    assert ev2.get_regularization(adjusted) == pytest.approx({"dropout_rate": 0.2, "survival_prob": 0.7})
    assert adjusted.count_params() == original.count_params()
    for a, b in zip(original.weights, adjusted.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))

    x = np.random.RandomState(0).uniform(0, 1, (6, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(original(x)), keras.ops.convert_to_numpy(adjusted(x)))
    # Training mode (BatchNorm on batch statistics) at rate 0 in both: identical.
    _fixed_rates_zero(original)
    ev2.set_regularization(adjusted, dropout_rate=0.0, survival_prob=1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(original(x, training=True)),
                               keras.ops.convert_to_numpy(adjusted(x, training=True)), atol=1e-6)
    ev2.set_regularization(adjusted, dropout_rate=0.5, survival_prob=0.4)
    assert [adjusted.get_layer(f"block{i}_drop").rate for i in (0, 1)] == pytest.approx([0.2, 0.6])
    assert not np.allclose(keras.ops.convert_to_numpy(original(x, training=True)),
                           keras.ops.convert_to_numpy(adjusted(x, training=True)), atol=1e-4)


def _scheduled_fit(model, classes, survival=True):
    """A 2-stage fit (32 then 40 px, 2 epochs each) with learning rate 0 on the same batches every epoch:
    returns the per-batch (running mean) losses, epoch x batch, and the history."""
    keras.utils.set_random_seed(0)
    schedule = progressive_schedule("b0", "paper", total_epochs=4, num_stages=2, image_size=(32, 40), randaug_magnitude=0,
                                    mixup_alpha=0, dropout_rate=(0.0, 0.6), survival_prob=(1.0, 0.5) if survival else None)
    rng = np.random.RandomState(0)
    images, labels = rng.uniform(0, 255, (16, 40, 40, 3)).astype("float32"), rng.randint(0, classes, 16)

    def dataset_fn(stage):  # the same batches every epoch
        resized = tf.image.resize(images, (stage.image_size, stage.image_size))
        return tf.data.Dataset.from_tensor_slices((resized, labels)).batch(8)

    # Learning rate 0: a stage's two epochs differ only by the dropout draws of the compiled step.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    losses = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
    progressive = ProgressiveLearning(schedule, dataset_fn, verbose=0)
    history = model.fit(progressive.dataset, epochs=4, callbacks=[progressive, record], verbose=0)
    return np.array(losses).reshape(4, -1), history


def test_progressive_learning_schedules_dropout_on_an_adjusted_model():
    model = make_adjustable(_tiny_foreign_model())
    losses, history = _scheduled_fit(model, classes=4)
    np.testing.assert_allclose(losses[0], losses[1], atol=1e-6)  # rates 0
    assert np.abs(losses[2] - losses[3]).max() > 1e-3, losses  # dropout 0.6, survival 0.5
    assert history.history["dropout_rate"] == pytest.approx([0, 0, 0.6, 0.6])
    assert ev2.get_regularization(model) == pytest.approx({"dropout_rate": 0.6, "survival_prob": 0.5})


def test_make_adjustable_errors():
    inputs = keras.Input((8,))
    with pytest.raises(ValueError, match="no Dropout layer to make adjustable"):
        make_adjustable(keras.Model(inputs, keras.layers.Dense(2)(inputs)))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dropout = keras.layers.Dropout(0.1)

        def call(self, x):
            return self.dropout(x)

    with pytest.raises(ValueError, match="subclassed model"):
        make_adjustable(Subclassed())


def _with_dropout_head(application):
    """keras.applications backbone (any input size) under the head keras.applications' include_top builds
    (pooling, Dropout, Dense). ResNet50 has no dropout of its own; EfficientNetV2B0 keeps its stochastic depth."""
    backbone = application(include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg")
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Dropout(0.2, name="top_dropout")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["EfficientNetV2B0", "ResNet50"])
def test_make_adjustable_on_keras_applications(name):
    keras.utils.set_random_seed(0)
    # EfficientNetV2B0: stochastic depth 0 -> 0.2 over the blocks (per-sample Dropout layers).
    original = _with_dropout_head(getattr(keras.applications, name))
    adjusted = make_adjustable(original)
    layers = adjusted._flatten_layers(include_self=False, recursive=True)
    kinds = [type(layer).__name__ for layer in layers if isinstance(layer, (keras.layers.Dropout, ev2.AdjustableDropout,
                                                                            ev2.StochasticDepth))]
    assert "Dropout" not in kinds and kinds.count("AdjustableDropout") == 1, kinds
    if name == "EfficientNetV2B0":
        assert kinds.count("StochasticDepth") >= 10, kinds
        assert ev2.get_regularization(adjusted)["survival_prob"] > 0.8  # 1 - the deepest block's rate
    x = np.random.RandomState(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(original(x)), keras.ops.convert_to_numpy(adjusted(x)))
    _fixed_rates_zero(original)
    ev2.set_regularization(adjusted, dropout_rate=0.0, survival_prob=1.0 if name == "EfficientNetV2B0" else None)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(original(x, training=True)),
                               keras.ops.convert_to_numpy(adjusted(x, training=True)), rtol=1e-5, atol=1e-6)
    losses, history = _scheduled_fit(adjusted, classes=10, survival=name == "EfficientNetV2B0")
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert np.abs(losses[2] - losses[3]).max() > 1e-3, losses
    assert ev2.get_regularization(adjusted)["dropout_rate"] == pytest.approx(0.6)
