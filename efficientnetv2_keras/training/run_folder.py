"""A training run's folder: the one owner of its layout.

`RunDir` names every file a run writes (`tools/train.py --model_dir=runs/x`) and says what the folder
holds: a finished run, a resumable one (backups), the checkpoint to evaluate; `clear` removes a run for
`--overwrite`. Every module that reads or writes a run folder asks it for the paths (`runs` re-exports
all of it for users).

    run = RunDir("runs/x")
    run.config, run.labels, run.best, run.last     # runs/x/config.yaml, ... best.keras, last.keras
    run.backup_epochs()                            # [12, 8]: the epochs the backups are after, newest first
    run.finished(24)                               # results.json of a run that trained all 24 epochs, or None
"""

import json
import os
import re

from efficientnetv2_keras.files import remove_path

CONFIG_FILE = "config.yaml"  # the resolved recipe
LABELS_FILE = "labels.txt"  # class names, one per line
LOG_FILE = "log.csv"  # every epoch's metrics and stage parameters, the whole run's
RESULTS_FILE = "results.json"  # what the run printed at its end
LAST_FILE = "last.keras"  # the final model (EMA weights), written with every backup
BEST_FILE = "best.keras"  # the model selected on the minival
BACKUP_DIR = "backup"  # the training state, for resuming
SCHEDULE_TEXT, SCHEDULE_PLOT = "schedule.txt", "schedule.png"  # the progressive-learning stages
CURVES_PLOT = "training_curves.png"
TENSORBOARD_DIR = "tensorboard"
_BACKUP_NAME = re.compile(r"^epoch-(\d+)\.weights\.h5$")


def backup_path(backup_dir, epoch):
    """The backup after `epoch` (1-based count of epochs done) in a backup folder."""
    return os.path.join(os.fspath(backup_dir), f"epoch-{epoch:04d}.weights.h5")


def backup_epochs(backup_dir):
    """The epochs that `backup_dir` holds a backup after, newest first (nothing there: [])."""
    try:
        names = os.listdir(backup_dir)
    except OSError:
        return []
    return sorted((int(m.group(1)) for m in map(_BACKUP_NAME.match, names) if m), reverse=True)


def record_path(checkpoint_path):
    """best.keras -> best.json: what the checkpoint holds (epoch, selection)."""
    return os.path.splitext(os.fspath(checkpoint_path))[0] + ".json"


class RunDir:
    """The files of one run folder (`path`), and what they say about the run."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def file(self, name):
        return os.path.join(self.path, name)

    config = property(lambda self: self.file(CONFIG_FILE))
    labels = property(lambda self: self.file(LABELS_FILE))
    log = property(lambda self: self.file(LOG_FILE))
    results = property(lambda self: self.file(RESULTS_FILE))
    last = property(lambda self: self.file(LAST_FILE))
    best = property(lambda self: self.file(BEST_FILE))
    backup = property(lambda self: self.file(BACKUP_DIR))
    schedule_text = property(lambda self: self.file(SCHEDULE_TEXT))
    schedule_plot = property(lambda self: self.file(SCHEDULE_PLOT))
    curves_plot = property(lambda self: self.file(CURVES_PLOT))
    tensorboard = property(lambda self: self.file(TENSORBOARD_DIR))

    def backup_file(self, epoch):
        return backup_path(self.backup, epoch)

    def backup_epochs(self):
        """The epochs the run's backups are after, newest first; [] when it has none (nothing to resume)."""
        return backup_epochs(self.backup)

    def checkpoint(self):
        """best.keras (selected on the minival), else last.keras; best.keras's path when neither exists."""
        return next((path for path in (self.best, self.last) if os.path.exists(path)), self.best)

    def has_checkpoint(self):
        return any(os.path.exists(path) for path in (self.best, self.last))

    def read_results(self):
        """results.json as a dict; None when there is none (or it is unreadable)."""
        try:
            with open(self.results, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def finished(self, epochs):
        """The results of a run here that trained all `epochs` (its backup after the last epoch kept,
        results.json written), else None."""
        done = self.backup_epochs()
        if not done or done[0] < epochs:
            return None
        results = self.read_results()
        return results if results is not None and results.get("epochs") == epochs else None

    def remove_selection(self):
        """Removes best.keras and its record (a fresh run must not inherit an earlier run's); the names removed."""
        removed = [name for name in (BEST_FILE, record_path(BEST_FILE)) if os.path.exists(self.file(name))]
        for name in removed:
            os.remove(self.file(name))
        return removed

    def clear(self):
        """Removes what a training run wrote here (--overwrite); the recipe and labels are rewritten after."""
        for name in (BACKUP_DIR, LAST_FILE, record_path(LAST_FILE), BEST_FILE, record_path(BEST_FILE), LOG_FILE,
                     RESULTS_FILE, CURVES_PLOT, TENSORBOARD_DIR):
            remove_path(self.file(name))


def run_directory(path):
    """The run directory of `path`: itself when it is a directory, else the folder of the checkpoint."""
    path = os.fspath(path)
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def run_file(path, name):
    """`name` (CONFIG_FILE, LABELS_FILE) in the run directory of `path`, or None when it is not there."""
    candidate = os.path.join(run_directory(path), name)
    return candidate if os.path.isfile(candidate) else None
