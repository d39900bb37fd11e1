"""Recipe pieces: LR schedules, weight decay, EMA, losses/metrics, strategies, mixed precision, finetuning."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import efficientnetv2_keras as ev2
from efficientnetv2_keras import training
from efficientnetv2_keras.hparams import load_config
from efficientnetv2_keras.models import WeightsMismatchError


def _np(x):
    return ops.convert_to_numpy(x)


def _tiny_model(spec, classes=3, size=32):
    return ev2.build_model(spec, classes=classes, input_shape=(size, size, 3))


def _data(n=16, classes=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % classes, classes).astype("float32")
    return x, y


# ------------------------------------------------------------------------------------------------
# Learning-rate schedules.
# ------------------------------------------------------------------------------------------------


def test_scaled_learning_rate():
    assert training.scaled_learning_rate(0.016, 4096) == pytest.approx(0.256)  # §5.1
    assert training.scaled_learning_rate(0.0005, 512) == pytest.approx(0.001)  # §5.3


def test_exponential_schedule_values():
    # The ImageNet recipe at batch 4096 with 100 steps per epoch: warmup 500 steps to 0.256, then
    # 0.97 ** floor(step / 240), counted from step 0 (the released formula).
    config = load_config("imagenet_s")
    schedule = training.build_lr_schedule(config, steps_per_epoch=100, total_steps=35_000)
    lr = lambda step: float(_np(schedule(step)))  # noqa: E731
    assert lr(0) == 0.0
    assert lr(250) == pytest.approx(0.128)
    assert lr(499) == pytest.approx(0.256 * 499 / 500)
    assert lr(500) == pytest.approx(0.256 * 0.97**2)  # warmup end: 500 // 240 = 2 decays already
    assert lr(719) == pytest.approx(0.256 * 0.97**2)  # just before a decay step (720 = 3 x 240)
    assert lr(720) == pytest.approx(0.256 * 0.97**3)  # just after
    assert lr(34_999) == pytest.approx(0.256 * 0.97 ** (34_999 // 240), rel=1e-5)


def test_cosine_and_constant_schedule_values():
    config = load_config("finetune_cifar10")  # lr 0.001, 1 warmup epoch, cosine over all steps
    schedule = training.build_lr_schedule(config, steps_per_epoch=100, total_steps=10_000)
    lr = lambda step: float(_np(schedule(step)))  # noqa: E731
    assert lr(0) == 0.0 and lr(50) == pytest.approx(0.0005)
    assert lr(100) == pytest.approx(0.0005 * (1 + math.cos(math.pi * 100 / 10_000)))
    assert lr(5_000) == pytest.approx(0.0005)
    assert lr(10_000) == pytest.approx(0.0, abs=1e-9)  # cosine end
    assert lr(12_000) == pytest.approx(0.0, abs=1e-9)

    floored = load_config("finetune_cifar10", ["train.lr_min=0.0001"])  # floor per 256 -> 0.0002
    assert float(_np(training.build_lr_schedule(floored, 100, 10_000)(9_999))) == pytest.approx(0.0002)

    constant = load_config("finetune_cifar10", ["train.lr_schedule=constant"])
    schedule = training.build_lr_schedule(constant, 100, 10_000)
    assert [float(_np(schedule(s))) for s in (0, 50, 100, 9_999)] == pytest.approx([0, 0.0005, 0.001, 0.001])


def test_schedule_serializes():
    schedule = training.build_lr_schedule(load_config("imagenet_s"), 100, 35_000)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, training.LinearWarmup)
    for step in (0, 300, 721, 30_000):
        assert float(_np(restored(step))) == pytest.approx(float(_np(schedule(step))))
    constant = training.constant_with_warmup(0.1, 10)
    assert keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(constant)).after_warmup == 0.1


# ------------------------------------------------------------------------------------------------
# Optimizer and weight decay.
# ------------------------------------------------------------------------------------------------


def test_build_optimizer_is_the_recipe_rmsprop(tiny_spec):
    model = _tiny_model(tiny_spec)
    optimizer = training.build_optimizer(load_config("imagenet_s"), 0.1, model)
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert (optimizer.rho, optimizer.momentum, optimizer.epsilon) == (0.9, 0.9, 1e-3)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.9999 and optimizer.ema_warmup
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is training.RMSprop and restored.ema_warmup
    assert restored.l2_weight_decay == optimizer.l2_weight_decay == 1e-5  # the coupled L2 term (§5.1)
    for name, cls in (("sgd", keras.optimizers.SGD), ("momentum", keras.optimizers.SGD),
                      ("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW)):
        built = training.build_optimizer(load_config(None, [f"train.optimizer={name}"]), 0.1, model)
        assert isinstance(built, cls)
    no_ema = training.build_optimizer(load_config(None, ["train.ema_decay=0", "train.weight_decay=0"]), 0.1)
    assert not no_ema.use_ema


def _assert_only_kernels_decayed(model, before, factor):
    decayed, excluded = training.split_weight_decay_variables(model)
    assert decayed and excluded
    for variable in decayed:
        np.testing.assert_allclose(_np(variable), before[id(variable)] * factor, rtol=1e-5, atol=1e-7,
                                   err_msg=variable.path)
    for variable in excluded:
        np.testing.assert_array_equal(_np(variable), before[id(variable)], err_msg=variable.path)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_decay_excludes_batchnorm_and_biases(tiny_spec, optimizer):
    """One step where only weight decay acts (zero data gradient, lr 1): kernels shrink, nothing else moves."""
    model = _tiny_model(tiny_spec)
    decayed, excluded = training.split_weight_decay_variables(model)
    names = lambda vs: {v.path.split("/")[-1] for v in vs}  # noqa: E731
    assert names(decayed) == {"kernel"}  # conv, depthwise, SE and dense kernels
    assert names(excluded) == {"gamma", "beta", "bias"}  # every BN parameter and bias
    assert any("dwconv" in v.path for v in decayed) and any("predictions" in v.path for v in decayed)
    assert any("se_reduce/bias" in v.path for v in excluded) and any("predictions/bias" in v.path for v in excluded)

    wd = 0.01
    config = load_config(None, [f"train.optimizer={optimizer}", f"train.weight_decay={wd}", "train.ema_decay=0"])
    opt = training.build_optimizer(config, 1.0, model)
    # Eager: the optimizer's update is the same code; tracing would only cost time.
    model.compile(optimizer=opt, loss=lambda y_true, y_pred: 0.0 * ops.sum(y_pred), run_eagerly=True)
    assert not model.losses  # nothing is added to the reported loss
    expected = sum(wd * 0.5 * float(np.sum(_np(v).astype("float64") ** 2)) for v in decayed)
    assert training.weight_decay_loss(model, wd) == pytest.approx(expected, rel=1e-9)
    before = {id(v): _np(v).copy() for v in model.trainable_weights}
    x, y = _data(8)
    model.train_on_batch(x, y)
    _assert_only_kernels_decayed(model, before, 1.0 - wd)  # SGD: w - lr * wd * w; AdamW the same


def test_l2_in_the_gradient_is_the_released_loss_term(tiny_spec):
    """RMSProp with l2_weight_decay takes the same steps as RMSProp on CE + wd * sum(w^2) / 2 (the released
    code's loss term): the objective is unchanged, while the reported loss is the cross-entropy alone."""
    wd, (x, y) = 0.05, _data(8)

    def two_steps(coupled):
        keras.utils.set_random_seed(3)
        model = ev2.build_model(tiny_spec, classes=3, input_shape=(32, 32, 3), dropout_rate=0.0, survival_prob=1.0)
        if coupled:
            optimizer = training.RMSprop(learning_rate=0.01, momentum=0.9, epsilon=1e-3, l2_weight_decay=wd)
        else:  # the loss term, as a Keras regularizer: l2 * sum(w^2) with l2 = wd / 2
            optimizer = keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.9, epsilon=1e-3)
            for variable in training.split_weight_decay_variables(model)[0]:
                variable.regularizer = keras.regularizers.L2(wd / 2)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", run_eagerly=True)
        l2_before = training.weight_decay_loss(model, wd)
        losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)]
        return model, losses, l2_before

    coupled, coupled_losses, l2_before = two_steps(True)
    reference, reference_losses, _ = two_steps(False)
    for a, b in zip(coupled.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    assert reference_losses[0] - coupled_losses[0] == pytest.approx(l2_before, rel=1e-4)


def test_reported_loss_is_the_cross_entropy_and_the_l2_term_is_logged_apart(tiny_spec):
    """At init: `loss` (evaluate, fit, val_loss) is the cross-entropy of the predictions; `l2_loss` is
    wd * sum(w^2) / 2 over the decayed kernels, in the epoch logs."""
    wd = 0.5  # large, so an L2 term hidden in the loss could not go unnoticed
    config = load_config(None, [f"train.weight_decay={wd}", "train.ema_decay=0", "train.label_smoothing=0.1"])
    keras.utils.set_random_seed(0)
    model = _tiny_model(tiny_spec)
    training.compile_from_config(model, config, steps_per_epoch=1, total_steps=10)  # warmup: lr 0 at step 0
    model.run_eagerly = True  # the same loss and metrics code; tracing would only cost time
    x, y = _data(16)

    def cross_entropy():
        probabilities = model.predict(x, verbose=0).astype("float64")
        return float(np.mean(-((y * 0.9 + 0.1 / 3) * np.log(probabilities)).sum(-1)))

    decayed, _ = training.split_weight_decay_variables(model)
    l2 = wd * 0.5 * sum(float(np.sum(_np(v).astype("float64") ** 2)) for v in decayed)
    initial = cross_entropy()
    assert l2 > 10 * initial

    assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(initial, rel=1e-4)
    history = model.fit(x, y, batch_size=16, epochs=1, validation_data=(x, y), verbose=0,
                        callbacks=[training.LogL2Loss()])
    # lr was 0: the same kernels (the step moved the BN statistics only).
    assert history.history["val_loss"][0] == pytest.approx(cross_entropy(), rel=1e-4)
    assert history.history["l2_loss"][0] == pytest.approx(l2, rel=1e-6)
    assert history.history["loss"][0] < 3 * initial  # the training loss is a cross-entropy too


# ------------------------------------------------------------------------------------------------
# EMA.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ema_warmup", [True, False])
def test_ema_decay_ramp(ema_warmup):
    """t-th update uses min(decay, (1+t)/(10+t)) (the released TF1 EMA) or Keras' fixed decay."""
    variable = keras.Variable(np.zeros((2,), "float32"))
    optimizer = training.SGD(learning_rate=1.0, use_ema=True, ema_momentum=0.99, ema_warmup=ema_warmup)
    average, values = None, []
    for step in range(1, 8):
        optimizer.apply_gradients([(ops.convert_to_tensor(np.full((2,), -float(step), "float32")), variable)])
        value = _np(variable)[0]
        values.append(value)
        decay = 0.0 if step == 1 else (min(0.99, (1 + step) / (10 + step)) if ema_warmup else 0.99)
        average = value if average is None else decay * average + (1 - decay) * value
        assert _np(optimizer._model_variables_moving_average[0])[0] == pytest.approx(average, rel=1e-5)
    assert values == pytest.approx(np.cumsum(np.arange(1, 8)))


def test_ema_weights_are_evaluated_and_saved(tiny_spec, tmp_path):
    keras.utils.set_random_seed(0)
    model = _tiny_model(tiny_spec)
    config = load_config(None, ["train.optimizer=momentum", "train.ema_decay=0.9", "train.weight_decay=0",
                                "train.label_smoothing=0"])
    model.compile(optimizer=training.build_optimizer(config, 0.05, model), loss=training.build_loss(config))
    x, y = _data(16)

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.model_weights, self.averages = [], []

        def on_epoch_end(self, epoch, logs=None):
            pairs = training.ema_variables(self.model)
            self.model_weights.append([_np(v).copy() for v, _ in pairs])
            self.averages.append([_np(a).copy() for _, a in pairs])

    inside, outside = Probe(), Probe()  # inside: sees what checkpoints see; outside: what training uses
    last = keras.callbacks.ModelCheckpoint(str(tmp_path / "last.weights.h5"), save_weights_only=True)
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"), save_weights_only=True,
                                           save_best_only=True, monitor="val_loss")
    ema_callback = training.EMACallback([last, best, inside])
    history = model.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), verbose=0,
                        callbacks=[ema_callback, outside])

    for epoch in range(3):
        raw, ema = outside.model_weights[epoch], outside.averages[epoch]
        assert max(float(np.max(np.abs(r - e))) for r, e in zip(raw, ema)) > 1e-4  # EMA != raw in training
        for seen, average in zip(inside.model_weights[epoch], ema):
            np.testing.assert_array_equal(seen, average)  # checkpoint callbacks saw the EMA weights
    # Training continued on raw weights: they changed between epochs, independently of the swaps.
    assert any(float(np.max(np.abs(a - b))) > 0 for a, b in zip(outside.model_weights[0], outside.model_weights[1]))

    # After fit Keras has put the EMA weights into the model; the last checkpoint holds exactly them.
    final = [_np(v) for v, _ in training.ema_variables(model)]
    for value, average in zip(final, outside.averages[-1]):
        np.testing.assert_array_equal(value, average)
    restored = _tiny_model(tiny_spec)
    restored.load_weights(str(tmp_path / "last.weights.h5"))
    for a, b in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "best.weights.h5").exists()

    # Validation inside fit used the EMA weights: same loss as evaluating the EMA model now ...
    ema_loss = model.evaluate(x, y, batch_size=8, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(ema_loss, rel=1e-5)
    # ... and not the raw weights' loss.
    for (variable, _), raw in zip(training.ema_variables(model), outside.model_weights[-1]):
        variable.assign(raw)
    raw_loss = model.evaluate(x, y, batch_size=8, verbose=0)
    assert abs(raw_loss - ema_loss) > 1e-6

    # The context manager swaps exactly and restores; apply_ema_weights makes it permanent.
    raw = [_np(v).copy() for v, _ in training.ema_variables(model)]
    ema = [_np(a).copy() for _, a in training.ema_variables(model)]
    assert training.max_ema_difference(model) > 1e-4
    with training.ema_weights(model):
        for (variable, _), expected in zip(training.ema_variables(model), ema):
            np.testing.assert_array_equal(_np(variable), expected)
        assert model.evaluate(x, y, batch_size=8, verbose=0) == pytest.approx(ema_loss, rel=1e-5)
    for (variable, average), r, e in zip(training.ema_variables(model), raw, ema):
        np.testing.assert_array_equal(_np(variable), r)
        np.testing.assert_array_equal(_np(average), e)
    training.apply_ema_weights(model)
    assert training.max_ema_difference(model) == 0.0
    with pytest.raises(ValueError, match="use_ema"):
        training.swap_ema_weights(keras.Sequential())  # not compiled: no EMA to swap


def test_ema_averages_batch_norm_statistics_when_asked(tiny_spec, tmp_path):
    """train.ema_bn_statistics: the BN moving statistics are averaged in the train step with the weights'
    decay and ramp; validation, checkpoints and the model after fit use the averages."""
    from efficientnetv2_keras.training.callbacks import BestAndLastCheckpoint

    def config(average):
        return load_config(None, ["train.optimizer=momentum", "train.ema_decay=0.9", "train.weight_decay=0",
                                  "train.label_smoothing=0", f"train.ema_bn_statistics={str(average).lower()}"])

    assert training.build_optimizer(config(False), 0.05, _tiny_model(tiny_spec)).ema_statistics == []
    keras.utils.set_random_seed(0)
    model = _tiny_model(tiny_spec)
    optimizer = training.build_optimizer(config(True), 0.05, model)
    statistics = training.batch_norm_statistics(model)
    assert [id(v) for v in optimizer.ema_statistics] == [id(v) for v in statistics]
    assert {v.path.split("/")[-1] for v in statistics} == {"moving_mean", "moving_variance"}
    model.compile(optimizer=optimizer, loss=training.build_loss(config(True)))
    bn = model.get_layer("top_bn")
    raw_means = []  # top_bn's moving mean after every step, as training updates it

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw_means.append(_np(bn.moving_mean).copy())

    x, y = _data(16)
    checkpoint = BestAndLastCheckpoint(str(tmp_path))
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0,
                        callbacks=[training.EMACallback([checkpoint]), Record()])
    expected = raw_means[0]  # the first step copies, then min(0.9, (1 + t) / (10 + t))
    for t, value in enumerate(raw_means[1:], start=2):
        decay = min(0.9, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * value
    # After fit the model holds the averaged statistics (and they are not the raw ones).
    np.testing.assert_allclose(_np(bn.moving_mean), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(_np(bn.moving_mean) - raw_means[-1]).max() > 1e-4
    # The last epoch's validation ran with them, and last.keras holds them.
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(x, y, batch_size=4, verbose=0), rel=1e-5)
    saved = keras.models.load_model(str(tmp_path / "last.keras"))
    np.testing.assert_allclose(_np(saved.get_layer("top_bn").moving_mean), expected, rtol=1e-5, atol=1e-6)


def test_optimizer_state_loads_with_and_without_averaged_statistics(tiny_spec, tmp_path):
    """A compiled .keras file restores its weight averages even when the loader does not average BN
    statistics (the saved statistic averages are then left out, with a warning), and an optimizer state
    saved without statistic averages loads into one that has them (they start from the statistics)."""
    x, y = _data(8)

    def trained(average, steps=2):
        keras.utils.set_random_seed(0)
        model = _tiny_model(tiny_spec)
        config = load_config(None, ["train.optimizer=momentum", "train.ema_decay=0.9", "train.weight_decay=0",
                                    f"train.ema_bn_statistics={str(average).lower()}"])
        model.compile(optimizer=training.build_optimizer(config, 0.1, model), loss="categorical_crossentropy",
                      run_eagerly=True)
        for _ in range(steps):
            model.train_on_batch(x, y)
        return model

    averaged = trained(True)
    averaged.save(str(tmp_path / "compiled.keras"))
    with pytest.warns(UserWarning, match="BatchNorm-statistic averages were not restored"):
        loaded = keras.models.load_model(str(tmp_path / "compiled.keras"))
    for (_, expected), (_, restored) in zip(training.ema_variables(averaged)[: len(averaged.trainable_variables)],
                                            training.ema_variables(loaded)):
        np.testing.assert_array_equal(_np(restored), _np(expected))

    plain = trained(False, steps=3)  # other averages than the target's own
    plain.save_weights(str(tmp_path / "plain.weights.h5"))
    target = trained(True)
    target.load_weights(str(tmp_path / "plain.weights.h5"))
    pairs = training.ema_variables(target)
    for (_, expected), (_, restored) in zip(training.ema_variables(plain), pairs):
        np.testing.assert_array_equal(_np(restored), _np(expected))
    for statistic, average in target.optimizer.ema_statistic_pairs():
        np.testing.assert_array_equal(_np(average), _np(statistic))


def test_export_reads_the_ema_through_a_loss_scale_optimizer(tiny_spec):
    """Under mixed_float16 compile wraps the optimizer in a LossScaleOptimizer; export still finds the
    averages (weights and BN statistics) through the one lookup of training/ema.py."""
    from efficientnetv2_keras.export import common

    previous = keras.mixed_precision.global_policy().name
    try:
        training.configure_mixed_precision("mixed_float16")
        keras.utils.set_random_seed(0)
        model = _tiny_model(tiny_spec)
        config = load_config(None, ["train.optimizer=momentum", "train.ema_decay=0.5", "train.weight_decay=0"])
        model.compile(optimizer=training.build_optimizer(config, 0.2, model), loss=training.build_loss(config),
                      run_eagerly=True)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        x, y = _data(8)
        for _ in range(3):
            model.train_on_batch(x, y)
        mapping = common.ema_state_mapping(model, use_ema=True)
        mapped = {id(v) for v, _ in mapping}
        assert {id(v) for v in model.trainable_variables} <= mapped
        assert {id(v) for v in training.batch_norm_statistics(model)} <= mapped
        assert [id(v) for v, _ in common.ema_state_mapping(model, "auto")] == [id(v) for v, _ in mapping]
        served = common.keras_outputs(model, x, mapping)  # what every export traces
        raw = common.keras_outputs(model, x)
        with training.ema_weights(model):
            averaged = common.keras_outputs(model, x)
        np.testing.assert_allclose(served, averaged, atol=2e-3)
        assert np.abs(served - raw).max() > 1e-2
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_ema_callback_rejects_batch_checkpoints():
    with pytest.raises(ValueError, match="save_freq"):
        training.EMACallback([keras.callbacks.ModelCheckpoint("x.weights.h5", save_weights_only=True, save_freq=5)])


# ------------------------------------------------------------------------------------------------
# Losses and metrics.
# ------------------------------------------------------------------------------------------------


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_21k_softmax_loss_on_multi_hot_labels():
    logits = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4]], "float32")
    multi_hot = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], "float32")
    probs = _softmax(logits)
    # §5.2: normalize the labels to sum 1, then softmax cross-entropy.
    expected = np.mean([-(0.5 * np.log(probs[0, 0]) + 0.5 * np.log(probs[0, 2])), -np.log(probs[1, 1])])
    config = load_config("imagenet21k_s")
    loss = training.build_loss(config)
    assert isinstance(loss, training.MultiLabelSoftmaxCrossEntropy)
    assert float(_np(loss(multi_hot, ops.softmax(logits)))) == pytest.approx(expected, rel=1e-5)
    normalized = multi_hot / multi_hot.sum(-1, keepdims=True)  # what the 21k pipeline emits
    assert float(_np(loss(normalized, ops.softmax(logits)))) == pytest.approx(expected, rel=1e-5)
    from_logits = training.MultiLabelSoftmaxCrossEntropy(from_logits=True)
    assert float(_np(from_logits(multi_hot, logits))) == pytest.approx(expected, rel=1e-5)
    # Label smoothing is applied to the normalized target.
    smoothed = training.MultiLabelSoftmaxCrossEntropy(from_logits=True, label_smoothing=0.1)
    target = normalized * 0.9 + 0.1 / 4
    expected_smoothed = np.mean(-(target * np.log(probs)).sum(-1))
    assert float(_np(smoothed(multi_hot, logits))) == pytest.approx(expected_smoothed, rel=1e-5)

    # Sigmoid variant: per-class binary cross-entropy, mean over classes.
    sigmoid = training.build_loss(load_config("imagenet21k_s", ["train.loss=sigmoid", "data.label_format=multi_hot"]))
    p = 1 / (1 + np.exp(-logits))
    bce = -(multi_hot * np.log(p) + (1 - multi_hot) * np.log(1 - p)).mean()
    assert float(_np(sigmoid(multi_hot, ops.sigmoid(logits)))) == pytest.approx(bce, rel=1e-4)


