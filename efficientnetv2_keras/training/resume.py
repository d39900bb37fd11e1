"""Runs that survive: interruption, divergence and reruns of `train_and_evaluate`.

* `RunBackup` backs the training state up (raw weights, optimizer slots, EMA, the dropout and
  stochastic-depth seed generators' states) at the end of every epoch as
  `backup/epoch-<N>.weights.h5`, each written atomically (temporary name, fsync, rename)
  and the previous epoch's kept: a kill at any moment leaves at least one whole backup, and a
  restart that finds the newest one unreadable (a truncated file) falls back to the previous one
  and says so. The backup stays after a finished run (a rerun then reports it finished).
* A run continues only with the schedule it was trained with: every backup records its
  `training_layout` (fit's epochs, each stage's epochs and image size), and a restart under another
  `train.epochs` or stage layout (a finished run given more epochs, or an interrupted one) stops before
  anything is written, naming --overwrite (train again from scratch there) and a new --model_dir with
  `model.init_checkpoint=<run>/best.keras` (finetune from it) (`check_continuation`). Continuing would
  lay the stages out again: the run would go back to its first stage's size and regularization, and a
  cosine learning rate back up.
* `RunLog` keeps the whole run's `log.csv` (one header over every column, rows of the epochs before
  an interruption kept, rows of epochs that are trained again replaced), rewritten atomically each
  epoch; the plots and the per-stage table of results.json come from its rows.
* `StopOnNonFiniteLoss` stops at the first NaN/inf loss, before anything of that epoch is written,
  naming the epoch, step and learning rate (`TrainingDiverged`).
* `finished_run` / `resume_text`: what a rerun says.

Multi-worker training (training/workers.py): every worker runs the same callbacks (their collective ops must
match), only the chief writes into the run directory, the others into a private folder of their own. The
chief's backups are the run's: on a restart the workers agree on the newest of them every worker can restore
(a worker's own copy standing in for a file it cannot read) and say so; a worker that can restore none stops
the run with one line naming it.
"""

import csv
import io
import json
import logging as python_logging
import math
import os
import re
import sys
import time

import h5py
import keras
from absl import logging

from efficientnetv2_keras.files import atomic_write, atomic_write_text, remove_path
from efficientnetv2_keras.hparams import ConfigError

