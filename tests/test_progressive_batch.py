"""Progressive learning with a per-stage batch size (batch_scaling): the schedule, the stream, the
learning rate and EMA over training progress, and one trace for the whole run."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_keras as ev2
from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
from efficientnetv2_keras.progressive.schedule import scaled_batch_size
from efficientnetv2_keras.training.schedules import ProgressLR, TrainingProgress
from efficientnetv2_keras.training.tracing import train_function_traces


def test_batch_grows_as_the_image_shrinks_at_constant_activation_memory():
    schedule = progressive_schedule("s", "paper", total_epochs=350, batch_size=128, batch_scaling=True)
    # 128 * (300 / size)^2 rounded to a multiple of 8: 703 -> 704, 336.5 -> 336, 196.7 -> 200.
    assert [s.batch_size for s in schedule.stages] == [704, 336, 200, 128]
    assert [s.lr_scale for s in schedule.stages] == pytest.approx([5.5, 2.625, 1.5625, 1.0])
    # Each stage's range is its 87-88 epochs of data (Algorithm 1), trained in fewer, larger steps.
    assert [s.end - s.start for s in schedule.stages] == [87, 88, 87, 88]
    assert [schedule.passes(s) for s in schedule.stages] == [87, 88, 87, 88]
    assert schedule.total == 350 and schedule.batch_size == 128
    table = schedule.table()
    assert "batch | LR x" in table and "704 | 5.50" in table and "Goyal et al. 2017" in table
    # ImageNet at batch 128: 10,009 steps an epoch. Stage 1 trains 87 x 10,009 / 5.5 = 158,324 steps.
    laid_out = progressive_schedule("s", "paper", total_epochs=350, batch_size=128, batch_scaling=True,
                                    steps_per_epoch=10_009)
    layout = laid_out.fit_layout()
    assert layout.stage_steps[:3] == (158_324, 335_540, 557_301) and layout.steps_per_epoch == 10_009
    assert layout.epochs * layout.steps_per_epoch == sum(layout.stage_steps)
    # Fit epochs of 10,009 steps: the last stage takes the 220 steps' difference (0.03 % of its data).
    assert [laid_out.passes(s) for s in laid_out.stages] == pytest.approx([87, 88, 87, 88], rel=1e-3)
    assert "| steps |" in laid_out.table() and "158324 | 87.00" in laid_out.table()
    # Without batch_scaling every stage has the base batch and the usual lengths.
    plain = progressive_schedule("s", "paper", total_epochs=350, batch_size=128)
    assert [s.batch_size for s in plain.stages] == [128] * 4 and plain.total == 350
    assert "batch" not in progressive_schedule("s", "paper", total_epochs=350).table()


def test_scaled_batch_rounding_replicas_and_cap():
    assert scaled_batch_size(32, 32, 48) == 72 and scaled_batch_size(32, 40, 48) == 48
    # Half-way rounds up to the next multiple (not to an even one): 16 * (48 / 32)^2 = 36 -> 40.
    assert scaled_batch_size(16, 32, 48) == 40 and scaled_batch_size(8, 32, 48) == 16  # 18: the nearest is 16
    assert scaled_batch_size(32, 48, 48) == 32  # the largest stage keeps the base batch, even if not a multiple
    assert scaled_batch_size(30, 32, 48, num_replicas=3) == 72  # lcm(8, 3) = 24: 67.5 -> 72
    assert scaled_batch_size(128, 128, 300, max_batch_size=500) == 496
    assert scaled_batch_size(128, 290, 300) == 136  # never below the base batch
    schedule = progressive_schedule("b0", "paper", total_epochs=24, num_stages=3, image_size=(32, 48),
                                    batch_size=32, batch_scaling=True, max_batch_size=64, size_multiple=None)
    assert [s.batch_size for s in schedule.stages] == [64, 48, 32]


def test_batch_scaling_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="batch_scaling=True needs batch_size"):
        progressive_schedule("s", total_epochs=10, batch_scaling=True)
    with pytest.raises(ValueError, match="max_batch_size .* below batch_size"):
        progressive_schedule("s", total_epochs=10, batch_size=64, batch_scaling=True, max_batch_size=32)
    with pytest.raises(ValueError, match="does not combine with random_resize_every"):
        progressive_schedule("s", total_epochs=10, batch_size=64, batch_scaling=True, random_resize_every=2)
    with pytest.raises(ValueError, match="multiple of num_replicas"):
        progressive_schedule("s", total_epochs=10, batch_size=30, batch_scaling=True, num_replicas=4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        progressive_schedule("s", total_epochs=10, batch_size=0)


def test_training_progress_and_lr_follow_images_seen():
    # Stage 0: 4 steps of 4x the base batch; stage 1: 8 base steps. 24 base steps in all.
    progress = TrainingProgress([4, 8], [4.0, 1.0])
    assert progress.total_base_steps == 24
    steps = np.arange(0, 14, dtype="float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(progress.base_step(steps)),
                               [0, 4, 8, 12, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(progress.ratio(steps)), [4] * 4 + [1] * 10)
    # A linear decay over 24 base steps, times the batch ratio (linear scaling rule).
    base = keras.optimizers.schedules.PolynomialDecay(1.0, 24, end_learning_rate=0.0)
    lr = ProgressLR(base, [4, 8], [4.0, 1.0])
    values = keras.ops.convert_to_numpy(lr(steps[:12]))
    np.testing.assert_allclose(values[:4], [4 * (1 - p / 24) for p in (0, 4, 8, 12)], rtol=1e-6)
    np.testing.assert_allclose(values[4:], [1 - p / 24 for p in range(16, 24)], rtol=1e-6)
    restored = ProgressLR.from_config(lr.get_config())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(steps)), keras.ops.convert_to_numpy(lr(steps)))


def _id_dataset_fn(num_examples):
    """Stage pipelines at the stage's batch size whose labels are the example ids."""

    def dataset_fn(stage):
        ids = np.arange(num_examples)
        dataset = tf.data.Dataset.from_tensor_slices(ids).shuffle(num_examples, seed=stage.index)
        size = stage.image_size
        dataset = dataset.map(lambda i: (tf.fill((size, size, 3), tf.cast(i, tf.float32)), i % 4))
        return dataset.batch(stage.batch_size, drop_remainder=True)

    return dataset_fn