def test_single_label_loss_is_label_smoothed_keras_cce():
    loss = training.build_loss(load_config("imagenet_s"))
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    assert loss.get_config()["label_smoothing"] == 0.1


def test_precision_and_recall_at_k_hand_example():
    y_true = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], "float32")
    y_pred = np.array([[0.5, 0.3, 0.1, 0.05, 0.05], [0.1, 0.2, 0.3, 0.25, 0.15]], "float32")
    # top-1: {0} (hit), {2} (miss); top-2: {0, 1} (1 hit of 2 labels), {2, 3} (1 hit of 1 label).
    expected = {"precision_at_1": 0.5, "precision_at_2": 0.5, "recall_at_1": 0.25, "recall_at_2": 0.75}
    for metric in (training.PrecisionAtK(1), training.PrecisionAtK(2), training.RecallAtK(1), training.RecallAtK(2)):
        metric.update_state(y_true, y_pred)
        assert float(_np(metric.result())) == pytest.approx(expected[metric.name]), metric.name
    weighted = training.PrecisionAtK(1)
    weighted.update_state(y_true, y_pred, sample_weight=np.array([3.0, 1.0]))
    assert float(_np(weighted.result())) == pytest.approx(0.75)
    restored = training.PrecisionAtK.from_config(training.PrecisionAtK(5).get_config())
    assert restored.k == 5 and restored.name == "precision_at_5"
    names = [m.name for m in training.build_metrics(load_config("imagenet21k_s"), num_classes=21_843)]
    assert names == ["accuracy", "top5_accuracy", "precision_at_1", "precision_at_5", "recall_at_1", "recall_at_5"]
    assert training.default_monitor(load_config("imagenet21k_s")) == "val_precision_at_1"
    assert training.default_monitor(load_config("imagenet_s")) == "val_accuracy"


