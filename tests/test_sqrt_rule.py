"""The square-root scaling rule in full (Malladi et al. 2022): per stage of k-times the base batch, RMSprop,
Adam and AdamW train with LR x sqrt(k), 1 - beta x k, epsilon / sqrt(k) (RMSprop: / k) and decoupled weight
decay x sqrt(k); the values follow the optimizer step, so a restored step restores them."""

import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from efficientnetv2_keras.hparams import load_config
from efficientnetv2_keras.progressive import progressive_schedule
from efficientnetv2_keras.training import optimizers
from efficientnetv2_keras.training.optimizers import build_optimizer
from efficientnetv2_keras.training.schedules import (ProgressLR, TrainingProgress, build_lr_schedule,
                                                     constant_with_warmup)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, RATIOS = [3, 2, 4], [4.0, 2.0, 1.0]  # stage i: steps[i] optimizer steps of ratios[i] x the base batch
LR = 0.01
# An optimizer step in each stage, and the stage's batch ratio.
STEP_RATIOS = [(0, 4.0), (2, 4.0), (3, 2.0), (4, 2.0), (5, 1.0), (20, 1.0)]


def _schedule(rule):
    scales = [r ** 0.5 for r in RATIOS] if rule == "sqrt" else RATIOS
    return ProgressLR(constant_with_warmup(LR, 0), STEPS, RATIOS, scales, rule=rule)


def _values_at(optimizer, step):
    if not optimizer.built:
        optimizer.build([keras.Variable(np.zeros(2, "float32"))])
    optimizer.iterations.assign(step)
    return {name: float(keras.ops.convert_to_numpy(value))
            for name, value in optimizer.step_values(optimizer.learning_rate).items()}


def _scaled_decay(decay, ratio):
    return max(1 - ratio * (1 - decay), min(decay, 0.5))


def _product_of_betas(beta, steps_taken):
    """prod over the first `steps_taken` steps of their stage's scaled beta (the last stage runs on)."""
    product, start = 1.0, 0
    for index, (length, ratio) in enumerate(zip(STEPS, RATIOS)):
        taken = steps_taken - start if index == len(STEPS) - 1 else min(steps_taken - start, length)
        product *= _scaled_decay(beta, ratio) ** max(0, taken)
        start += length
    return product


@pytest.mark.parametrize("step, ratio", STEP_RATIOS)
def test_adam_per_stage_lr_betas_epsilon_and_bias_corrections(step, ratio):
    values = _values_at(optimizers.Adam(_schedule("sqrt"), beta_1=0.9, beta_2=0.999, epsilon=1e-3), step)
    assert values["learning_rate"] == pytest.approx(LR * math.sqrt(ratio), rel=1e-6)
    assert values["beta_1"] == pytest.approx(_scaled_decay(0.9, ratio), rel=1e-6)  # 0.6, 0.8, 0.9
    assert values["beta_2"] == pytest.approx(1 - ratio * 0.001, rel=1e-6)  # 0.996, 0.998, 0.999
    assert values["epsilon"] == pytest.approx(1e-3 / math.sqrt(ratio), rel=1e-6)
    # Adam's bias corrections 1 - prod(beta): the betas of the stages the steps were taken in.
    assert values["beta_1_power"] == pytest.approx(_product_of_betas(0.9, step + 1), rel=1e-5)
    assert values["beta_2_power"] == pytest.approx(_product_of_betas(0.999, step + 1), rel=1e-5)


@pytest.mark.parametrize("step, ratio", STEP_RATIOS)
def test_rmsprop_per_stage_rho_and_epsilon_leave_momentum_alone(step, ratio):
    values = _values_at(optimizers.RMSprop(_schedule("sqrt"), rho=0.9, momentum=0.9, epsilon=1e-3), step)
    assert values["learning_rate"] == pytest.approx(LR * math.sqrt(ratio), rel=1e-6)
    assert values["rho"] == pytest.approx(_scaled_decay(0.9, ratio), rel=1e-6)
    assert values["epsilon"] == pytest.approx(1e-3 / ratio, rel=1e-6)  # under Keras' square root
    assert values["momentum"] == pytest.approx(0.9)


@pytest.mark.parametrize("step, ratio", STEP_RATIOS)
def test_adamw_decoupled_weight_decay_scales_by_sqrt_k_on_top_of_the_lr(step, ratio):
    values = _values_at(optimizers.AdamW(_schedule("sqrt"), weight_decay=0.05), step)
    assert values["weight_decay"] == pytest.approx(LR * math.sqrt(ratio) * 0.05 * math.sqrt(ratio), rel=1e-6)


def test_the_floor_keeps_a_decay_from_going_below_half():
    progress = TrainingProgress([1, 1], [16.0, 1.0], [4.0, 1.0], rule="sqrt")
    assert progress.square_root_rule_decay(0.9) == [0.5, 0.9]  # 1 - 16 x 0.1 < 0
    assert progress.square_root_rule_decay(0.3) == [0.3, 0.3]  # never above the unscaled decay
    assert progress.square_root_rule_decay(0.999) == pytest.approx([0.984, 0.999])


