"""Progressive learning: the schedule (pure) and the callback inside one model.fit."""

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
from efficientnetv2_keras.progressive import ProgressiveLearning, ProgressiveSchedule, Stage, progressive_schedule


def _column(schedule, field):
    return [getattr(stage, field) for stage in schedule.stages]


# -- the schedule ---------------------------------------------------------------------------------


def test_paper_preset_s_matches_algorithm_1_and_table_6():
    schedule = progressive_schedule("efficientnetv2-s", "paper", 350, 4)
    assert _column(schedule, "image_size") == [128, 185, 242, 300]  # 185.33 and 242.67 truncated
    assert _column(schedule, "randaug_magnitude") == pytest.approx([5, 8.3333, 11.6667, 15], abs=1e-3)
    assert _column(schedule, "mixup_alpha") == [0, 0, 0, 0]
    assert _column(schedule, "dropout_rate") == pytest.approx([0.1, 0.16667, 0.23333, 0.3], abs=1e-4)
    assert [(s.start, s.end) for s in schedule.stages] == [(0, 87), (87, 175), (175, 262), (262, 350)]


def test_official_preset_s_matches_the_released_code():
    schedule = progressive_schedule("s", "official", 350, 4)
    assert _column(schedule, "image_size") == [171, 214, 257, 300]
    assert _column(schedule, "randaug_magnitude") == pytest.approx([5, 6.6667, 8.3333, 10], abs=1e-3)
    assert _column(schedule, "dropout_rate") == [0.2] * 4  # not scheduled by the released code
    assert _column(schedule, "cutmix_alpha") == [0] * 4


@pytest.mark.parametrize(
    "variant, sizes, randaug, mixup, dropout",
    [
        ("m", [128, 212, 296, 380], [5, 10, 15, 20], [0, 0.0667, 0.1333, 0.2], [0.1, 0.2, 0.3, 0.4]),
        ("l", [128, 212, 296, 380], [5, 11.667, 18.333, 25], [0, 0.1333, 0.2667, 0.4], [0.1, 0.2333, 0.3667, 0.5]),
    ],
)
def test_paper_preset_m_l(variant, sizes, randaug, mixup, dropout):
    schedule = progressive_schedule(variant, "paper", 350, 4)
    assert _column(schedule, "image_size") == sizes
    assert _column(schedule, "randaug_magnitude") == pytest.approx(randaug, abs=1e-3)
    assert _column(schedule, "mixup_alpha") == pytest.approx(mixup, abs=1e-4)
    assert _column(schedule, "dropout_rate") == pytest.approx(dropout, abs=1e-4)


@pytest.mark.parametrize(
    "variant, randaug, mix, dropout",
    [("m", [5, 8.3333, 11.6667, 15], [0, 0.0667, 0.1333, 0.2], 0.3), ("l", [5, 10, 15, 20], [0, 0.1667, 0.3333, 0.5], 0.4)],
)
def test_official_preset_m_l(variant, randaug, mix, dropout):
    schedule = progressive_schedule(variant, "official", 350, 4)
    assert _column(schedule, "image_size") == [192, 256, 320, 384]
    assert _column(schedule, "randaug_magnitude") == pytest.approx(randaug, abs=1e-3)
    assert _column(schedule, "mixup_alpha") == pytest.approx(mix, abs=1e-4)
    assert _column(schedule, "cutmix_alpha") == pytest.approx(mix, abs=1e-4)
    assert _column(schedule, "dropout_rate") == [dropout] * 4


def test_overrides_steps_and_single_stage():
    schedule = progressive_schedule("b0", "paper", total_steps=1000, num_stages=2, image_size=(64, 96), mixup_alpha=0.2, survival_prob=(1.0, 0.8))
    assert schedule.unit == "step"
    assert [(s.start, s.end) for s in schedule.stages] == [(0, 500), (500, 1000)]
    assert _column(schedule, "image_size") == [64, 96]
    assert _column(schedule, "mixup_alpha") == [0.2, 0.2]
    assert _column(schedule, "survival_prob") == pytest.approx([1.0, 0.8])
    single = progressive_schedule("s", "paper", 10, 1)
    assert _column(single, "image_size") == [300]
    off = progressive_schedule("s", "paper", 8, 2, dropout_rate=None, randaug_magnitude=None)
    assert _column(off, "dropout_rate") == [None, None] and _column(off, "randaug_magnitude") == [0, 0]