BACKUP_DIR = "backup"
LOG_FILE = "log.csv"
RESULTS_FILE = "results.json"
_BACKUP_NAME = re.compile(r"^epoch-(\d+)\.weights\.h5$")
SEED_GENERATORS = "seed_generators"  # the group of a backup holding the seed generators' states
LAYOUT_ATTRIBUTE = "training_layout"  # a backup's record of the epochs and stages it was trained under


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names where and what was kept."""


def say(text):
    """Printed for the person at the terminal, and logged (absl) for the job's log unless that log is the
    terminal too (absl's handler writing to stderr, its default under absl.app.run): said once there."""
    print(text, flush=True)
    handler = logging.get_absl_handler()
    if handler not in python_logging.getLogger().handlers or handler.python_handler.stream is not sys.stderr:
        logging.info(text)


# ------------------------------------------------------------------------------------------------
# Backups.
# ------------------------------------------------------------------------------------------------


def backup_epochs(backup_dir):
    """The epochs that `backup_dir` holds a backup after, newest first (nothing there: [])."""
    try:
        names = os.listdir(backup_dir)
    except OSError:
        return []
    return sorted((int(m.group(1)) for m in map(_BACKUP_NAME.match, names) if m), reverse=True)


def backup_path(backup_dir, epoch):
    return os.path.join(backup_dir, f"epoch-{epoch:04d}.weights.h5")


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
                self._say(f"The backup {path} cannot be read ({why}); "
                          + ("trying this worker's copy." if folder != self.write_dir else "falling back to the previous one."))
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
        atomic_write(backup_path(self.write_dir, epoch + 1), lambda path: save_training_state(self.model, path, self.layout))
        # Only once the new backup is complete: drop all but the newest `keep`.
        for old in backup_epochs(self.write_dir)[self.keep:]:
            remove_path(backup_path(self.write_dir, old))

    def on_train_end(self, logs=None):
        self._restored = False  # a later fit on this callback restores again


# ------------------------------------------------------------------------------------------------
# The whole run's log.
# ------------------------------------------------------------------------------------------------


def read_log(path):
    """log.csv's rows as dicts of floats (empty cells left out); [] when there is none or it is unreadable."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    parsed = []
    for row in rows:
        try:
            parsed.append({k: (int(float(v)) - 1 if k == "epoch" else float(v))  # the file counts from 1
                           for k, v in row.items() if k and v not in ("", None)})
        except ValueError:
            break  # a damaged row: keep what came before it
    return [row for row in parsed if "epoch" in row]


def _csv_text(rows):
    columns = ["epoch"] + sorted({key for row in rows for key in row if key != "epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        # Epochs from 1 in the file, as in every message and plot (Keras' epoch index is 0-based).
        writer.writerow({k: (v + 1 if k == "epoch" else repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


class RunLog(keras.callbacks.Callback):
    """Every epoch's logs of the whole run (also across restarts) in `log.csv`, one header for all.

    A resumed run keeps the rows of the epochs before the one it starts at and replaces the later ones
    (trained again); the file is rewritten atomically each epoch with every column any epoch had
    (empty where an epoch has no value, e.g. val_* between validations). Each row also gets
    `train_seconds`, the epoch's training time without validation, for the per-stage table.

    path: the log.csv to keep; None keeps the rows in memory only (a non-chief worker).
    """

    def __init__(self, path, resume=True):
        super().__init__()
        self.path = path
        self.rows = read_log(path) if (path and resume) else []
        self._first_epoch = True
        self._start = self._train_seconds = None

    def on_train_begin(self, logs=None):
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch:
            self.rows = [row for row in self.rows if row["epoch"] < epoch]
            self._first_epoch = False
        self._start, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}, "train_seconds": round(seconds, 3)}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        if self.path:
            atomic_write_text(self.path, _csv_text(self.rows))


def stage_rows(rows, images_per_epoch, steps_per_epoch=None):
    """Training time and images/s per progressive stage over the whole run (RunLog rows).

    Stages are 1-based (the logs' `stage`; a run without stages is one stage). With batch-scaled stages
    (`steps_per_epoch` given, `batch_size` in the logs) an epoch holds steps_per_epoch x its batch images.
    """
    stages = {}
    for row in rows:
        entry = stages.setdefault(int(row.get("stage", 1)), {"epochs": 0, "seconds": 0.0, "image_size": None,
                                                            "images": 0})
        entry["epochs"] += 1
        entry["seconds"] += row.get("train_seconds", 0.0)
        batched = steps_per_epoch and "batch_size" in row
        entry["images"] += steps_per_epoch * int(row["batch_size"]) if batched else images_per_epoch
        if "image_size" in row:
            entry["image_size"] = int(row["image_size"])
    return [
        {
            "stage": stage,
            "image_size": entry["image_size"],
            "epochs": entry["epochs"],
            "seconds": round(entry["seconds"], 1),
            "images_per_second": round(entry["images"] / entry["seconds"], 1) if entry["seconds"] else None,
        }
        for stage, entry in sorted(stages.items())
    ]


# ------------------------------------------------------------------------------------------------
# Divergence.
# ------------------------------------------------------------------------------------------------


def current_learning_rate(optimizer):
    """The learning rate the optimizer applies now (its schedule at its current step), or None."""
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # an optimizer without a readable learning rate
        return None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first batch whose loss is NaN or infinite.

    Raising (instead of `stop_training`, as `keras.callbacks.TerminateOnNaN` does) ends `fit` before the
    epoch ends, so no checkpoint or backup of the diverged weights is written: the last good ones stay.
    kept: what to name as kept in the message (e.g. "last.keras and the backup after epoch 3").
    """

    def __init__(self, kept=None):
        super().__init__()
        self.kept = kept
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            return
        rate = current_learning_rate(self.model.optimizer)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        kept = self.kept(self._epoch) if callable(self.kept) else self.kept
        rate_text = f", learning rate {rate:.4g}" if rate is not None else ""
        raise TrainingDiverged(
            f"Training diverged: the loss is {loss} at epoch {self._epoch + 1}, step {batch + 1} of the epoch "
            f"(optimizer step {step}{rate_text}). Nothing of this epoch was saved"
            + (f"; kept: {kept}" if kept else "") + ". Lower the learning rate (train.lr_base), lengthen the "
            "warmup (train.lr_warmup_epochs) or clip gradients (train.gradient_clip_norm), then rerun: the run "
            "resumes from the last good backup."
        )


# ------------------------------------------------------------------------------------------------
# Reruns.
# ------------------------------------------------------------------------------------------------


def finished_run(model_dir, epochs):
    """The results of a run in model_dir that trained all `epochs` (and wrote results.json), else None."""
    done = backup_epochs(os.path.join(model_dir, BACKUP_DIR))
    if not done or done[0] < epochs:
        return None
    try:
        with open(os.path.join(model_dir, RESULTS_FILE), encoding="utf-8") as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        return None
    return results if results.get("epochs") == epochs else None


def training_layout(epochs, stages=()):
    """What a run is continued under: fit's epochs and each progressive stage's (start, end, image size),
    epochs counted from 0 and `end` exclusive, as in `progressive.Stage`; no stages without progressive
    learning. Recorded in every backup."""
    return {"epochs": int(epochs), "stages": [[int(start), int(end), int(size)] for start, end, size in stages]}


def layout_text(layout):
    """'4 epochs in 2 stages (epochs 1-2 at 32 px, epochs 3-4 at 40 px)'."""
    text = f"{layout['epochs']} epochs"
    stages = layout["stages"]
    if stages:
        spans = [f"epoch {end}" if end == start + 1 else f"epochs {start + 1}-{end}" for start, end, _ in stages]
        text += f" in {len(stages)} stage{'s' if len(stages) > 1 else ''} (" + ", ".join(
            f"{span} at {size} px" for span, (_, _, size) in zip(spans, stages)) + ")"
    return text


def backup_layout(path):
    """The `training_layout` a backup was written under; None when it has none (an earlier version's
    backup) or cannot be read."""
    try:
        with h5py.File(path, "r") as handle:
            text = handle.attrs.get(LAYOUT_ATTRIBUTE)
        return json.loads(text) if text is not None else None
    except (OSError, ValueError, TypeError):
        return None


def check_continuation(run_dir, layout, model_dir=None):
    """Raises ConfigError when run_dir's newest backup was written under another `training_layout`.

    Continuing a run under another train.epochs (or stage layout) would lay the stages out again (a
    finished 4-epoch, 2-stage run continued with 12 epochs would go back to its first stage's size, and
    a cosine learning rate back up): refused, naming --overwrite and finetuning from the run's
    checkpoint instead. A run continues only with the schedule it was trained with.
    """
    backup_dir = os.path.join(run_dir, BACKUP_DIR)
    trained = next((found for epoch in backup_epochs(backup_dir)
                    if (found := backup_layout(backup_path(backup_dir, epoch))) is not None), None)
    if trained is None or trained == layout:
        return
    model_dir = os.fspath(model_dir or run_dir)
    checkpoint = os.path.join(model_dir, "best.keras" if os.path.exists(os.path.join(run_dir, "best.keras"))
                              else "last.keras")
    raise ConfigError(
        f"{model_dir} was trained with {layout_text(trained)}; this recipe lays out {layout_text(layout)}, and "
        "a run continues only with the schedule it was trained with. Pass --overwrite to train it again from "
        f"scratch in {model_dir}, or train into a new --model_dir with --override=model.init_checkpoint="
        f"{checkpoint} to finetune from it."
    )


def resume_text(model_dir, epoch, epochs, progressive=None):
    """'resuming runs/x at epoch 9 of 24 (stage 2 of 3, image size 40) from the backup after epoch 8';
    epoch: the epochs done (those of the backup restored)."""
    text = f"resuming {model_dir} at epoch {epoch + 1} of {epochs}"
    if epoch >= epochs:
        text = f"resuming {model_dir} after its last epoch ({epochs}): training is done, finishing the run"
    if progressive is not None:
        stage = progressive.stage_for_epoch(min(epoch, epochs - 1))
        text += f" (stage {stage.index + 1} of {progressive.schedule.num_stages}, image size {stage.image_size})"
    return text + f" from the backup after epoch {epoch}"


def clear_run(model_dir):
    """Removes what a training run wrote into model_dir (for --overwrite); the recipe is rewritten after."""
    for name in (BACKUP_DIR, "last.keras", "last.json", "best.keras", "best.json", LOG_FILE, RESULTS_FILE,
                 "training_curves.png", "tensorboard"):
        remove_path(os.path.join(model_dir, name))
