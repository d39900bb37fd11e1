"""The fused train step (TensorFlow backend): fused BatchNorm, fused optimizer updates and EMA compute what
Keras' own code computes, keep Keras' variables, and trace to far fewer ops."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_keras as ev2
from efficientnetv2_keras.benchmarks.models import set_fused, train_step_op_counts
from efficientnetv2_keras.models.batch_norm import FusedBatchNormalization
from efficientnetv2_keras.training import optimizers
from efficientnetv2_keras.training.ema import batch_norm_statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _batch_norm_pair(axis, shape):
    """Keras' BatchNormalization and ours, built with the same (perturbed) weights."""
    pair = [keras.layers.BatchNormalization(axis=axis, momentum=0.9), FusedBatchNormalization(axis=axis, momentum=0.9)]
    for layer in pair:
        layer.build(shape)
    rng = np.random.default_rng(1)
    weights = [w + 0.1 * rng.normal(size=w.shape).astype("float32") for w in pair[0].get_weights()]
    for layer in pair:
        layer.set_weights(weights)
    return pair


def _train_call(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, training=True) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
    return [g.numpy() for g in grads] + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("axis, shape", [(-1, (4, 5, 6, 3)), (1, (4, 3, 5, 6))])
def test_fused_batch_norm_matches_keras_forward_gradients_and_moving_statistics(axis, shape):
    rng = np.random.default_rng(0)
    keras_layer, fused_layer = _batch_norm_pair(axis, shape)
    for _ in range(3):  # the moving statistics over a few steps: momentum and the biased batch variance
        x = rng.normal(2.0, 3.0, shape).astype("float32")
        upstream = rng.normal(size=shape).astype("float32")
        np.testing.assert_allclose(fused_layer(x, training=True), keras_layer(x, training=True), atol=2e-5)
        for ours, theirs in zip(_train_call(fused_layer, x, upstream), _train_call(keras_layer, x, upstream)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-5)
    # Inference is Keras' own code: identical outputs from the same weights.
    fused_layer.set_weights(keras_layer.get_weights())
    np.testing.assert_array_equal(fused_layer(x, training=False), keras_layer(x, training=False))


def test_fused_batch_norm_keeps_keras_variables_config_and_fallbacks():
    keras_layer, fused_layer = _batch_norm_pair(-1, (2, 3, 3, 4))
    assert [w.path.split("/")[-1] for w in fused_layer.weights] == [w.path.split("/")[-1] for w in keras_layer.weights]
    assert fused_layer.count_params() == keras_layer.count_params()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused_layer))
    assert isinstance(restored, FusedBatchNormalization) and restored.get_config() == fused_layer.get_config()
    x = tf.zeros((2, 3, 3, 4))
    assert fused_layer._fusable(x, None)
    assert not fused_layer._fusable(tf.zeros((2, 3, 3, 4), "float64"), None)  # the kernel takes half/float
    assert not fused_layer._fusable(x, tf.ones((2, 3, 3)))
    fused_layer.synchronized = True  # cross-replica statistics: Keras' path
    assert not fused_layer._fusable(x, None)
    assert not FusedBatchNormalization(fused=False)._fusable(x, None)
    sequence = FusedBatchNormalization()
    sequence.build((2, 5, 4))
    assert not sequence._fusable(tf.zeros((2, 5, 4)), None)  # 3-D: Keras' path


def test_model_builder_uses_the_fused_batch_norm_with_keras_weight_names(tiny_spec):
    model = ev2.build_model(tiny_spec, classes=3, input_shape=(32, 32, 3))
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, FusedBatchNormalization) for layer in norms)


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = FusedBatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))


def _train(optimizer, steps=4, average_statistics=False, policy=None):
    """Model weights and optimizer variables after `steps` train steps on fixed data."""
    keras.mixed_precision.set_global_policy(policy or "float32")
    try:
        model = _small_model()
        if average_statistics:
            optimizer.average_statistics(batch_norm_statistics(model))
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        for _ in range(steps):
            model.train_on_batch(rng.normal(size=(8, 6, 6, 3)).astype("float32"), rng.integers(0, 3, 8))
        inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        return [w.numpy() for w in model.weights], [v.numpy() for v in inner.variables], inner
    finally:
        keras.mixed_precision.set_global_policy("float32")


EMA = {"use_ema": True, "ema_momentum": 0.9}
OPTIMIZERS = {
    "sgd": lambda **kw: optimizers.SGD(0.1, l2_weight_decay=1e-2, **kw),
    "momentum": lambda **kw: optimizers.SGD(0.1, momentum=0.9, l2_weight_decay=1e-2, **EMA, **kw),
    "nesterov": lambda **kw: optimizers.SGD(0.1, momentum=0.9, nesterov=True, **kw),
    "rmsprop": lambda **kw: optimizers.RMSprop(0.01, rho=0.9, momentum=0.9, epsilon=1e-3, l2_weight_decay=1e-2,
                                               **EMA, **kw),
    "rmsprop_no_momentum": lambda **kw: optimizers.RMSprop(0.01, **kw),
    "adam": lambda **kw: optimizers.Adam(0.01, epsilon=1e-3, l2_weight_decay=1e-2, **EMA, **kw),
    "adamw": lambda **kw: optimizers.AdamW(0.01, weight_decay=0.05, **EMA, **kw),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_updates_match_keras_updates_with_l2_ema_warmup_and_statistics(name):
    fused_weights, fused_state, fused = _train(OPTIMIZERS[name](), average_statistics=True)
    keras_weights, keras_state, _ = _train(OPTIMIZERS[name](fused=False), average_statistics=True)
    assert len(fused_state) == len(keras_state)
    for ours, theirs in zip(fused_weights + fused_state, keras_weights + keras_state):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-6)
    assert fused.get_config()["fused"] is True and fused.iterations.numpy() == 4