def test_random_resize_is_seeded_and_resumable():
    schedule = progressive_schedule("s", "paper", 64, 4, random_resize_every=8, seed=3)
    drawn = [schedule.stage_at(e).index for e in range(64)]
    assert drawn == [schedule.stage_at(e).index for e in range(64)]  # pure function of the epoch
    assert all(len(set(drawn[i : i + 8])) == 1 for i in range(0, 64, 8))  # one draw per 8 epochs
    assert len(set(drawn)) > 1


def test_random_resize_counts_in_the_schedules_unit():
    # A step schedule draws every k steps and says so (its ranges, total and k are all steps).
    steps = progressive_schedule("s", "paper", total_steps=64, num_stages=4, random_resize_every=8, seed=3)
    drawn = [steps.stage_at(p).index for p in range(64)]
    assert all(len(set(drawn[i : i + 8])) == 1 for i in range(0, 64, 8)) and len(set(drawn)) > 1
    assert "one stage drawn at random every 8 steps" in steps.table()
    epochs = progressive_schedule("s", "paper", total_epochs=64, num_stages=4, random_resize_every=8, seed=3)
    assert "every 8 epochs" in epochs.table()
    assert [epochs.stage_at(p).index for p in range(64)] == drawn  # same draws per block, whatever the unit
    with pytest.raises(ValueError, match="positive number of steps"):
        ProgressiveSchedule(stages=steps.stages, total=64, unit="step", random_resize_every=0)