class _StepLog(keras.callbacks.Callback):
    """Per optimizer step: the batch size and image size the compiled step saw, and the learning rate."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_begin(self, batch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        recorder = self.model.get_layer("recorder")
        self.rows.append((int(recorder.batch.numpy()), int(recorder.height.numpy()), self._lr))


@keras.saving.register_keras_serializable(package="tests")
class ShapeRecorder(keras.layers.Layer):
    def build(self, input_shape):
        self.batch = self.add_weight(shape=(), initializer="zeros", trainable=False, name="batch")
        self.height = self.add_weight(shape=(), initializer="zeros", trainable=False, name="height")

    def call(self, inputs, training=False):
        if training:
            self.batch.assign(keras.ops.cast(keras.ops.shape(inputs)[0], "float32"))
            self.height.assign(keras.ops.cast(keras.ops.shape(inputs)[1], "float32"))
        return inputs


def test_a_stage_with_a_bigger_batch_sees_all_its_images_every_epoch_with_the_scaled_lr(tiny_spec):
    # 64 examples, base batch 8 at 64 px (8 steps an epoch); 32 px gets batch 8 * (64/32)^2 = 32.
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=8, num_stages=2, image_size=(32, 64),
                                    dropout_rate=None, batch_size=8, batch_scaling=True)
    assert [(s.batch_size, s.start, s.end) for s in schedule.stages] == [(32, 0, 4), (8, 4, 8)]
    steps_per_epoch = 64 // 8
    progressive = ProgressiveLearning(schedule, _id_dataset_fn(64), steps_per_epoch=steps_per_epoch, verbose=0)
    # 4 epochs of data at 4x the batch: 8 steps, one fit epoch; then 32 steps of the base batch.
    assert progressive.layout.stage_steps == (8, 32) and (progressive.epochs, progressive.steps_per_epoch) == (5, 8)

    # The stream: stage 0's one epoch is 8 steps of 32 = 4 passes, every example once in each pass.
    batches = [(int(x.shape[0]), int(x.shape[1]), [int(v) for v in x[:, 0, 0, 0]])
               for x, _ in progressive.dataset.take(8 + 32)]
    assert [(b, h) for b, h, _ in batches] == [(32, 32)] * 8 + [(8, 64)] * 32
    stage0 = [i for _, _, ids in batches[:8] for i in ids]
    for p in range(4):
        assert sorted(stage0[64 * p: 64 * (p + 1)]) == list(range(64))
    stage1 = [i for _, _, ids in batches[8:] for i in ids]
    for p in range(4):
        assert sorted(stage1[64 * p: 64 * (p + 1)]) == list(range(64))

    # Inside fit: every step runs (Keras would otherwise cut epochs to the first one's length), with
    # the learning rate x4 in the 4x batch stage, over training progress (linear decay over 32
    # epochs' worth of base steps = 8 * 8).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = ev2.build_model(tiny_spec, include_top=False, pooling="avg")(ShapeRecorder(name="recorder")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    progress = TrainingProgress.from_schedule(schedule, steps_per_epoch)
    assert progress.steps == [8, 32] and progress.total_base_steps == 64
    base = keras.optimizers.schedules.PolynomialDecay(0.1, 64, end_learning_rate=0.0)
    model.compile(optimizer=keras.optimizers.SGD(ProgressLR(base, progress.steps, progress.ratios)),
                  loss="sparse_categorical_crossentropy")
    log = _StepLog()
    model.fit(progressive.dataset, epochs=progressive.epochs, steps_per_epoch=steps_per_epoch,
              callbacks=[progressive, log], verbose=0)
    assert [(b, h) for b, h, _ in log.rows] == [(32, 32)] * 8 + [(8, 64)] * 32
    expected = [0.4 * (1 - 4 * k / 64) for k in range(8)] + [0.1 * (1 - (32 + k) / 64) for k in range(32)]
    np.testing.assert_allclose([lr for _, _, lr in log.rows], expected, rtol=1e-5, atol=1e-7)
    # One trace of the train step for the whole run, whatever the batch and image size.
    assert train_function_traces(model) == {"iterator": 1, "step": 1}


def test_one_pass_epochs_with_different_batch_counts_are_rejected(tiny_spec):
    # Keras learns an epoch's length from the first epoch when the dataset's length is unknown and
    # cuts longer epochs later on: one-pass stages must have the same number of batches.
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=8, num_stages=2, image_size=(32, 64),
                                    dropout_rate=None, batch_size=8, batch_scaling=True)
    with pytest.raises(ValueError, match=r"different numbers of batches.*steps_per_epoch"):
        ProgressiveLearning(schedule, _id_dataset_fn(64), verbose=0).dataset


def test_ema_decay_follows_training_progress():
    from efficientnetv2_keras.training.optimizers import SGD

    optimizer = SGD(0.1, use_ema=True, ema_momentum=0.9, ema_warmup=False)
    optimizer.progress = TrainingProgress([4, 8], [4.0, 1.0])
    momentum = [float(keras.ops.convert_to_numpy(optimizer.effective_ema_momentum(s))) for s in (0, 3, 4, 11)]
    np.testing.assert_allclose(momentum, [0.9 ** 4, 0.9 ** 4, 0.9, 0.9], rtol=1e-6)
    optimizer = SGD(0.1, use_ema=True, ema_momentum=0.99, ema_warmup=True)
    optimizer.progress = TrainingProgress([4, 8], [4.0, 1.0])
    # The ramp (1 + t) / (10 + t) counts base steps: step 1 of stage 0 ends at t = 8.
    value = float(keras.ops.convert_to_numpy(optimizer.effective_ema_momentum(1)))
    assert value == pytest.approx((9 / 18) ** 4, rel=1e-6)


def test_recipe_keys_for_batch_scaling_are_validated():
    from efficientnetv2_keras.hparams import ConfigError, load_config

    config = load_config("digits_demo", overrides=["progressive.batch_scaling=true", "progressive.max_batch_size=64"])
    assert config.progressive.batch_scaling and config.progressive.max_batch_size == 64
    with pytest.raises(ConfigError, match="max_batch_size \\(16\\) is below train.batch_size \\(32\\)"):
        load_config("digits_demo", overrides=["progressive.batch_scaling=true", "progressive.max_batch_size=16"])
    with pytest.raises(ConfigError, match="batch_scaling does not combine with progressive.random_resize_every"):
        load_config("digits_demo", overrides=["progressive.batch_scaling=true", "progressive.random_resize_every=2"])
    with pytest.raises(ConfigError, match="batch_scaling"):
        load_config("digits_demo", overrides=["progressive.batch_scaling=maybe"])


def test_the_square_root_rule_scales_the_lr_by_sqrt_of_the_batch_ratio_and_keeps_the_data():
    linear = progressive_schedule("s", "paper", total_epochs=350, batch_size=128, batch_scaling=True)
    sqrt = progressive_schedule("s", "paper", total_epochs=350, batch_size=128, batch_scaling=True,
                                lr_scaling="sqrt")
    # Same batches, same stage lengths and data; only the LR multiplier differs.
    assert [s.batch_size for s in sqrt.stages] == [s.batch_size for s in linear.stages] == [704, 336, 200, 128]
    assert [s.end - s.start for s in sqrt.stages] == [s.end - s.start for s in linear.stages]
    assert [s.batch_ratio for s in sqrt.stages] == pytest.approx([5.5, 2.625, 1.5625, 1.0])
    assert [s.lr_scale for s in sqrt.stages] == pytest.approx([5.5 ** 0.5, 2.625 ** 0.5, 1.25, 1.0])
    assert [sqrt.passes(s) for s in sqrt.stages] == [87, 88, 87, 88]
    assert "704 | 2.35" in sqrt.table() and "Malladi et al. 2022" in sqrt.table()
    with pytest.raises(ValueError, match="lr_scaling must be one of"):
        progressive_schedule("s", total_epochs=10, batch_size=64, batch_scaling=True, lr_scaling="cubic")
    # Progress counts images (batch ratio); the LR multiplies by the stage's lr_scale.
    progress = TrainingProgress.from_schedule(sqrt, steps_per_epoch=2)
    assert progress.ratios == pytest.approx([5.5, 2.625, 1.5625, 1.0])
    assert progress.lr_scales == pytest.approx([5.5 ** 0.5, 2.625 ** 0.5, 1.25, 1.0])
    base = keras.optimizers.schedules.PolynomialDecay(1.0, 24, end_learning_rate=0.0)
    lr = ProgressLR(base, [4, 8], [4.0, 1.0], [2.0, 1.0])
    steps = np.arange(0, 12, dtype="float32")
    values = keras.ops.convert_to_numpy(lr(steps))
    np.testing.assert_allclose(values[:4], [2 * (1 - p / 24) for p in (0, 4, 8, 12)], rtol=1e-6)
    np.testing.assert_allclose(values[4:], [1 - p / 24 for p in range(16, 24)], rtol=1e-6)
    restored = ProgressLR.from_config(lr.get_config())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(steps)), values)
    # A ProgressLR saved before lr_scales existed keeps the linear rule.
    old = {key: value for key, value in lr.get_config().items() if key != "lr_scales"}
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ProgressLR.from_config(old)(steps[:4])),
                               [4 * (1 - p / 24) for p in (0, 4, 8, 12)], rtol=1e-6)


def test_recipes_pick_the_lr_rule_by_optimizer_unless_told():
    from efficientnetv2_keras.hparams import ConfigError, load_config
    from efficientnetv2_keras.training.recipe import lr_scaling_rule, schedule_from_config

    def rule(*overrides):
        config = load_config("digits_demo", overrides=["progressive.batch_scaling=true", "progressive.size_multiple=16",
                                                        *overrides])
        schedule = schedule_from_config(config, config.train.epochs)
        assert schedule.lr_scaling == lr_scaling_rule(config)
        return schedule.lr_scaling, [round(s.lr_scale, 4) for s in schedule.stages]

    # digits_demo: Adam, batch 32 at 48 px; the first two stages train at 32 px (the middle one rounded
    # from 40 px, test_progressive_sizes.py), at batch 72 (ratio 2.25).
    assert rule() == ("sqrt", [1.5, 1.5, 1.0])
    for optimizer in ("rmsprop", "adamw"):
        assert rule(f"train.optimizer={optimizer}")[0] == "sqrt"
    for optimizer in ("sgd", "momentum"):
        assert rule(f"train.optimizer={optimizer}") == ("linear", [2.25, 2.25, 1.0])
    assert rule("progressive.lr_scaling=linear") == ("linear", [2.25, 2.25, 1.0])
    assert rule("train.optimizer=sgd", "progressive.lr_scaling=sqrt")[0] == "sqrt"
    with pytest.raises(ConfigError, match="progressive.lr_scaling must be one of \\['linear', 'sqrt'\\]"):
        load_config("digits_demo", overrides=["progressive.lr_scaling=quadratic"])


# -- each stage trains its own data, no more (fit_layout) ------------------------------------------


def test_each_batch_scaled_stage_trains_its_planned_data_within_2_percent():
    # 5 epochs of 8,000 images at batch 64 (125 steps each), 3 stages 32 -> 48 -> 64 px: batches 256, 112, 64.
    # Whole fit epochs per stage trained 4.00 + 1.75 + 2.00 = 7.75 epochs of data for 1 + 2 + 2.
    schedule = progressive_schedule("b0", "paper", total_epochs=5, num_stages=3, image_size=(32, 64), batch_size=64,
                                    batch_scaling=True, steps_per_epoch=125)
    assert [s.batch_size for s in schedule.stages] == [256, 112, 64]
    planned = [s.end - s.start for s in schedule.stages]
    assert planned == [1, 2, 2]
    data = [schedule.passes(s) for s in schedule.stages]
    assert data == pytest.approx(planned, rel=0.02) and sum(data) == pytest.approx(5, rel=0.01)
    layout = schedule.fit_layout()
    assert layout.stage_steps == (31, 143, 249) and (layout.epochs, layout.steps_per_epoch) == (3, 141)
    rows = [line for line in schedule.table().splitlines() if line.strip()[:1].isdigit()]
    assert [row.rsplit("|", 2)[1:] for row in rows] == [["    31 ", " 0.99"], ["   143 ", " 2.00"], ["   249 ", " 1.99"]]
    assert "One fit: 3 epochs of 141 steps (423 steps; an epoch of data is 125 steps of batch 64)" in schedule.table()
    # However many steps an epoch of data has, each stage trains its data within 2 % (from 100 steps an epoch,
    # where a stage of 1/4 epoch has 25 steps: half a step is 2 %), in epochs of about that many steps.
    for steps_per_epoch in range(100, 1000, 37):
        layout = schedule.fit_layout(steps_per_epoch)
        assert [layout.data(i) for i in range(3)] == pytest.approx(planned, rel=0.02), steps_per_epoch
        assert steps_per_epoch / 2 <= layout.steps_per_epoch <= 2 * steps_per_epoch
        assert layout.epochs * layout.steps_per_epoch == layout.total_steps


def test_validation_follows_the_data_of_the_layout():
    from efficientnetv2_keras.training.recipe import validation_epochs

    layout = progressive_schedule("b0", "paper", total_epochs=5, num_stages=3, image_size=(32, 64), batch_size=64,
                                  batch_scaling=True).fit_layout(125)
    # After fit epoch 1 (141 steps): 31 x 4 + 110 x 1.75 steps of batch 64 = 2.53 epochs of data; epoch 2: 4.11.
    assert layout.data_after(141) == pytest.approx((31 * 4 + 110 * 1.75) / 125)
    assert validation_epochs(layout, 1) == [1, 2, 3] and validation_epochs(layout, 3) == [2, 3]


def test_a_stage_starts_at_its_step_inside_a_fit_epoch(tiny_spec):
    # 64 examples, base batch 8 at 64 px (8 steps an epoch of data); 3 epochs of data: 1 at 32 px (batch
    # 32: 2 steps), then 2 at 64 px (16 steps). Fit: 2 epochs of 9 steps, stage 2 starting at step 3.
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=3, num_stages=2, image_size=(32, 64),
                                    dropout_rate=(0.0, 0.5), batch_size=8, batch_scaling=True)
    progressive = ProgressiveLearning(schedule, _id_dataset_fn(64), steps_per_epoch=8, verbose=0)
    assert progressive.layout.stage_steps == (2, 16) and (progressive.epochs, progressive.steps_per_epoch) == (2, 9)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = ev2.build_model(tiny_spec, include_top=False, pooling="avg")(ShapeRecorder(name="recorder")(inputs))
    x = ev2.AdjustableDropout(0.0, name="head_dropout")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    progress = TrainingProgress.from_schedule(schedule, 8)
    base = keras.optimizers.schedules.PolynomialDecay(0.1, 24, end_learning_rate=0.0)
    model.compile(optimizer=keras.optimizers.SGD(ProgressLR(base, progress.steps, progress.ratios)),
                  loss="sparse_categorical_crossentropy")
    log, rates = _StepLog(), []
    record_rate = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: rates.append(float(model.get_layer("head_dropout").rate)))
    history = model.fit(progressive.dataset, epochs=progressive.epochs, steps_per_epoch=progressive.steps_per_epoch,
                        callbacks=[progressive, log, record_rate], verbose=0)
    assert [(b, h) for b, h, _ in log.rows] == [(32, 32)] * 2 + [(8, 64)] * 16
    assert rates == [0.0] * 2 + [0.5] * 16  # the stage's dropout from its first step
    expected = [0.4 * (1 - 4 * k / 24) for k in range(2)] + [0.1 * (1 - (8 + k) / 24) for k in range(16)]
    np.testing.assert_allclose([lr for _, _, lr in log.rows], expected, rtol=1e-5, atol=1e-7)
    assert history.history["stage"] == [2, 2]  # the stage in effect at each epoch's end


def test_a_resumed_batch_scaled_recipe_reads_what_the_uninterrupted_run_would_have():
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.recipe import resolve_recipe

    # Base batch 16 at 64 px, 4 steps an epoch of data; stage 1 at 32 px has batch 64. 3 epochs of data:
    # stage 1 trains 1 step of 64, stage 2 8 steps of 16: fit runs 3 epochs of 3 steps, stage 2 from step 2.
    config = load_config("digits_demo", [
        "data.minival=null", "data.cache=false", "data.augment=none", "data.shuffle_buffer=8", "data.eval_size=32",
        "train.batch_size=16", "train.steps_per_epoch=4", "train.epochs=3", "progressive.num_stages=2",
        "progressive.image_size=[32,64]", "progressive.batch_scaling=true", "progressive.randaug_magnitude=[0,0]",
    ])

    def epochs_read(first_epoch):
        recipe = resolve_recipe(config)
        assert (recipe.fit_epochs, recipe.fit_steps_per_epoch, recipe.progress.steps) == (3, 3, [1, 8])
        train, callback = recipe.train_dataset(verbose=0)
        iterator, read = None, []
        for epoch in range(first_epoch, recipe.fit_epochs):
            callback.epoch.assign(epoch)  # what its on_epoch_begin does before Keras reads the epoch
            iterator = iterator or train.as_numpy_iterator()
            read.append([next(iterator) for _ in range(recipe.fit_steps_per_epoch)])
        return read

    uninterrupted = epochs_read(0)
    assert [[len(labels) for _, labels in epoch] for epoch in uninterrupted] == [[64, 16, 16], [16] * 3, [16] * 3]
    for restart in (1, 2):
        for expected, got in zip(uninterrupted[restart:], epochs_read(restart), strict=True):
            for (images, labels), (images_again, labels_again) in zip(expected, got, strict=True):
                np.testing.assert_array_equal(images, images_again)
                np.testing.assert_array_equal(labels, labels_again)


# -- the public callback scales the user's own learning rate ---------------------------------------


def _user_fit(tiny_spec, optimizer, lr_scaling="linear", epochs=None, callbacks=(), model_dir=None):
    """A fit of the 3-epochs-of-data, 2-stage batch-scaled schedule (stage 2 from step 3 of 18) with the
    user's own compiled optimizer; returns (the step log's learning rates, the ProgressiveLearning)."""
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=3, num_stages=2, image_size=(32, 64),
                                    dropout_rate=None, batch_size=8, batch_scaling=True, lr_scaling=lr_scaling)
    progressive = ProgressiveLearning(schedule, _id_dataset_fn(64), steps_per_epoch=8, verbose=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    x = ev2.build_model(tiny_spec, include_top=False, pooling="avg")(ShapeRecorder(name="recorder")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    log = _StepLog()
    model.fit(progressive.dataset, epochs=epochs or progressive.epochs, steps_per_epoch=progressive.steps_per_epoch,
              callbacks=[progressive, log, *callbacks], verbose=0)
    return [lr for _, _, lr in log.rows], progressive


def _progress_steps(step):
    """Base-batch steps before optimizer step `step`: stage 1's 2 steps are 4 base batches each."""
    return 4 * step if step < 2 else 8 + (step - 2)


