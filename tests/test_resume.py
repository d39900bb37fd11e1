"""Runs that survive: a kill at any moment, a damaged backup, a rerun of a finished run, a diverging loss.

The subprocess tests run tools/train.py (through tests/train_runner.py, which swaps in the tiny model
table and kills the process where told) on the bundled digits with three progressive stages.
"""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import efficientnetv2_keras as ev2
from efficientnetv2_keras.runs import backup_epochs
from efficientnetv2_keras.training import resume
from efficientnetv2_keras.training.backup import RunBackup
from efficientnetv2_keras.training.divergence import StopOnNonFiniteLoss
from efficientnetv2_keras.training.run_log import RunLog, read_log, stage_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "train_runner.py")
# 3 epochs, one per stage (32, 36, 40 px), one step each: the smallest run with every stage.
OVERRIDES = ",".join([
    "train.epochs=3", "train.steps_per_epoch=1", "train.batch_size=16", "progressive.num_stages=3",
    "progressive.image_size=[32,40]", "progressive.size_multiple=null", "data.source_options.image_size=40",
    "data.eval_size=32", "eval.batch_size=180", "data.cache=false",
])


def train(model_dir, *flags, env=None, overrides=OVERRIDES, timeout=600):
    return subprocess.run(
        [sys.executable, RUNNER, f"--model_dir={model_dir}", f"--override={overrides}", "--mode=train", *flags],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})),
    )


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_killed_while_writing_a_backup_then_a_damaged_backup_then_a_rerun(tmp_path):
    model_dir = tmp_path / "run"
    # 1. SIGKILL after the backup of epoch 3 is written but before it is renamed into place.
    killed = train(model_dir, env={"RUNNER_KILL_ON_RENAME": "epoch-0003.weights.h5:1"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    backup = model_dir / "backup"
    assert backup_epochs(backup) == [2, 1]  # the newest and the previous one, both whole
    assert any(name.startswith(".tmp-") for name in os.listdir(backup))  # the interrupted write
    # 2. The newest backup is then damaged (a truncated copy, a full disk): the restart says so, falls
    #    back to the previous one and says where it resumes.
    newest = backup / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[:1000])
    resumed = train(model_dir)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"The backup {newest} cannot be read" in resumed.stdout
    assert "Restored the backup after epoch 1" in resumed.stdout
    assert f"resuming {model_dir} at epoch 2 of 3 (stage 2 of 3, image size 36)" in resumed.stdout
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 2/3" in resumed.stdout
    assert not any(name.startswith(".tmp-") for name in os.listdir(backup))
    # The whole run's log and results, as if it had not been interrupted: one header, one row per epoch.
    header, *rows = read_csv(model_dir / "log.csv")
    assert header[0] == "epoch" and {"loss", "stage", "image_size", "train_seconds"} <= set(header)
    assert all(len(row) == len(header) for row in rows)
    table = [dict(zip(header, row)) for row in rows]
    assert [(int(r["epoch"]), int(float(r["stage"])), int(float(r["image_size"]))) for r in table] == [
        (1, 1, 32), (2, 2, 36), (3, 3, 40)]  # epochs and stages counted from 1, as in every message
    results = json.loads((model_dir / "results.json").read_text())
    assert [(s["stage"], s["image_size"], s["epochs"]) for s in results["stages"]] == [(1, 32, 1), (2, 36, 1), (3, 40, 1)]
    assert results["epochs"] == 3 and results["resumed_at_epoch"] == 2
    assert json.loads((model_dir / "last.json").read_text())["epoch"] == 3
    # 3. Rerunning the finished run: reported, nothing trained or overwritten, exit status 0.
    before = {name: (model_dir / name).stat().st_mtime_ns for name in ("last.keras", "log.csv", "results.json")}
    again = train(model_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{model_dir} holds a finished run (3 of 3 epochs" in again.stdout and "--overwrite" in again.stdout
    assert "Epoch " not in again.stdout
    assert {name: (model_dir / name).stat().st_mtime_ns for name in before} == before
    # 4. Continuing it with another train.epochs would lay the stages out again (12 epochs: 4 per stage, the
    #    run back at its first stage's size): refused before anything is written, with the two ways out.
    before = {name: (model_dir / name).stat().st_mtime_ns for name in ("last.keras", "log.csv", "results.json",
                                                                       "config.yaml")}
    longer = train(model_dir, overrides=OVERRIDES.replace("train.epochs=3", "train.epochs=12"))
    assert longer.returncode == 2, longer.stdout[-2000:] + longer.stderr[-3000:]
    assert "Traceback" not in longer.stderr and "Epoch " not in longer.stdout
    (error,) = [line for line in longer.stderr.splitlines() if ": error: " in line]
    assert (f"{model_dir} was trained with 3 epochs in 3 stages (epoch 1 at 32 px, epoch 2 at 36 px, epoch 3 at "
            "40 px); this recipe lays out 12 epochs in 3 stages (epochs 1-4 at 32 px, epochs 5-8 at 36 px, epochs "
            "9-12 at 40 px)") in error
    assert "--overwrite" in error and f"model.init_checkpoint={model_dir / 'last.keras'}" in error
    assert {name: (model_dir / name).stat().st_mtime_ns for name in before} == before


def test_a_run_killed_between_two_backups_resumes_from_the_last_one_and_says_which(tmp_path):
    model_dir = tmp_path / "run"
    # 4 epochs in 2 stages, an hour between backups: backed up at the stage ends (epochs 2 and 4) only.
    overrides = ",".join([
        "train.epochs=4", "train.steps_per_epoch=1", "train.batch_size=16", "progressive.num_stages=2",
        "progressive.image_size=[32,40]", "data.source_options.image_size=40", "data.eval_size=32",
        "data.cache=false", "train.backup_interval_s=3600",
    ])
    killed = train(model_dir, env={"RUNNER_KILL_AT_EPOCH": "4"}, overrides=overrides)  # after epoch 3
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "backup/ at the end of each stage, after the last epoch and every 3600 s" in killed.stdout
    assert backup_epochs(model_dir / "backup") == [2]  # epoch 3 was not backed up...
    assert json.loads((model_dir / "last.json").read_text())["epoch"] == 2  # ...nor written to last.keras
    assert [row["epoch"] for row in read_log(model_dir / "log.csv")] == [0, 1, 2]
    resumed = train(model_dir, overrides=overrides)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert (f"resuming {model_dir} at epoch 3 of 4 (stage 2 of 2, image size 40) from the backup after epoch 2"
            in resumed.stdout)
    assert "Epoch 2/4" not in resumed.stdout and "Epoch 3/4" in resumed.stdout
    assert [row["epoch"] for row in read_log(model_dir / "log.csv")] == [0, 1, 2, 3]
    assert backup_epochs(model_dir / "backup") == [4, 2]
    assert json.loads((model_dir / "last.json").read_text())["epoch"] == 4


# ------------------------------------------------------------------------------------------------
# The pieces, in process.
# ------------------------------------------------------------------------------------------------


def _tiny_model(tiny_spec):
    keras.utils.set_random_seed(0)
    model = ev2.build_model(tiny_spec, classes=3, input_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="categorical_crossentropy",
                  run_eagerly=True)
    return model


def _data():
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    return x, keras.utils.to_categorical(np.arange(8) % 3, 3)


def test_run_backup_keeps_two_and_restores_the_newest_readable(tiny_spec, tmp_path):
    x, y = _data()
    model = _tiny_model(tiny_spec)
    backup = RunBackup(tmp_path / "backup", verbose=0)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[backup])
    assert backup_epochs(tmp_path / "backup") == [3, 2]
    weights = [w.copy() for w in model.get_weights()]

    again = _tiny_model(tiny_spec)
    assert RunBackup(tmp_path / "backup", verbose=0).restore(again) == 3
    for got, expected in zip(again.get_weights(), weights):
        np.testing.assert_array_equal(got, expected)
    # The optimizer state came back too (momentum slots).
    assert int(again.optimizer.iterations.numpy()) == 3

    (tmp_path / "backup" / "epoch-0003.weights.h5").write_bytes(b"\x89HDF\r\n")
    third = _tiny_model(tiny_spec)
    assert RunBackup(tmp_path / "backup", verbose=0).restore(third) == 2
    (tmp_path / "backup" / "epoch-0002.weights.h5").write_bytes(b"")
    with pytest.raises(OSError, match="No backup in .* can be read.*Move the folder away"):
        RunBackup(tmp_path / "backup", verbose=0).restore(third)


def test_a_run_continues_only_with_the_schedule_its_backups_were_written_under(tiny_spec, tmp_path):
    from efficientnetv2_keras.hparams import ConfigError

    x, y = _data()
    trained = resume.training_layout(4, [(0, 2, 32), (2, 4, 40)])  # 4 epochs, 2 stages
    model = _tiny_model(tiny_spec)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0,
              callbacks=[RunBackup(tmp_path / "backup", layout=trained, verbose=0)])
    resume.check_continuation(tmp_path, trained)  # an interrupted run, the same recipe: it resumes
    assert resume.check_continuation(tmp_path / "elsewhere", trained) is None  # nothing to continue
    longer = resume.training_layout(12, [(0, 6, 32), (6, 12, 40)])
    with pytest.raises(ConfigError) as caught:
        resume.check_continuation(tmp_path, longer)
    assert str(caught.value).startswith(
        f"{tmp_path} was trained with 4 epochs in 2 stages (epochs 1-2 at 32 px, epochs 3-4 at 40 px); this recipe "
        "lays out 12 epochs in 2 stages (epochs 1-6 at 32 px, epochs 7-12 at 40 px)")
    assert "\n" not in str(caught.value)
    # The same epochs with other stages (progressive.num_stages=1) is another schedule too.
    with pytest.raises(ConfigError, match="this recipe lays out 4 epochs in 1 stage \\(epochs 1-4 at 40 px\\)"):
        resume.check_continuation(tmp_path, resume.training_layout(4, [(0, 4, 40)]))


def test_run_log_is_the_whole_run_with_one_header(tmp_path):
    path = str(tmp_path / "log.csv")
    log = RunLog(path)
    log.on_train_begin()
    for epoch, logs in enumerate([{"loss": 2.0}, {"loss": 1.5, "val_accuracy": 0.5}, {"loss": 1.2}]):
        log.on_epoch_begin(epoch)
        log.on_epoch_end(epoch, logs)
    # Interrupted after epoch 3's row was written but before its backup: the restart resumes at epoch 3
    # (index 2) and trains it again, with a new column.
    again = RunLog(path)
    again.on_train_begin()
    again.on_epoch_begin(2)
    again.on_epoch_end(2, {"loss": 1.1, "l2_loss": 0.01})
    header, *rows = read_csv(path)
    assert header == ["epoch", "l2_loss", "loss", "train_seconds", "val_accuracy"]
    assert [row[0] for row in rows] == ["1", "2", "3"] and all(len(row) == 5 for row in rows)
    assert [r["loss"] for r in read_log(path)] == [2.0, 1.5, 1.1]
    assert read_log(path)[1]["val_accuracy"] == 0.5 and "val_accuracy" not in read_log(path)[2]


def test_stage_rows_cover_every_epoch():
    rows = [{"epoch": 0, "stage": 1, "image_size": 32, "train_seconds": 2.0},
            {"epoch": 1, "stage": 2, "image_size": 40, "train_seconds": 1.0},
            {"epoch": 2, "stage": 2, "image_size": 40, "train_seconds": 3.0}]
    assert stage_rows(rows, 100) == [
        {"stage": 1, "image_size": 32, "epochs": 1, "seconds": 2.0, "images_per_second": 50.0},
        {"stage": 2, "image_size": 40, "epochs": 2, "seconds": 4.0, "images_per_second": 50.0}]


def test_a_diverging_run_stops_at_the_first_nan_and_keeps_the_last_good_checkpoint(tmp_path):
    model_dir = tmp_path / "run"
    # An absurd learning rate: epoch 1's single step starts from the initial weights (a finite loss),
    # its update blows them up, and epoch 2's first loss is NaN.
    overrides = ",".join([
        "train.epochs=3", "train.steps_per_epoch=1", "train.batch_size=16", "progressive.enabled=false",
        "data.train_size=32", "data.source_options.image_size=32", "data.eval_size=32", "data.cache=false",
        "train.optimizer=momentum", "train.lr_base=1e20", "train.lr_warmup_epochs=0", "train.lr_schedule=constant",
        "train.backup_interval_s=0",  # a backup (and last.keras) after every epoch
        # The released classifier init: from digits_demo's zeros the first update leaves epoch 2's loss finite
        # (~1e18), and NaN comes an epoch later.
        "model.classifier_initializer=null",
    ])
    result = train(model_dir, overrides=overrides)
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert ": error: Training diverged: the loss is nan at epoch 2, step 1 of the epoch (optimizer step 2, " \
           "learning rate 6.25e+18)" in result.stderr
    assert f"kept: {model_dir / 'last.keras'} and the backup after epoch 1" in result.stderr
    # Nothing of the diverged epoch was written: last.keras, the backup and the log stop at epoch 1.
    assert json.loads((model_dir / "last.json").read_text())["epoch"] == 1
    assert backup_epochs(model_dir / "backup") == [1]
    assert [row["epoch"] for row in read_log(model_dir / "log.csv")] == [0]
    weights = keras.models.load_model(model_dir / "last.keras").get_weights()
    assert all(np.isfinite(w).all() for w in weights)
    assert not (model_dir / "results.json").exists()


def _seed_states(model):
    """The states of the model's random generators (dropout, stochastic depth): not among its weights."""
    return [v.numpy() for v in model.variables if v.path.endswith("seed_generator_state")]


def test_run_backup_restores_the_dropout_random_state_and_reads_older_backups(tiny_spec, tmp_path):
    x, y = _data()
    model = _tiny_model(tiny_spec)
    assert len(_seed_states(model)) == 4  # stochastic depth in 3 blocks, head dropout
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[RunBackup(tmp_path / "backup", verbose=0)])
    again = _tiny_model(tiny_spec)
    assert RunBackup(tmp_path / "backup", verbose=0).restore(again) == 2
    for got, expected in zip(_seed_states(again), _seed_states(model), strict=True):
        np.testing.assert_array_equal(got, expected)  # the next dropout masks are the uninterrupted run's
    # A backup of an earlier version (weights and optimizer only) still restores.
    (tmp_path / "older").mkdir()
    model.save_weights(tmp_path / "older" / "epoch-0001.weights.h5")
    assert RunBackup(tmp_path / "older", verbose=0).restore(again) == 1