def test_table_and_plot(tmp_path):
    schedule = progressive_schedule("s", "paper", 350, 4)
    table = schedule.table()
    assert "263-350" in table and "300" in table and "15.00" in table
    path = schedule.plot(str(tmp_path / "schedule.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_schedules_give_clear_errors():
    with pytest.raises(ValueError, match="grows the image size"):
        progressive_schedule("s", "paper", 350, 4, image_size=(300, 128))
    with pytest.raises(ValueError, match="randaug_magnitude 40.*outside"):
        progressive_schedule("s", "paper", 350, 4, randaug_magnitude=(5, 40))
    with pytest.raises(ValueError, match="Unknown progressive preset"):
        progressive_schedule("s", "fast", 350)
    with pytest.raises(ValueError, match="Unknown schedule override"):
        progressive_schedule("s", "paper", 350, dropout=(0.1, 0.2))
    with pytest.raises(ValueError, match="total_epochs must be an integer >= num_stages"):
        progressive_schedule("s", "paper", 3, 4)
    with pytest.raises(ValueError, match="exactly one of total_epochs or total_steps"):
        progressive_schedule("s", "paper")
    with pytest.raises(ValueError, match="without gaps or overlaps"):
        ProgressiveSchedule(stages=(Stage(0, 0, 5, 64), Stage(1, 6, 10, 96)), total=10)
    with pytest.raises(ValueError, match="last stage must end at 12"):
        ProgressiveSchedule(stages=(Stage(0, 0, 5, 64), Stage(1, 5, 10, 96)), total=12)


# -- the callback ---------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tests")
class BatchRecorder(keras.layers.Layer):
    """Identity layer that stores, in variables, what the compiled train step saw in the last batch."""

    def build(self, input_shape):
        self.height = self.add_weight(shape=(), initializer="zeros", trainable=False, name="height")
        self.zero_fraction = self.add_weight(shape=(), initializer="zeros", trainable=False, name="zeros")

    def call(self, inputs, training=False):
        if training:
            rank = len(inputs.shape)
            if rank == 4:
                self.height.assign(keras.ops.cast(keras.ops.shape(inputs)[1], "float32"))
            else:
                zeros = keras.ops.mean(keras.ops.cast(keras.ops.equal(inputs, 0), "float32"))
                self.zero_fraction.assign(zeros)
        return inputs


class BatchLog(keras.callbacks.Callback):
    def __init__(self, model_inputs, head):
        super().__init__()
        self.model_inputs, self.head = model_inputs, head
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append(
            (
                int(self.model_inputs.height.numpy()),
                float(self.head.zero_fraction.numpy()),
                float(logs["loss"]),
                float(logs.get("accuracy", np.nan)),  # running mean over the epoch's batches so far
            )
        )


def _recorded_model(tiny_spec, classes):
    """Tiny EfficientNetV2 with recorders on its input and after its adjustable head dropout."""
    inputs = keras.Input((None, None, 3))
    image_recorder, head_recorder = BatchRecorder(name="image_recorder"), BatchRecorder(name="head_recorder")
    backbone = ev2.build_model(tiny_spec, include_top=False, pooling="avg", survival_prob=1.0)
    x = backbone(image_recorder(inputs))
    x = ev2.AdjustableDropout(0.0, name="top_dropout")(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(head_recorder(x))
    return keras.Model(inputs, outputs), image_recorder, head_recorder


def _synthetic_dataset_fn(num_examples=96, batch_size=16, classes=4):
    """Images whose class is a colour pattern, resizable to any stage size."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, num_examples)
    base = rng.uniform(0, 60, (num_examples, 8, 8, 3)).astype("float32")
    for k in range(classes):
        base[labels == k, :, :, k % 3] += 150.0 if k < 3 else 0.0
        if k == 3:
            base[labels == k, :4] += 180.0
    def dataset_fn(stage):
        dataset = tf.data.Dataset.from_tensor_slices((base, labels.astype("int32")))
        dataset = dataset.shuffle(num_examples, seed=stage.index)
        dataset = dataset.map(lambda x, y: (tf.image.resize(x, (stage.image_size, stage.image_size)), y))
        return dataset.batch(batch_size, drop_remainder=True)
    return dataset_fn


def count_traces(model):
    """A list that grows by one each time TensorFlow traces `model.train_step` (Python runs the step
    once per trace, never per batch). Test-only: the callback leaves the train step alone."""
    traces = []
    original = model.train_step
    model.train_step = lambda data: (traces.append(1), original(data))[1]
    return traces


def test_callback_switches_stages_inside_one_fit_on_digits(tiny_spec):
    from efficientnetv2_keras.data import DigitsSource, build_dataset

    keras.utils.set_random_seed(0)
    source = DigitsSource(image_size=48)
    schedule = progressive_schedule(
        tiny_spec, "paper", total_epochs=6, num_stages=3, image_size=(32, 48), size_multiple=None, randaug_magnitude=0,
        mixup_alpha=0, dropout_rate=(0.0, 0.3),
    )

    def dataset_fn(stage):
        return build_dataset(source, "train", stage.image_size, 64, training=True, seed=stage.index,
                             randaug_magnitude=stage.randaug_magnitude, flip=False, crop_area_range=(0.6, 1.0))

    model, image_recorder, head_recorder = _recorded_model(tiny_spec, classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy", metrics=["accuracy"])
    progressive = ProgressiveLearning(schedule, dataset_fn, verbose=0)
    log = BatchLog(image_recorder, head_recorder)
    traces, trace_counts = count_traces(model), []
    count = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: trace_counts.append(len(traces)))
    history = model.fit(progressive.dataset, epochs=schedule.total, callbacks=[progressive, log, count], verbose=0)

    steps = 1437 // 64
    heights = [row[0] for row in log.rows]
    assert heights == [s.image_size for s in schedule.stages for _ in range(2 * steps)]  # 32, 40, 48
    # The head dropout in effect inside the compiled step: the fraction of zeroed activations.
    zero_fractions = np.array([row[1] for row in log.rows]).reshape(3, -1).mean(axis=1)
    assert zero_fractions[0] < 0.02 and 0.08 < zero_fractions[1] < 0.22 and 0.22 < zero_fractions[2] < 0.38
    assert history.history["image_size"] == [32, 32, 40, 40, 48, 48]
    assert history.history["dropout_rate"] == pytest.approx([0, 0, 0.15, 0.15, 0.3, 0.3])
    # Images are [batch, None, None, 3] for the train step: no stage boundary adds a trace. (TF traces
    # a fresh model's first call twice: again once the optimizer and metrics have made their variables.)
    assert trace_counts[0] == trace_counts[-1] <= 2
    # Weights carry over the boundary: the first batches of stage 2 are far better than the first
    # batches of training (a re-initialized model would start again at chance, loss ~2.3).
    accuracies = [row[3] for row in log.rows]
    assert np.mean(accuracies[:3]) < 0.3 and np.mean(accuracies[2 * steps : 2 * steps + 3]) > 0.5
    assert history.history["accuracy"][-1] > 0.75  # chance is 0.1


def _indexed_dataset_fn(events, num_examples=10, batch_size=2, endless=False):
    """Stage pipelines whose batches say which examples they hold; `events` logs when each stage's
    pipeline starts and when it is released (its generator is closed when its iterator is destroyed)."""

    def dataset_fn(stage):
        def examples():
            events.append(("start", stage.index))
            try:
                for i in range(num_examples):
                    yield np.full((stage.image_size, stage.image_size, 3), i, np.float32), i
            finally:
                events.append(("end", stage.index))

        size = stage.image_size
        spec = (tf.TensorSpec((size, size, 3), tf.float32), tf.TensorSpec((), tf.int64))
        dataset = tf.data.Dataset.from_generator(examples, output_signature=spec)
        dataset = dataset.repeat() if endless else dataset
        return dataset.batch(batch_size, drop_remainder=True).prefetch(2)

    return dataset_fn


@pytest.mark.parametrize("endless", [False, True], ids=["one-pass", "repeated"])
def test_steps_per_epoch_stream_continues_through_each_stage_and_releases_finished_ones(tiny_spec, endless):
    # 3 stages x 2 epochs x 3 steps; a pass is 5 batches, so epochs end mid-pass.
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=6, num_stages=3, image_size=(32, 48), size_multiple=None, dropout_rate=None)
    events = []
    progressive = ProgressiveLearning(schedule, _indexed_dataset_fn(events, endless=endless), steps_per_epoch=3, verbose=0)
    batches = [(int(x.shape[1]), [int(i) for i in y]) for x, y in progressive.dataset.take(18)]
    assert [size for size, _ in batches] == [32] * 6 + [40] * 6 + [48] * 6
    # Each stage reads its pipeline on from epoch to epoch (wrapping around at the end of a pass).
    firsts = [ids[0] for _, ids in batches]
    assert firsts == [0, 2, 4, 6, 8, 0] * 3
    # A stage's pipeline starts after the previous stage's pipeline was released.
    stage_of_event = [stage for _, stage in events]
    assert stage_of_event == sorted(stage_of_event) and events[0] == ("start", 0)
    assert [e for e in events if e[1] == 0][-1] == ("end", 0)
    assert [e for e in events if e[1] == 1][-1] == ("end", 1)

    # A resumed fit starts inside its stage: epoch 3 is stage 1's second epoch.
    progressive.on_epoch_begin(3)
    resumed = [(int(x.shape[1]), int(y[0])) for x, y in progressive.dataset.take(9)]
    assert resumed == [(40, 0), (40, 2), (40, 4), (48, 0), (48, 2), (48, 4), (48, 6), (48, 8), (48, 0)]


def test_step_schedule_maps_stages_onto_epochs_of_steps_per_epoch(tiny_spec):
    # Stages cover steps [0, 10), [10, 20), [20, 30); epochs of 4 steps start at 0, 4, ..., 28 and take
    # the stage in effect there.
    schedule = progressive_schedule(tiny_spec, "paper", total_steps=30, num_stages=3, image_size=(32, 48), size_multiple=None, dropout_rate=None)
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        ProgressiveLearning(schedule, _indexed_dataset_fn([]))
    progressive = ProgressiveLearning(schedule, _indexed_dataset_fn([]), steps_per_epoch=4, verbose=0)
    assert progressive.epochs == 8
    assert [progressive.stage_for_epoch(e).index for e in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    sizes = [int(x.shape[1]) for x, _ in progressive.dataset.take(36)]
    assert sizes == [32] * 12 + [40] * 8 + [48] * 16  # the last stage goes on past the schedule's end


def test_fit_steps_per_epoch_must_agree_with_the_callback(tiny_spec):
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=4, num_stages=2, image_size=(32, 48), dropout_rate=None)
    model = ev2.build_model(tiny_spec, classes=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # One-pass stage pipelines (6 batches) with fit(steps_per_epoch=4): Keras would keep one iterator
    # across epochs and the stages would drift off the epoch boundaries.
    progressive = ProgressiveLearning(schedule, _synthetic_dataset_fn(), verbose=0)
    with pytest.raises(ValueError, match=r"ProgressiveLearning\(schedule, dataset_fn, steps_per_epoch=4\)"):
        model.fit(progressive.dataset, epochs=4, steps_per_epoch=4, callbacks=[progressive], verbose=0)
    assert "train_step" not in vars(model)  # the callback leaves the train step alone
    with pytest.raises(ValueError, match="endless"):
        ProgressiveLearning(schedule, lambda stage: _synthetic_dataset_fn()(stage).repeat()).dataset
    progressive = ProgressiveLearning(schedule, _synthetic_dataset_fn(), steps_per_epoch=4, verbose=0)
    for fit_steps in (None, 3):
        with pytest.raises(ValueError, match="fit\\(progressive.dataset, steps_per_epoch=progressive.steps_per_epoch"):
            model.fit(progressive.dataset, epochs=4, steps_per_epoch=fit_steps, callbacks=[progressive], verbose=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=3)
    with pytest.raises(ValueError, match="multiple of the model's steps_per_execution"):
        model.fit(progressive.dataset, epochs=4, steps_per_epoch=4, callbacks=[progressive], verbose=0)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated preemption")


def test_fit_with_steps_per_epoch_starts_every_stage_with_its_own_batches(tiny_spec, tmp_path):
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=6, num_stages=3, image_size=(32, 48), size_multiple=None, dropout_rate=(0.0, 0.4))
    logs, traces = [], []

    def run(extra_callbacks):
        keras.utils.set_random_seed(0)
        model, image_recorder, head_recorder = _recorded_model(tiny_spec, classes=4)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        traces.append(count_traces(model))
        # One pass is 6 batches; epochs of 4 steps continue through it.
        progressive = ProgressiveLearning(schedule, _synthetic_dataset_fn(), steps_per_epoch=4, verbose=0)
        logs.append(BatchLog(image_recorder, head_recorder))
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        # The progressive callback runs before BackupAndRestore (as in the trainer): the resumed
        # run's stream must still start at the restored epoch.
        callbacks = [progressive, backup, logs[-1]] + extra_callbacks
        return model.fit(progressive.dataset, epochs=6, steps_per_epoch=4, callbacks=callbacks, verbose=0), progressive

    with pytest.raises(RuntimeError, match="simulated preemption"):
        run([_Interrupt(epoch=3)])  # in the middle of stage 1 (epochs 2-3)
    history, progressive = run([])
    assert history.epoch == [3, 4, 5] and history.history["image_size"] == [40, 48, 48]
    rows = logs[0].rows + logs[1].rows  # epochs 0-2, then 3-5
    assert [row[0] for row in rows] == [32] * 8 + [40] * 8 + [48] * 8
    zero_fractions = np.array([row[1] for row in rows]).reshape(3, -1).mean(axis=1)
    assert zero_fractions[0] < 0.02 and 0.1 < zero_fractions[1] < 0.3 and 0.3 < zero_fractions[2] < 0.5
    assert len(traces[-1]) <= 2  # the resumed fit: no stage adds a trace


def test_dataset_fn_with_the_wrong_structure_is_rejected(tiny_spec):
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=4, num_stages=2, image_size=(32, 48))
    good = _synthetic_dataset_fn()

    def one_hot_in_stage_1(stage):
        dataset = good(stage)
        return dataset.map(lambda x, y: (x, tf.one_hot(y, 4))) if stage.index == 1 else dataset

    with pytest.raises(ValueError, match="only the image size may change"):
        ProgressiveLearning(schedule, one_hot_in_stage_1).dataset
    with pytest.raises(ValueError, match="asks for image size 48 but dataset_fn gave images of \\(32, 32\\)"):
        ProgressiveLearning(schedule, lambda stage: good(schedule.stages[0])).dataset
    with pytest.raises(TypeError, match="must return a tf.data.Dataset"):
        ProgressiveLearning(schedule, lambda stage: [1, 2, 3]).dataset
    with pytest.raises(ValueError, match="Batch the dataset"):
        ProgressiveLearning(schedule, lambda stage: good(stage).unbatch()).dataset


def test_resume_with_backup_and_restore_continues_in_the_interrupted_stage(tiny_spec, tmp_path):
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=6, num_stages=3, image_size=(32, 64), dropout_rate=(0.0, 0.5))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:  # the middle of stage 1 (epochs 2-3)
                raise RuntimeError("simulated preemption")

    def run(extra_callbacks):
        keras.utils.set_random_seed(0)
        model, image_recorder, head_recorder = _recorded_model(tiny_spec, classes=4)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        progressive = ProgressiveLearning(schedule, _synthetic_dataset_fn(), verbose=0)
        log = BatchLog(image_recorder, head_recorder)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        history = model.fit(progressive.dataset, epochs=schedule.total, callbacks=[backup, progressive, log] + extra_callbacks, verbose=0)
        return model, log, history

    with pytest.raises(RuntimeError, match="simulated preemption"):
        run([Interrupt()])
    model, log, history = run([])
    assert history.epoch == [3, 4, 5]
    assert history.history["stage"] == [2, 3, 3]  # numbered from 1, as in messages and results
    assert history.history["image_size"] == [48, 64, 64]
    steps = 96 // 16
    assert [row[0] for row in log.rows] == [48] * steps + [64] * 2 * steps
    assert ev2.get_regularization(model)["dropout_rate"] == pytest.approx(0.5)


def test_schedule_dropout_needs_an_adjustable_dropout(tiny_spec):
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=2, num_stages=2, image_size=(32, 48))
    model = ev2.build_model(tiny_spec, include_top=False, pooling="avg")
    model.compile(optimizer="adam", loss="mse")
    progressive = ProgressiveLearning(schedule, lambda s: _synthetic_dataset_fn()(s).map(lambda x, y: (x, tf.zeros((16, 32)))), verbose=0)
    with pytest.raises(ValueError, match="dropout_rate=None"):
        model.fit(progressive.dataset, epochs=2, callbacks=[progressive], verbose=0)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
    sys_path_tests = {tests!r}
    import sys; sys.path.insert(0, sys_path_tests)
    from conftest import TINY_SPEC
    from test_progressive import _synthetic_dataset_fn, count_traces
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    schedule = progressive_schedule(TINY_SPEC, "paper", total_epochs=4, num_stages=2, image_size=(32, 48), dropout_rate=(0.1, 0.4))
    with strategy.scope():
        model = ev2.build_model(TINY_SPEC, classes=4)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        progressive = ProgressiveLearning(schedule, _synthetic_dataset_fn(), verbose=0)
    traces, counts = count_traces(model), []
    count = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: counts.append(len(traces)))
    history = model.fit(progressive.dataset, epochs=4, callbacks=[progressive, count], verbose=0)
    assert history.history["image_size"] == [32, 32, 48, 48], history.history
    assert counts[0] == counts[-1] <= 2, counts  # no stage adds a trace
    assert abs(ev2.get_regularization(model)["dropout_rate"] - 0.4) < 1e-6
    assert history.history["loss"][-1] < history.history["loss"][0]
    print("MIRRORED OK", len(traces))
    """
)


@pytest.mark.slow  # 22 s; MirroredStrategy over two logical CPUs stays fast in test_training_distributed.py
def test_under_mirrored_strategy_with_two_logical_cpus():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT.format(tests=tests_dir)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MIRRORED OK" in result.stdout


CACHE_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras, tensorflow as tf
    sys.path.insert(0, {tests!r})
    from conftest import TINY_SPEC
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.data import DigitsSource
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.progressive import progressive_schedule
    import dataclasses
    from efficientnetv2_keras.training.recipe import resolve_recipe

    def rss_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))

    side = 112  # digits decoded (upsampled) to 112 px: one decoded copy of the split is ~52 MiB
    source = DigitsSource(image_size=side)
    copy_mb = source.num_examples("train") * side * side * 3 / 2**20
    config = load_config("digits_demo", ["data.cache=true", "train.batch_size=128"])
    # One image size for all stages: the TF runtime keeps ~25 MiB of state per new input shape
    # (measured, with or without any cache), which would blur the input pipelines' memory.
    schedule = progressive_schedule(TINY_SPEC, "paper", total_epochs=3, num_stages=3, image_size=32,
                                    randaug_magnitude=0, mixup_alpha=(0, 0.2), dropout_rate=None)
    recipe = dataclasses.replace(resolve_recipe(config, source), schedule=schedule)
    train, progressive = recipe.train_dataset(tf.distribute.get_strategy())
    progressive.verbose = 0
    model = ev2.build_model(TINY_SPEC, classes=10)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    rss = []  # at the end of each stage (one epoch each)
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rss.append(rss_mb()))
    model.fit(train, epochs=3, callbacks=[progressive, record], verbose=0)
    print("RSS", round(copy_mb, 1), [round(r, 1) for r in rss])
    """
)


def test_cached_split_is_decoded_once_for_all_stages():
    # data.cache with progressive learning: one decoded copy for the run, not one per stage. RSS after
    # stage 1 (the cache is full) must not grow by more than half a copy over the next two stages.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-c", CACHE_MEMORY_SCRIPT.format(tests=tests_dir)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RSS"))
    copy_mb, rss = float(line.split()[1]), json.loads(line.split(" ", 2)[2])
    assert rss[2] - rss[0] < 0.5 * copy_mb, f"RSS at stage ends {rss} MiB; one decoded copy is {copy_mb} MiB"


# Slow (XLA compiles per stage, ~25 s); make test stays under 15 minutes.
@pytest.mark.slow
def test_jit_compile_and_mixed_precision(tiny_spec):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        schedule = progressive_schedule(tiny_spec, "paper", total_epochs=2, num_stages=2, image_size=(32, 40), dropout_rate=(0.1, 0.3))
        model, image_recorder, head_recorder = _recorded_model(tiny_spec, classes=4)
        assert model.get_layer("top_dropout").compute_dtype == "bfloat16"
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)
        progressive = ProgressiveLearning(schedule, _synthetic_dataset_fn(num_examples=32), verbose=0)
        log = BatchLog(image_recorder, head_recorder)
        history = model.fit(progressive.dataset, epochs=2, callbacks=[progressive, log], verbose=0)
        assert [row[0] for row in log.rows] == [32, 32, 40, 40]  # XLA: one compilation per stage size
        assert all(np.isfinite(history.history["loss"]))
        assert ev2.get_regularization(model)["dropout_rate"] == pytest.approx(0.3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
