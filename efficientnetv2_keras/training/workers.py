"""The workers of a multi-worker run: who writes the run folder, where the others write, and how they agree.

tf.distribute's rule: every worker runs the same callbacks (saving and loading variables run collective
ops that must match), and only the chief writes into the run folder (`model_dir`); every other worker
writes into a private folder of its own (`worker_directory`).

The chief's backups are the run's: on a restart every worker reads the chief's backup folder, its own
copy (written in step with the chief's) standing in for a file it cannot read there. With `model_dir` on
storage every worker reads, a worker whose private folder is lost (a replaced machine) resumes from the
chief's files; without, each worker resumes from its own copy. Before training the workers meet
(`WorkerMeeting.gather`, one collective) and resume after the newest of the chief's epochs every one of
them can restore (`agree_on_epoch`), and say so; a worker left without the chief's newest epoch when no
epoch is common stops every worker with one line naming it.
"""

import hashlib
import os
import tempfile

import numpy as np

MAX_EPOCHS_SAID = 8  # the newest backups each worker reports to the meeting (it keeps 2 per folder)


def is_chief(strategy=None):
    """Whether this process writes the run's files: True except on non-chief multi-worker workers."""
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None) if strategy else None
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_directory(model_dir, strategy=None):
    """Where this process writes the run: model_dir on the chief (and without multi-worker training);
    on another worker a folder of its own in the temporary directory, fixed per run directory and
    worker so that a restart finds its backups there."""
    if is_chief(strategy):
        return os.fspath(model_dir)
    resolver = strategy.extended._cluster_resolver
    key = hashlib.sha1(os.path.abspath(model_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"efficientnetv2-keras-{key}-{resolver.task_type}{resolver.task_id}")


def worker_name(chief, task_type, task_id):
    """'worker 1', 'the chief (worker 0)', 'the chief': how messages name a process of the cluster."""
    name = f"{task_type} {task_id}"
    if not chief:
        return name
    return "the chief" if task_type == "chief" else f"the chief ({name})"


class WorkerMeeting:
    """This process among the workers of a MultiWorkerMirroredStrategy run: its name, and `gather`,
    a collective in which every worker says one row of numbers and hears every worker's."""

    def __init__(self, strategy):
        resolver = strategy.extended._cluster_resolver
        self.strategy = strategy
        self.chief = is_chief(strategy)
        self.task_type, self.task_id = resolver.task_type, int(resolver.task_id)
        self.name = worker_name(self.chief, self.task_type, self.task_id)

    def gather(self, row):
        """Every replica's `row` (numbers, the same length on every worker), one row each, in order."""
        import tensorflow as tf

        values = tf.constant(np.asarray(row, np.float32)[None])
        return self.strategy.gather(self.strategy.run(lambda: tf.identity(values)), axis=0).numpy()

    def any(self, flag):
        """True on every worker when `flag` is true on any (e.g. whether to back up after this epoch)."""
        return bool(self.gather([float(flag)]).max() > 0)

    def backups_row(self, epochs, unreadable=0):
        """What this worker says before resuming: who it is and the newest epochs it can restore."""
        said = sorted(epochs, reverse=True)[:MAX_EPOCHS_SAID]
        return [float(self.chief), float(self.task_type == "chief"), float(self.task_id), float(unreadable),
                *said, *[0.0] * (MAX_EPOCHS_SAID - len(said))]


def _read_row(row):
    chief, chief_task, task_id, unreadable = (int(value) for value in row[:4])
    epochs = {int(epoch) for epoch in row[4:] if epoch > 0}
    return worker_name(chief, "chief" if chief_task else "worker", task_id), bool(chief), unreadable, epochs


def agree_on_epoch(rows):
    """The epoch every worker resumes after, from every worker's `WorkerMeeting.backups_row`.

    Returns (the chief's epochs newest first, the agreed epoch or None, the names of the workers that
    cannot restore the chief's newest epoch when there is none every worker can, whether the chief found
    only unreadable backups). The agreed epoch is the newest of the chief's that every worker can restore;
    None when the chief has none (a fresh start) or no epoch is common to all.
    """
    workers = [_read_row(row) for row in rows]
    _, _, chief_unreadable, chief_epochs = next(worker for worker in workers if worker[1])
    common = set(chief_epochs)
    for _, _, _, epochs in workers:
        common &= epochs
    newest = max(chief_epochs, default=None)
    lacking = [] if common or newest is None else sorted(
        {name for name, _, _, epochs in workers if newest not in epochs})
    only_unreadable = not chief_epochs and chief_unreadable > 0
    return sorted(chief_epochs, reverse=True), max(common, default=None), lacking, only_unreadable