def test_a_float_learning_rate_takes_each_stages_scale(tiny_spec):
    rates, progressive = _user_fit(tiny_spec, keras.optimizers.SGD(0.05), lr_scaling="sqrt")
    assert progressive.layout.stage_steps == (2, 16)
    np.testing.assert_allclose(rates, [0.05 * 2] * 2 + [0.05] * 16, rtol=1e-6)  # sqrt(4) in the 4x batch


def test_a_schedule_runs_over_training_progress_times_each_stages_scale(tiny_spec):
    base = keras.optimizers.schedules.CosineDecay(0.1, 24)  # 24 base steps: the 3 epochs of data
    rates, _ = _user_fit(tiny_spec, keras.optimizers.SGD(base))
    expected = [float(base(_progress_steps(step))) * (4 if step < 2 else 1) for step in range(18)]
    np.testing.assert_allclose(rates, expected, rtol=1e-5, atol=1e-7)


def test_the_scaled_learning_rate_is_restored_with_the_optimizer_step(tiny_spec, tmp_path):
    """A run killed after fit epoch 1 and resumed by BackupAndRestore, with a new model, optimizer and callback,
    uses the learning rates of the uninterrupted run."""
    base = keras.optimizers.schedules.CosineDecay(0.01, 24)
    whole = [float(base(_progress_steps(step))) * (4 if step < 2 else 1) for step in range(18)]

    class Killed(Exception):
        pass

    def kill(epoch, logs):
        raise Killed

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(Killed):
        _user_fit(tiny_spec, keras.optimizers.Adam(base), callbacks=[backup, keras.callbacks.LambdaCallback(on_epoch_end=kill)])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    resumed, _ = _user_fit(tiny_spec, keras.optimizers.Adam(base), callbacks=[backup])
    np.testing.assert_allclose(resumed, whole[9:], rtol=1e-5, atol=1e-8)


