"""Where a training run's time goes: the first step (tracing), training, validation, checkpoints.

`CostTimer` is a callback; put it right after the callbacks that must run before the epoch's
checkpoints (the progressive stage switch, the L2 log) and before the checkpoint and logging
callbacks, so "epoch end" covers what they do (saving last/best.keras, BackupAndRestore, CSV and
TensorBoard logs). Every part is reported as wall time and process CPU time (user + system of all
threads), which survives a shared machine better than wall time.
"""

import time

import keras

from efficientnetv2_keras.training.tracing import train_function_traces


def _now():
    return time.perf_counter(), time.process_time()


class CostTimer(keras.callbacks.Callback):
    """Wall and CPU seconds of `fit`, split into parts, plus training time and images per epoch.

    Attributes after `fit`:
      costs: {"first_step", "train" (all steps, the first included), "validation", "epoch_end",
        "fit"}: each {"wall": s, "cpu": s}; and "traces" (see `tracing.train_function_traces`).
      epochs: per epoch {"epoch", "train_wall", "train_cpu"}: the cumulative training time at its end
        (first step included, validation and epoch-end work excluded): x of a time-to-accuracy curve;
        and this epoch's own CPU seconds: "step_cpu" (its training steps), "validation_cpu" and
        "epoch_end_cpu" (checkpoints, backups, logs: from its on_epoch_end to the next epoch's start).
    """

    def __init__(self):
        super().__init__()
        self.costs, self.epochs = {}, []

    def on_train_begin(self, logs=None):
        self.costs = {part: [0.0, 0.0] for part in ("first_step", "train", "validation", "epoch_end")}
        self.epochs = []
        self._fit_start = _now()
        self._mark = None  # start of the part being timed
        self._first = True
        self._epoch_end_mark = None
        self._epoch_cpu = {"step_cpu": 0.0, "validation_cpu": 0.0}

    def _add(self, part, since):
        wall, cpu = _now()
        self.costs[part][0] += wall - since[0]
        self.costs[part][1] += cpu - since[1]
        return cpu - since[1]

    def _close_epoch_end(self):
        if self._epoch_end_mark is not None:
            self.epochs[-1]["epoch_end_cpu"] = round(self._add("epoch_end", self._epoch_end_mark), 3)
            self._epoch_end_mark = None

    def on_epoch_begin(self, epoch, logs=None):
        self._close_epoch_end()
        self._epoch_cpu = {"step_cpu": 0.0, "validation_cpu": 0.0}
        self._mark = _now()

    def on_train_batch_begin(self, batch, logs=None):
        if self._first:
            self._first_mark = _now()

    def on_train_batch_end(self, batch, logs=None):
        if self._first:
            self._first = False
            self._add("first_step", self._first_mark)

    def _end_training_part(self):
        if self._mark is not None:
            self._epoch_cpu["step_cpu"] += self._add("train", self._mark)
            self._mark = None

    def on_test_begin(self, logs=None):
        self._end_training_part()
        self._validation_mark = _now()

    def on_test_end(self, logs=None):
        self._epoch_cpu["validation_cpu"] += self._add("validation", self._validation_mark)

    def on_epoch_end(self, epoch, logs=None):
        self._end_training_part()
        self.epochs.append({"epoch": epoch, "train_wall": self.costs["train"][0], "train_cpu": self.costs["train"][1],
                            **{part: round(cpu, 3) for part, cpu in self._epoch_cpu.items()}})
        self._epoch_end_mark = _now()

    def on_train_end(self, logs=None):
        self._close_epoch_end()
        self._add_fit()

    def _add_fit(self):
        wall, cpu = _now()
        self.costs["fit"] = [wall - self._fit_start[0], cpu - self._fit_start[1]]
        self.costs = {part: {"wall": round(w, 2), "cpu": round(c, 2)} for part, (w, c) in self.costs.items()}
        self.costs["traces"] = train_function_traces(self.model)


def format_costs(costs):
    """One line per part: wall and CPU seconds."""
    names = {"first_step": "first step (tracing)", "train": "training (first step included)",
             "validation": "validation", "epoch_end": "checkpoints and logs", "fit": "fit in all",
             "test_evaluation": "test split after fit (final and best)"}
    lines = ["| part of fit | wall s | CPU s |", "|---|---:|---:|"]
    for part, name in names.items():
        if part in costs:
            lines.append(f"| {name} | {costs[part]['wall']} | {costs[part]['cpu']} |")
    traces = costs.get("traces")
    if traces:
        lines.append(f"train step traced {traces['step']} time(s) for the whole run")
    return "\n".join(lines)
