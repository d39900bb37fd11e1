"""Backups of the training state, written crash-safe on a cadence and restored when a run starts again.

* `RunBackup` backs the training state up (raw weights, optimizer slots, EMA, the dropout and
  stochastic-depth seed generators' states, and the run's `training_layout`) as
  `backup/epoch-<N>.weights.h5`, each written atomically (temporary name, fsync, rename) and the previous
  one kept: a kill at any moment leaves at least one whole backup, and a restart that finds the newest one
  unreadable (a truncated file) falls back to the previous one and says so.
* `BackupCadence` says when: on a wall-time interval (`train.backup_interval_s`, default 300 s; 0 = after
  every epoch), and always at the end of each progressive stage, after the last epoch and where training
  stops (a callback set `model.stop_training`). last.keras is written with every backup. The guarantee: a
  kill loses at most the work since the last backup, that is at most `train.backup_interval_s` of wall time
  (epochs permitting: an epoch longer than the interval is backed up at its end) and never more than the
  current stage (its start is backed up). An exception or a signal in the middle of an epoch is not
  backed up: the state of a half-trained epoch is no point a run can resume from (its data stream and
  learning rate are laid out per epoch).
* Multi-worker runs (training/workers.py): the chief's backups are the run's; the workers agree on the
  newest epoch every one of them can restore, and on every epoch that is backed up.
"""

import json
import os
import time

import h5py
import keras

from efficientnetv2_keras.files import atomic_write, remove_path
from efficientnetv2_keras.training.run_folder import backup_epochs, backup_path
from efficientnetv2_keras.training.report import say

SEED_GENERATORS = "seed_generators"  # the group of a backup holding the seed generators' states
LAYOUT_ATTRIBUTE = "training_layout"  # a backup's record of the epochs and stages it was trained under


def seed_generators(model):
    """The model's `keras.random.SeedGenerator`s (dropout, stochastic depth), by layer name and index.

    Their states (which masks come next) are variables of the layers but not weights, so `save_weights`
    leaves them out; a run resumed without them would draw the masks of its first epochs again.
    """
    # Keras tracks a layer's generators in `_seed_generators` (its `variables` list their states).
    return {f"{layer.name}/{index}": generator
            for layer in model._flatten_layers(include_self=True)
            for index, generator in enumerate(getattr(layer, "_seed_generators", ()))}


def save_training_state(model, path, layout=None):
    """`model.save_weights(path)` (weights, optimizer, EMA) plus the seed generators' states in the same
    file (group `seed_generators`), so one atomic rename publishes both; `layout` (`training_layout`) is
    kept as an attribute of the file."""
    model.save_weights(path)
    with h5py.File(path, "a") as handle:
        if layout is not None:
            handle.attrs[LAYOUT_ATTRIBUTE] = json.dumps(layout)
        group = handle.create_group(SEED_GENERATORS)
        for name, generator in seed_generators(model).items():
            group.create_dataset(name, data=keras.ops.convert_to_numpy(generator.state))


def load_training_state(model, path):
    """Loads what `save_training_state` wrote; a backup of an earlier version (no seed states) restores the
    weights alone."""
    model.load_weights(path)
    with h5py.File(path, "r") as handle:
        if SEED_GENERATORS not in handle:
            return
        group = handle[SEED_GENERATORS]
        for name, generator in seed_generators(model).items():
            if name in group:
                generator.state.assign(group[name][()])


class BackupCadence:
    """When a run's state is saved (the backup, and last.keras with it): on a wall-time interval, at the
    epochs in `always` (stage ends, the last epoch) and where training stops; interval_s 0: every epoch.

    The interval is kept from one backup to the next: an epoch end saves when waiting for the next one
    would pass `interval_s` since the last backup (judged by the epoch just ended), so backups are at most
    `interval_s` apart while epochs are shorter than it. Every callback that asks at an epoch's end gets
    the same answer (asked once per epoch); `agree` (multi-worker runs) turns this process's answer into
    the one every worker uses.
    always: 1-based epoch counts after which to save whatever the time.
    """

    def __init__(self, interval_s=0, always=(), clock=time.monotonic, agree=None):
        self.interval_s = float(interval_s)
        self.always = frozenset(int(epoch) for epoch in always)
        self.clock = clock
        self.agree = agree
        self.start()

    def start(self):
        """Starts the interval (at the start of training)."""
        self._last_save = self._last_epoch_end = self.clock()
        self._decided = None  # (epoch, answer) of the last epoch asked about

    def due(self, epoch, stopping=False):
        """Whether the state after `epoch` (0-based, just ended) is saved."""
        if self._decided is not None and self._decided[0] == epoch:
            return self._decided[1]
        now = self.clock()
        epoch_seconds, self._last_epoch_end = now - self._last_epoch_end, now
        answer = (self.interval_s <= 0 or stopping or epoch + 1 in self.always
                  or now - self._last_save + epoch_seconds > self.interval_s)
        if self.agree is not None:
            answer = self.agree(answer)
        if answer:
            self._last_save = now
        self._decided = (epoch, answer)
        return answer