KERAS_OPTIMIZERS = {
    "sgd": (optimizers.SGD, keras.optimizers.SGD, {"learning_rate": 0.1, "momentum": 0.9}),
    "rmsprop": (optimizers.RMSprop, keras.optimizers.RMSprop,
                {"learning_rate": 0.01, "rho": 0.9, "momentum": 0.9, "epsilon": 1e-3}),
    "adam": (optimizers.Adam, keras.optimizers.Adam, {"learning_rate": 0.01, "epsilon": 1e-3}),
    "adamw": (optimizers.AdamW, keras.optimizers.AdamW, {"learning_rate": 0.01, "weight_decay": 0.05}),
}


@pytest.mark.parametrize("name", sorted(KERAS_OPTIMIZERS))
def test_fused_updates_and_ema_equal_keras_own_optimizer_with_the_same_slots(name):
    ours, theirs, settings = KERAS_OPTIMIZERS[name]
    fused_weights, fused_state, fused = _train(ours(**settings, use_ema=True, ema_momentum=0.9, ema_warmup=False))
    keras_weights, keras_state, reference = _train(theirs(**settings, use_ema=True, ema_momentum=0.9))
    # Same slot variables in the same order under the same names: checkpoints and backups load either way.
    assert [(v.name, v.shape) for v in fused.variables] == [(v.name, v.shape) for v in reference.variables]
    for a, b in zip(fused_weights + fused_state, keras_weights + keras_state):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_fused_updates_under_mixed_float16_loss_scaling():
    fused_weights, fused_state, _ = _train(OPTIMIZERS["rmsprop"](), policy="mixed_float16")
    keras_weights, keras_state, _ = _train(OPTIMIZERS["rmsprop"](fused=False), policy="mixed_float16")
    for ours, theirs in zip(fused_weights + fused_state, keras_weights + keras_state):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)


def test_sparse_gradients_fall_back_to_keras_update():
    variable = keras.Variable(np.ones((4, 2), "float32"))
    optimizer = optimizers.Adam(0.1)
    optimizer.build([variable])
    gradient = tf.IndexedSlices(tf.ones((1, 2)), tf.constant([1]), tf.constant([4, 2]))
    optimizer.apply([gradient], [variable])
    reference = keras.optimizers.Adam(0.1)
    twin = keras.Variable(np.ones((4, 2), "float32"))
    reference.build([twin])
    reference.apply([gradient], [twin])
    np.testing.assert_allclose(variable.numpy(), twin.numpy())


def _op_count(model, fused):
    set_fused(model, fused)
    optimizer = model.optimizer
    optimizer.fused = fused
    return sum(train_step_op_counts(model).values())


def test_fused_step_traces_to_fewer_ops(tiny_spec):
    model = ev2.build_model(tiny_spec, classes=3, input_shape=(32, 32, 3))
    model.compile(optimizer=optimizers.RMSprop(0.01, momentum=0.9, use_ema=True, l2_weight_decay=1e-5),
                  loss="sparse_categorical_crossentropy")
    model.optimizer.average_statistics(batch_norm_statistics(model))
    before, after = _op_count(model, fused=False), _op_count(model, fused=True)
    assert after < 0.55 * before, (before, after)


@pytest.mark.slow
def test_b0_train_step_op_count_drops():
    # The recipe's step (RMSprop with momentum, weight EMA, averaged BN statistics, L2) on B0, TensorFlow
    # 2.21 / Keras 3.15: 17,193 ops with fused=False, 9,031 fused (18,874 before the fused step existed).
    model = ev2.build_model("b0", classes=10)
    model.compile(optimizer=optimizers.RMSprop(0.01, momentum=0.9, use_ema=True, l2_weight_decay=1e-5),
                  loss="sparse_categorical_crossentropy")
    model.optimizer.average_statistics(batch_norm_statistics(model))
    before, after = _op_count(model, fused=False), _op_count(model, fused=True)
    assert after < 0.55 * before and after < 10000, (before, after)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, "tests")
    from test_fused_step import _small_model
    from efficientnetv2_keras.benchmarks.models import set_fused
    from efficientnetv2_keras.training import optimizers
    from efficientnetv2_keras.training.ema import batch_norm_statistics

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 3)).astype("float32"), rng.integers(0, 3, 16)
    results = {}
    for fused in (True, False):
        with strategy.scope():
            model = _small_model()
            set_fused(model, fused)
            optimizer = optimizers.Adam(0.01, l2_weight_decay=1e-2, use_ema=True, ema_momentum=0.9, fused=fused)
            optimizer.average_statistics(batch_norm_statistics(model))
            model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        copies = [getattr(v.value, "values", (v.value,)) for v in model.weights + optimizer.variables]
        results[fused] = [[c.numpy().tolist() for c in values] for values in copies]
    print(json.dumps(results))
    """
)


def test_fused_updates_under_mirrored_strategy_match_keras_updates_on_every_replica():
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for fused_copies, keras_copies in zip(results["true"], results["false"]):
        assert len(fused_copies) == len(keras_copies) == 2  # one copy per replica
        # Replica by replica (the averages of unsynchronized BatchNorm statistics differ between replicas,
        # as each replica's statistics do, with Keras' updates too).
        for fused_copy, keras_copy in zip(fused_copies, keras_copies):
            np.testing.assert_allclose(fused_copy, keras_copy, rtol=1e-4, atol=1e-5)