class _Killed(Exception):
    pass


def _train_in_process(model_dir, table, overrides, kill_at_epoch=None):
    """The trainer on the tiny table; kill_at_epoch (1-based) stops it as a kill between two epochs would."""
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if epoch + 1 == kill_at_epoch:
            raise _Killed(epoch)

    config = load_config("digits_demo", overrides=[*overrides, f"model.name={table}"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StopOnNonFiniteLoss, "on_epoch_begin", on_epoch_begin)
        for plot in ("efficientnetv2_keras.training.trainer.plot_training_curves",
                     "efficientnetv2_keras.progressive.schedule.ProgressiveSchedule.plot"):
            patch.setattr(plot, lambda *args, **kwargs: None)  # seconds of matplotlib per run, not the subject
        try:
            train_and_evaluate(config, str(model_dir), mode="train", verbose=0)
        except _Killed:
            pass
    return [row["loss"] for row in read_log(os.path.join(model_dir, "log.csv"))]


# Random crops and dropout/stochastic depth, no RandAugment (its tracing would double the test's time;
# tests/test_data_order.py checks that a stream restarted at a position augments the same way).
LAYOUTS = {
    # Progressive stages read as streams, epochs of 2 steps; the restart is inside stage 2's run.
    "steps": (["train.epochs=4", "train.steps_per_epoch=2", "progressive.num_stages=2",
               "progressive.image_size=[32,40]", "progressive.randaug_magnitude=[0,0]",
               "data.source_options.image_size=40", "data.eval_size=32", "data.cache=true"], 4),
    # One pass per epoch (64 examples, 4 steps), no progressive learning, no cache.
    "one_pass": (["train.epochs=3", "progressive.enabled=false", "data.train_split=train[:64]", "data.minival=null",
                  "data.train_size=32", "data.source_options.image_size=32", "data.eval_size=32", "data.cache=false",
                  "data.randaug_magnitude=0"], 3),
}


# Slow: three trainer runs, ~35 s of CPU each layout. make test pins the pieces: the data a resumed recipe reads
# (tests/test_data_order.py) and the seed generators in the backup (above).
@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_resumed_run_trains_on_the_same_data_as_an_uninterrupted_one(tiny_spec, tmp_path, layout):
    from efficientnetv2_keras.models.family import save_model_spec

    table = save_model_spec(tiny_spec, tmp_path / "tiny.yaml")
    overrides, kill_at = LAYOUTS[layout]
    # A backup after every epoch, so the restart restores the epoch before the kill (in `steps`: mid-stage).
    overrides = [*overrides, "train.batch_size=16", "eval.batch_size=180", "train.backup_interval_s=0"]
    uninterrupted = _train_in_process(tmp_path / "whole", table, overrides)
    assert len(_train_in_process(tmp_path / "resumed", table, overrides, kill_at_epoch=kill_at)) == kill_at - 1
    resumed = _train_in_process(tmp_path / "resumed", table, overrides)
    # The same examples, crops, RandAugment and dropout masks in every epoch: the same losses.
    np.testing.assert_allclose(resumed, uninterrupted, rtol=1e-5)
    assert len(set(uninterrupted)) == len(uninterrupted)


def test_weights_too_large_for_float32_do_not_crash_the_epoch_end_logging(tiny_spec, tmp_path):
    # A run diverging with a still-finite loss: its L2 term passes float32's range. TensorBoard converts
    # every logged value to float32; the term must reach it as inf, not stop the run with a conversion
    # error.
    from efficientnetv2_keras.training.optimizers import SGD, LogL2Loss

    model = _tiny_model(tiny_spec)
    model.compile(optimizer=SGD(0.0, l2_weight_decay=1e-5), loss="categorical_crossentropy")
    for variable in model.trainable_variables:
        if "kernel" in variable.path:
            variable.assign(np.full(variable.shape, 1e30, "float32"))
    logs = {"loss": 1.0}
    callback = LogL2Loss()
    callback.set_model(model)
    callback.on_epoch_end(0, logs)
    assert logs["l2_loss"] == float("inf")
    board = keras.callbacks.TensorBoard(str(tmp_path / "tb"))
    board.set_model(model)
    board.on_epoch_end(0, logs)