# ------------------------------------------------------------------------------------------------
# Strategy and mixed precision.
# ------------------------------------------------------------------------------------------------


def test_get_strategy_on_this_machine():
    cpu = training.get_strategy("cpu")
    assert isinstance(cpu, tf.distribute.OneDeviceStrategy) and cpu.num_replicas_in_sync == 1
    auto = training.get_strategy("auto")  # no TPU, no GPU here: the default strategy, quickly
    assert not training.is_tpu_strategy(auto) and auto.num_replicas_in_sync == 1
    assert training.default_mixed_precision(auto) == "float32"
    assert training.default_mixed_precision(cpu) == "float32"
    assert training.resolve_mixed_precision("auto", cpu) == "float32"
    assert training.resolve_mixed_precision("mixed_bfloat16", cpu) == "mixed_bfloat16"
    with pytest.raises(RuntimeError, match="no TPU was found"):
        training.get_strategy("tpu")
    with pytest.raises(ValueError, match="Unknown strategy 'tpus'"):
        training.get_strategy("tpus")
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(RuntimeError, match="no GPU"):
            training.get_strategy("gpus")


def test_batch_size_helpers():
    strategy = training.get_strategy("cpu")
    assert training.per_replica_batch_size(64, strategy) == 64
    assert training.global_batch_size(16, strategy) == 16
    dataset = training.distribute_dataset(
        tf.distribute.get_strategy(),
        lambda ctx: tf.data.Dataset.range(10).batch(ctx.get_per_replica_batch_size(4)),
    )
    assert [len(b) for b in dataset] == [4, 4, 2]


