"""The trainer's own callbacks: best/last checkpoints with their records, and a 1-based log.csv for
fit loops of your own (the trainer's whole-run log is training/run_log.py, its backups training/backup.py,
its divergence check training/divergence.py)."""

import json
import math
import os

import keras

from efficientnetv2_keras.files import atomic_write, atomic_write_text
from efficientnetv2_keras.training.run_folder import RunDir, record_path


def read_record(checkpoint_path):
    """The JSON record next to a checkpoint, or None when there is none (or it is unreadable)."""
    try:
        with open(record_path(checkpoint_path), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def describe_checkpoint(path):
    """'best.keras: EMA weights after epoch 16, best val_accuracy 0.9931 on minival ...' from its record."""
    name = os.path.basename(path)
    record = read_record(path)
    if not record:
        return name
    text = f"{name}: {record.get('weights', 'model')} weights after epoch {record['epoch']}"
    if "monitor" in record:
        text += f", best {record['monitor']} {record['value']:.4f} on {record.get('selected_on', 'validation')}"
    return text


class BestAndLastCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` (every epoch, or as `cadence` says) and `best.keras` when `monitor` improves,
    atomically.

    Saves an uncompiled twin of the model (same weights, no optimizer state: a quarter of the size),
    so the files load with `keras.models.load_model` for evaluation, prediction and export. Put it
    inside `EMACallback` to save the EMA weights (swapped in only at the epochs it saves:
    `saves_at_epoch_end`). Next to each file, `last.json` / `best.json` say which epoch it holds and
    (best) the value that selected it, plus `record` (e.g. the split).

    restore_best: start from the value in best.json (a resumed run) instead of -inf, so the first
      validated epoch after a restart replaces best.keras only if it is better.
    cadence: a `backup.BackupCadence`: last.keras is written when the run is backed up, the file that
      evaluation, export and a diverged run's message name; None: after every epoch.
    """

    def __init__(self, directory, monitor="val_accuracy", restore_best=False, record=None, cadence=None):
        super().__init__()
        self.directory = directory
        self.run = RunDir(directory)
        self.monitor = monitor  # higher is better; None: only last.keras
        self.restore_best = restore_best
        self.record = dict(record or {})
        self.cadence = cadence
        self.best = -math.inf
        self._twin = None
        self._twin_epoch = None  # the epoch whose weights the twin holds

    def on_train_begin(self, logs=None):
        # From the config, not clone_model: a clone keeps the compile config (optimizer, schedule).
        self._twin = self.model.__class__.from_config(self.model.get_config())
        self._twin_epoch = None
        if self.restore_best and self.monitor:
            saved = read_record(self.run.best) or {}
            if saved.get("monitor") == self.monitor and isinstance(saved.get("value"), (int, float)):
                self.best = float(saved["value"])

    def _saves_last(self, epoch):
        return self.cadence is None or self.cadence.due(epoch, stopping=self.model.stop_training)

    def _improved(self, logs):
        value = (logs or {}).get(self.monitor) if self.monitor else None
        return value is not None and value > self.best

    def saves_at_epoch_end(self, epoch, logs=None):
        """Whether `on_epoch_end(epoch, logs)` writes a file (for `EMACallback`: no swap otherwise)."""
        return self._saves_last(epoch) or self._improved(logs)

    def _save(self, path, epoch, record):
        if self._twin_epoch != epoch:  # one copy of the weights per epoch, for last.keras and best.keras
            self._twin.set_weights(self.model.get_weights())
            self._twin_epoch = epoch
        atomic_write(path, self._twin.save)
        atomic_write_text(record_path(path), json.dumps({**self.record, **record}, indent=2) + "\n")

    def on_epoch_end(self, epoch, logs=None):
        if self._saves_last(epoch):
            self._save(self.run.last, epoch, {"epoch": epoch + 1})
        if self._improved(logs):
            self.best = float(logs[self.monitor])
            self._save(self.run.best, epoch, {"epoch": epoch + 1, "monitor": self.monitor, "value": self.best})


class CSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` with epochs counted from 1 and only meaningful validation columns.

    Keras names its columns after the first epoch's logs and, when they hold no `val_*` key (validation
    every N > 1 epochs), adds `val_<key>` for every key: empty `val_stage`, `val_image_size`,
    `val_l2_loss`... columns, and a whole empty set in a run without validation. Here the validation
    columns are the compiled metrics' (what `evaluate` returns), and only when `validation` is set.
    """

    def __init__(self, filename, append=False, validation=False):
        super().__init__(filename, append=append)
        self.validation = validation

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            keys = sorted(logs)
            if self.validation and not any(key.startswith("val_") for key in keys):
                keys += [f"val_{key}" for key in sorted(self.model.get_metrics_result())]
            self.keys = keys
        super().on_epoch_end(epoch + 1, logs)  # the epoch column counts from 1, as every message and plot