def test_keras_adaptive_optimizers_are_told_what_they_miss_ours_take_the_whole_rule(tiny_spec):
    from efficientnetv2_keras.training import optimizers

    with pytest.warns(UserWarning, match="not the square-root rule's per-stage betas.*training.optimizers.Adam"):
        _user_fit(tiny_spec, keras.optimizers.Adam(0.01), lr_scaling="sqrt", epochs=1)
    ours = optimizers.Adam(0.01)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="ProgressiveLearning scales")
        rates, _ = _user_fit(tiny_spec, ours, lr_scaling="sqrt", epochs=1)
    np.testing.assert_allclose(rates, [0.02] * 2 + [0.01] * 7, rtol=1e-6)
    # The betas follow the stages too: 1 - beta_2 x 4 in the 4x batch (floored at 0.5).
    assert ours.scaling_progress() is not None
    assert ours.scaling_progress().square_root_rule_decay(0.999) == pytest.approx([0.996, 0.999])


def test_a_learning_rate_that_cannot_follow_progress_is_refused_at_fit_start(tiny_spec):
    with pytest.raises(ValueError, match=r"^ProgressiveLearning scales the learning rate .* is a function: compile "
                                         r"with a float or a keras.optimizers.schedules.LearningRateSchedule"):
        _user_fit(tiny_spec, keras.optimizers.SGD(lambda: 0.05))
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=3, num_stages=2, image_size=(32, 64),
                                    batch_size=8, batch_scaling=True)
    one_pass = ProgressiveLearning(schedule, _id_dataset_fn(64), verbose=0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"need ProgressiveLearning\(schedule, dataset_fn, steps_per_epoch=N\)"):
        one_pass.set_model(model)