def test_mixed_float16_compiles_with_loss_scaling(tiny_spec):
    previous = keras.mixed_precision.global_policy().name
    try:
        assert training.configure_mixed_precision("mixed_float16") == "mixed_float16"
        model = _tiny_model(tiny_spec)
        config = load_config(None, ["train.ema_decay=0.9"])
        optimizer = training.build_optimizer(config, 0.01, model)
        model.compile(optimizer=optimizer, loss=training.build_loss(config), run_eagerly=True)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.optimizer.inner_optimizer is optimizer
        assert training.ema_optimizer(model) is optimizer  # EMA helpers see through the wrapper
        x, y = _data(8)
        model.train_on_batch(x, y)
        with training.ema_weights(model):
            assert np.isfinite(model.predict_on_batch(x)).all()
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ------------------------------------------------------------------------------------------------
# Finetuning.
# ------------------------------------------------------------------------------------------------


def test_min_steps_sets_the_epochs():
    assert training.epochs_for_min_steps(15, 10_000, 97) == 104  # CIFAR-10 at batch 512
    assert training.epochs_for_min_steps(15, 10_000, 2_502) == 15  # ImageNet: epochs dominate
    assert training.epochs_for_min_steps(5, 0, 10) == 5
    assert training.training_steps(load_config("finetune_cifar10"), 50_000) == (97, 104, 97 * 104)
    assert training.training_steps(load_config("imagenet_s"), 1_281_167) == (312, 350, 312 * 350)
    with pytest.raises(ValueError, match="fewer than one batch"):
        training.training_steps(load_config("imagenet_s"), 100)