class BackupError(OSError):
    """No backup of the run can be restored (by this process, or by one of the workers)."""


def _first_line(error):
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def readable_backup(path):
    """None when `path` opens as an HDF5 file (a truncated or foreign file does not), else why not."""
    try:
        with h5py.File(path, "r"):
            return None
    except Exception as error:  # h5py raises OSError, ValueError... for a damaged file
        return _first_line(error)


class RunBackup(keras.callbacks.Callback):
    """Backs up the training state (every epoch, or as `cadence` says) and restores it when a run starts again.

    Like `keras.callbacks.BackupAndRestore` (a rerun of the same `fit` continues from the epoch after
    the newest backup), but crash-safe: each backup is written atomically and the previous one is
    kept until the next is complete, so a kill while a backup is being written costs one backup
    interval, not the run. A backup that cannot be read is reported and the previous one is used.

    backup_dir: the run's backups, restored from.
    write_dir: where they are written (default backup_dir); a non-chief worker of a multi-worker run
      passes a private folder, its copy of a backup it cannot read in backup_dir (see training/workers.py).
    keep: how many backups to keep (2: the newest and the previous good one).
    layout: the run's `training_layout`, recorded in every backup: a restart under another one is
      refused (`check_continuation`).
    cadence: a `BackupCadence` saying after which epochs to back up; None: after every epoch.
    meeting: a `workers.WorkerMeeting` (multi-worker runs): the workers agree on the epoch to resume after.
    """

    def __init__(self, backup_dir, write_dir=None, keep=2, verbose=1, layout=None, cadence=None, meeting=None):
        super().__init__()
        if keep < 2:
            raise ValueError(f"keep must be at least 2 (the newest backup and the previous one), got {keep}.")
        self.backup_dir = os.fspath(backup_dir)
        self.write_dir = os.fspath(write_dir or backup_dir)
        self.keep = keep
        self.verbose = verbose
        self.layout = layout
        self.cadence = cadence or BackupCadence()
        self.meeting = meeting
        self.restored_epoch = None  # the epoch the run continues after; None: nothing restored
        self._restored = False
        self._cleaned = False

    def _say(self, text):
        if self.verbose:
            say(text)

    def _readable(self):
        """({epoch: path} newest first, [unreadable backup_dir files]): the run's backups this process can
        read; a worker's own copy stands in for a file it cannot read in backup_dir."""
        found, failures = {}, []
        folders = [self.backup_dir] + ([self.write_dir] if self.write_dir != self.backup_dir else [])
        for epoch in sorted({e for folder in folders for e in backup_epochs(folder)}, reverse=True):
            for folder in folders:
                path = backup_path(folder, epoch)
                if not os.path.exists(path):
                    continue
                why = readable_backup(path)
                if why is None:
                    found[epoch] = path
                    break
                if folder == self.backup_dir:
                    failures.append(f"{path} ({why})")
                then = "trying this worker's copy." if folder != self.write_dir else "falling back to the previous one."
                self._say(f"The backup {path} cannot be read ({why}); {then}")
        return found, failures

    def restore(self, model=None):
        """Loads the newest readable backup into `model` (default: the callback's); returns its epoch or None.

        Call it before `fit` to know where the run resumes (fit then starts at that epoch); otherwise
        `fit` calls it when training begins. The workers of a multi-worker run load the newest backup of
        the chief's that every one of them can read (`workers.agree_on_epoch`) and say so.
        """
        model = model or self.model
        self._restored = True
        self.restored_epoch = None
        found, failures = self._readable()
        candidates = self._agree(found, failures) if self.meeting is not None else list(found)
        if model.optimizer is not None and not model.optimizer.built and candidates:
            model.optimizer.build(model.trainable_variables)  # the backup holds its slots too
        for epoch in candidates:
            try:
                load_training_state(model, found[epoch])
            except Exception as error:  # a file that opens but does not load (foreign, or damaged inside)
                failures.append(self._load_failed(epoch, found[epoch], error))
                continue
            if failures:
                self._say(f"Restored the backup after epoch {epoch} ({found[epoch]}) instead.")
            self.restored_epoch = epoch
            model._initial_epoch = epoch
            break
        if self.restored_epoch is None and failures:
            raise BackupError(
                f"No backup in {self.backup_dir} can be read: " + "; ".join(failures) + ". Move the folder away "
                "to start the run again from scratch (the checkpoints last.keras/best.keras are not affected).")
        self._drop_newer_than(self.restored_epoch or 0)
        return self.restored_epoch

    def _load_failed(self, epoch, path, error):
        """Says that `path` does not load (the previous backup is tried next); raises on a multi-worker run,
        whose workers agreed on this epoch."""
        if self.meeting is not None:
            raise BackupError(f"{self.meeting.name} cannot restore the backup after epoch {epoch} that the workers "
                              f"agreed on: {path} ({_first_line(error)}).") from None
        self._say(f"The backup {path} cannot be read ({_first_line(error)}); falling back to the previous one.")
        return f"{path} ({_first_line(error)})"

    def _agree(self, found, failures):
        """[the epoch every worker resumes after] (or []), met with the other workers; says it, or raises."""
        from efficientnetv2_keras.training.workers import agree_on_epoch

        rows = self.meeting.gather(self.meeting.backups_row(found, unreadable=len(failures)))
        chief_epochs, agreed, lacking, chief_unreadable = agree_on_epoch(rows)
        if chief_unreadable:
            raise BackupError(f"No backup in {self.backup_dir} can be read by the chief" + (
                ": " + "; ".join(failures) if failures else "") + ". Move the folder away to start the run "
                "again from scratch (the checkpoints last.keras/best.keras are not affected).")
        if lacking:
            raise BackupError(
                f"{', '.join(lacking)} cannot restore the chief's backup after epoch {chief_epochs[0]} "
                f"({backup_path(self.backup_dir, chief_epochs[0])}: not readable there, and no copy of its own): "
                "put --model_dir on storage every worker can read, then rerun.")
        if agreed is not None:
            said = ", ".join(str(e) for e in chief_epochs)
            self._say(f"{self.meeting.name}: the workers resume after epoch {agreed}, the newest backup every one "
                      f"of them can restore (the chief's backups: after epoch{'s' if len(chief_epochs) > 1 else ''} "
                      f"{said}).")
        return [agreed] if agreed is not None else []

    def _drop_newer_than(self, epoch):
        """Removes this process's backups after `epoch` (damaged ones, or a worker's copy of an epoch the
        chief lacks): the pruning keeps the newest by epoch, so none may outrank the run's own."""
        for newer in backup_epochs(self.write_dir):
            if newer > epoch:
                remove_path(backup_path(self.write_dir, newer))

    def on_train_begin(self, logs=None):
        if not self._restored:
            self.restore()
        elif self.restored_epoch is not None:
            self.model._initial_epoch = self.restored_epoch
        self.cadence.start()

    def on_epoch_end(self, epoch, logs=None):
        if not self.cadence.due(epoch, stopping=self.model.stop_training):
            return
        os.makedirs(self.write_dir, exist_ok=True)
        if not self._cleaned:  # temporaries of a write that a kill interrupted
            for name in os.listdir(self.write_dir):
                if name.startswith(".tmp-"):
                    remove_path(os.path.join(self.write_dir, name))
            self._cleaned = True
        atomic_write(backup_path(self.write_dir, epoch + 1),
                     lambda path: save_training_state(self.model, path, self.layout))
        # Only once the new backup is complete: drop all but the newest `keep`.
        for old in backup_epochs(self.write_dir)[self.keep:]:
            remove_path(backup_path(self.write_dir, old))

    def on_train_end(self, logs=None):
        self._restored = False  # a later fit on this callback restores again


def backup_layout(path):
    """The `training_layout` a backup was written under; None when it has none (an earlier version's
    backup) or cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(LAYOUT_ATTRIBUTE)
        return json.loads(text) if text is not None else None
    except (OSError, ValueError, TypeError):
        return None
