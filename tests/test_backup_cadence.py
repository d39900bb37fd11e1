"""Backups (and last.keras) on a wall-time interval, at stage ends and the last epoch, not every epoch."""

import json

import keras
import numpy as np

import efficientnetv2_keras as ev2
from efficientnetv2_keras.runs import backup_epochs
from efficientnetv2_keras.training import ema
from efficientnetv2_keras.training.backup import BackupCadence, RunBackup
from efficientnetv2_keras.training.callbacks import BestAndLastCheckpoint


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def decisions(cadence, clock, epochs, seconds_per_epoch):
    cadence.start()
    due = []
    for epoch in range(epochs):
        clock.now += seconds_per_epoch
        due.append(cadence.due(epoch))
    return [epoch + 1 for epoch, saved in enumerate(due) if saved]


def test_backups_on_the_interval_at_stage_ends_and_the_last_epoch():
    clock = FakeClock()
    # 3 s epochs, a 10 s interval: saved before the next epoch would pass 10 s since the last backup.
    assert decisions(BackupCadence(10, clock=clock), clock, 12, 3) == [3, 6, 9, 12]
    # Stage ends (after epochs 4 and 8) and the last epoch (10) always; the interval counts from there.
    cadence = BackupCadence(10, always=(4, 8, 10), clock=clock)
    assert decisions(cadence, clock, 10, 3) == [3, 4, 7, 8, 10]
    # An hour: stage ends and the last epoch only.
    assert decisions(BackupCadence(3600, always=(4, 8, 10), clock=clock), clock, 10, 3) == [4, 8, 10]
    # 0: every epoch (the default).
    assert decisions(BackupCadence(0, clock=clock), clock, 4, 3) == [1, 2, 3, 4]
    assert decisions(BackupCadence(clock=clock), clock, 2, 3) == [1, 2]


def test_one_decision_per_epoch_for_every_callback_that_asks():
    clock = FakeClock()
    cadence = BackupCadence(10, clock=clock)
    cadence.start()
    clock.now = 12.0
    assert cadence.due(0) and cadence.due(0)  # last.keras, then the backup: the same answer
    clock.now = 13.0
    assert not cadence.due(1)
    # Training that stops (a callback set model.stop_training) is backed up where it stops.
    assert cadence.due(2, stopping=True)


def _tiny_model(tiny_spec, ema_decay=0.9):
    keras.utils.set_random_seed(0)
    model = ev2.build_model(tiny_spec, classes=3, input_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.1, use_ema=ema_decay > 0, ema_momentum=ema_decay),
                  loss="categorical_crossentropy")
    return model


def test_last_keras_and_the_backup_at_the_same_cadence_and_the_ema_swapped_in_only_to_save(tiny_spec, tmp_path,
                                                                                         monkeypatch):
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(8) % 3, 3)
    swaps = []
    original_swap = ema.swap_ema_weights
    monkeypatch.setattr(ema, "swap_ema_weights",
                        lambda *args, **kwargs: (swaps.append(1), original_swap(*args, **kwargs)))
    cadence = BackupCadence(3600, always=(2, 4))  # stage ends after epochs 2 and 4
    checkpoint = BestAndLastCheckpoint(tmp_path, monitor=None, cadence=cadence)
    backup = RunBackup(tmp_path / "backup", cadence=cadence, verbose=0)
    saved_at = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record = tmp_path / "last.json"
            last = json.loads(record.read_text())["epoch"] if record.exists() else None
            saved_at.append((last, backup_epochs(tmp_path / "backup")[:1]))

    model = _tiny_model(tiny_spec)
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[ema.EMACallback([checkpoint]), backup, Watch()])
    assert saved_at == [(None, []), (2, [2]), (2, [2]), (4, [4])]
    assert len(swaps) == 2 * 2  # swapped in and out for the two saves only