@pytest.mark.parametrize("step, ratio", STEP_RATIOS)
def test_the_linear_rule_leaves_betas_rho_and_epsilon_alone(step, ratio):
    adam = _values_at(optimizers.Adam(_schedule("linear"), beta_1=0.9, beta_2=0.999, epsilon=1e-3), step)
    assert adam["learning_rate"] == pytest.approx(LR * ratio, rel=1e-6)
    assert (adam["beta_1"], adam["beta_2"], adam["epsilon"]) == pytest.approx((0.9, 0.999, 1e-3), rel=1e-6)
    assert adam["beta_1_power"] == pytest.approx(0.9 ** (step + 1), rel=1e-5)
    rmsprop = _values_at(optimizers.RMSprop(_schedule("linear"), rho=0.9, epsilon=1e-3), step)
    assert (rmsprop["rho"], rmsprop["epsilon"]) == pytest.approx((0.9, 1e-3), rel=1e-6)
    sgd = _values_at(optimizers.SGD(_schedule("sqrt"), momentum=0.9), step)  # SGD has nothing else to scale
    assert sgd == pytest.approx({"learning_rate": LR * math.sqrt(ratio), "momentum": 0.9}, rel=1e-6)


def _recipe_optimizer(name):
    config = load_config(None, [f"train.optimizer={name}", "train.lr_warmup_epochs=0", "train.ema_decay=0.9",
                                "train.ema_bn_statistics=false"])
    progress = TrainingProgress(STEPS, RATIOS, [r ** 0.5 for r in RATIOS], rule="sqrt")
    return build_optimizer(config, build_lr_schedule(config, steps_per_epoch=1, total_steps=9, progress=progress))


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_a_resumed_or_reloaded_optimizer_gives_the_same_values(name):
    trained = _recipe_optimizer(name)
    variable = keras.Variable(np.ones(3, "float32"))
    trained.build([variable])
    for _ in range(4):  # into the second stage
        trained.apply([keras.ops.ones(3)], [variable])
    store = {}
    trained.save_own_variables(store)
    resumed = _recipe_optimizer(name)  # what the trainer builds on resume, then restores the state into
    resumed.build([keras.Variable(np.ones(3, "float32"))])
    resumed.load_own_variables(store)
    reloaded = keras.optimizers.deserialize(keras.optimizers.serialize(trained))  # the rule rides on its LR
    reloaded.build([keras.Variable(np.ones(3, "float32"))])
    reloaded.load_own_variables(store)
    assert reloaded.progress is None and reloaded.scaling_progress() is not None
    expected = _values_at(trained, 4)
    assert expected["epsilon"] < 1e-3  # a scaled stage
    assert _values_at(resumed, 4) == pytest.approx(expected) and _values_at(reloaded, 4) == pytest.approx(expected)


def _train(optimizer, steps=7):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    # Fixed weights, not a seeded initializer: the backends draw different random numbers from one seed.
    model.set_weights([np.linspace(-1, 1, 12, dtype="float32").reshape(4, 3), np.zeros(3, "float32")])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    for _ in range(steps):  # across both stage boundaries
        model.train_on_batch(rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 3, 8))
    return [w.numpy() for w in model.weights + optimizer.variables]


@pytest.mark.parametrize("make", [
    lambda **kw: optimizers.Adam(_schedule("sqrt"), epsilon=1e-3, l2_weight_decay=1e-2, **kw),
    lambda **kw: optimizers.AdamW(_schedule("sqrt"), weight_decay=0.05, **kw),
    lambda **kw: optimizers.RMSprop(_schedule("sqrt"), momentum=0.9, epsilon=1e-3, **kw),
    lambda **kw: optimizers.RMSprop(_schedule("sqrt"), epsilon=1e-3, **kw),
], ids=["adam", "adamw", "rmsprop", "rmsprop_no_momentum"])
def test_fused_scaled_updates_match_the_keras_ops_formulas(make):
    for fused, generic in zip(_train(make()), _train(make(fused=False))):
        np.testing.assert_allclose(fused, generic, rtol=2e-5, atol=1e-6)


def test_centered_rmsprop_and_amsgrad_refuse_the_rule_clearly():
    centered, amsgrad = optimizers.RMSprop(_schedule("sqrt"), centered=True), optimizers.Adam(_schedule("sqrt"), amsgrad=True)
    for optimizer in (centered, amsgrad):
        with pytest.raises(ValueError, match="progressive.lr_scaling=linear"):
            _values_at(optimizer, 0)


def test_the_schedule_table_names_what_the_rule_scales():
    kwargs = {"total_epochs": 350, "batch_size": 128, "batch_scaling": True}
    sqrt = progressive_schedule("s", "paper", lr_scaling="sqrt", **kwargs).table()
    assert "LR x sqrt(k)" in sqrt and "1 - beta x k" in sqrt and "epsilon / sqrt(k)" in sqrt
    assert "weight decay x sqrt(k)" in sqrt
    linear = progressive_schedule("s", "paper", lr_scaling="linear", **kwargs).table()
    assert "LR x k" in linear and "beta" not in linear and "epsilon" not in linear


JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "tests")
    import keras
    from test_sqrt_rule import _schedule, _train
    from efficientnetv2_keras.training import optimizers
    assert keras.backend.backend() == "jax"
    print(json.dumps([w.tolist() for w in _train(optimizers.Adam(_schedule("sqrt"), epsilon=1e-3))]))
    """
)


def test_the_rule_on_jax_matches_the_tensorflow_fused_updates():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jax_values = json.loads(result.stdout.strip().splitlines()[-1])
    for on_jax, on_tensorflow in zip(jax_values, _train(optimizers.Adam(_schedule("sqrt"), epsilon=1e-3))):
        np.testing.assert_allclose(on_jax, on_tensorflow, rtol=1e-4, atol=1e-6)