def test_load_pretrained_skips_the_head(tiny_spec, tmp_path):
    source = ev2.build_model(tiny_spec, classes=5)
    weights_path = str(tmp_path / "pretrained.weights.h5")
    source.save_weights(weights_path)
    keras_path = str(tmp_path / "pretrained.keras")
    source.save(keras_path)
    for path in (weights_path, keras_path):
        target = _tiny_model(tiny_spec, classes=3)
        head_before = [w.copy() for w in target.get_layer("predictions").get_weights()]
        training.load_pretrained(target, path, skip_head=True, spec=tiny_spec)
        np.testing.assert_array_equal(_np(target.get_layer("stem_conv").kernel),
                                      _np(source.get_layer("stem_conv").kernel))
        np.testing.assert_array_equal(_np(target.get_layer("top_bn").moving_variance),
                                      _np(source.get_layer("top_bn").moving_variance))
        for before, after in zip(head_before, target.get_layer("predictions").get_weights()):
            np.testing.assert_array_equal(before, after)
    with pytest.raises(WeightsMismatchError):
        training.load_pretrained(_tiny_model(tiny_spec, classes=3), weights_path, skip_head=False, spec=tiny_spec)
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        training.load_pretrained(_tiny_model(tiny_spec), str(tmp_path / "missing.weights.h5"), spec=tiny_spec)


def test_compile_from_config_trains_one_step(tiny_spec):
    config = load_config("digits_demo", ["model.name=b0"])
    model = _tiny_model(tiny_spec, classes=10)
    optimizer = training.compile_from_config(model, config, steps_per_epoch=2, total_steps=4)
    model.run_eagerly = True  # wiring only
    assert isinstance(optimizer, keras.optimizers.Adam) and optimizer.ema_momentum == 0.99
    assert optimizer.l2_weight_decay == 1e-5 and not model.losses  # weight decay in the gradient, not the loss
    x, y = _data(8, classes=10)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) >= {"loss", "accuracy", "top5_accuracy"}
