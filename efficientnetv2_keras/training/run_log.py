"""The whole run's log (`log.csv`, across restarts) and the per-stage table made from it.

`RunLog` keeps one header over every column any epoch had, keeps the rows of the epochs before an
interruption, replaces the rows of epochs trained again, and rewrites the file atomically each epoch; the
plots and the per-stage table of results.json (`stage_rows`) come from its rows.
"""

import csv
import io
import time

import keras

from efficientnetv2_keras.files import atomic_write_text


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
