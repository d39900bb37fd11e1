"""The training system behind `tools/train.py` and `make demo`: a recipe in, a trained model out.

    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import train_and_evaluate
    results = train_and_evaluate(load_config("digits_demo"), "runs/demo", mode="traineval")

Three splits, as in the paper's released code: `data.minival` is carved from `data.train_split`
(which then excludes it) and is the only split seen during training (validation metrics `val_*`,
the choice of `best.keras`); `data.eval_split` is the test split, evaluated once after training, for
the final model (`last.keras`) and the selected one (`best.keras`), each labelled as such.

One `model.fit` runs every progressive-learning stage. `model_dir` receives:
  config.yaml            the resolved recipe
  schedule.txt/.png      the progressive-learning stages
  labels.txt             class names, one per line (for tools/predict.py)
  last.keras, best.keras EMA weights, written atomically every epoch / when the monitored minival metric
                         improves (no optimizer state: ready for evaluate, predict and export)
  last.json, best.json   which epoch each holds and, for best.keras, the metric value that selected it
                         (a resumed run starts from it, so a worse epoch never replaces best.keras)
  backup/                BackupAndRestore state (raw weights + optimizer + EMA): a rerun resumes
  log.csv, tensorboard/  metrics and stage parameters per epoch; `loss` is the cross-entropy, `l2_loss`
                         the weight-decay term (the objective is their sum)
  training_curves.png    loss/accuracy per epoch with the stage boundaries marked
  results.json           the printed results
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from efficientnetv2_keras import hparams
from efficientnetv2_keras.data import build_dataset, get_source
from efficientnetv2_keras.files import atomic_write, atomic_write_text
from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
from efficientnetv2_keras.training.builders import build_model_from_config, compile_from_config, is_multi_label
from efficientnetv2_keras.training.ema import EMACallback
from efficientnetv2_keras.training.finetune import training_steps
from efficientnetv2_keras.training.losses import default_monitor
from efficientnetv2_keras.training.optimizers import LogL2Loss, weight_decay_loss
from efficientnetv2_keras.training import resume
from efficientnetv2_keras.training.strategy import (
    configure_mixed_precision,
    fit_multi_worker,
    get_strategy,
    is_multi_worker,
    resolve_mixed_precision,
)
from efficientnetv2_keras.weights import apply_weights_info

MODES = ("train", "eval", "traineval")


def _record_path(checkpoint_path):
    """best.keras -> best.json: what the checkpoint holds (epoch, selection)."""
    return os.path.splitext(checkpoint_path)[0] + ".json"


def _read_record(checkpoint_path):
    try:
        with open(_record_path(checkpoint_path), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


class ModelCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` when `monitor` improves, atomically.

    Saves an uncompiled twin of the model (same weights, no optimizer state: a quarter of the size),
    so the files load with `keras.models.load_model` for evaluation, prediction and export. Put it
    inside `EMACallback` to save the EMA weights. Next to each file, `last.json` / `best.json` say
    which epoch it holds and (best) the value that selected it, plus `record` (e.g. the split).

    restore_best: start from the value in best.json (a resumed run) instead of -inf, so the first
      validated epoch after a restart replaces best.keras only if it is better.
    """

    def __init__(self, directory, monitor="val_accuracy", restore_best=False, record=None):
        super().__init__()
        self.directory = directory
        self.monitor = monitor  # higher is better; None: only last.keras
        self.restore_best = restore_best
        self.record = dict(record or {})
        self.best = -math.inf
        self._twin = None

    def on_train_begin(self, logs=None):
        # From the config, not clone_model: a clone keeps the compile config (optimizer, schedule).
        self._twin = self.model.__class__.from_config(self.model.get_config())
        if self.restore_best and self.monitor:
            saved = _read_record(os.path.join(self.directory, "best.keras")) or {}
            if saved.get("monitor") == self.monitor and isinstance(saved.get("value"), (int, float)):
                self.best = float(saved["value"])

    def _save(self, name, record):
        self._twin.set_weights(self.model.get_weights())
        path = os.path.join(self.directory, name)
        atomic_write(path, self._twin.save)
        atomic_write_text(_record_path(path), json.dumps({**self.record, **record}, indent=2) + "\n")

    def on_epoch_end(self, epoch, logs=None):
        self._save("last.keras", {"epoch": epoch + 1})
        value = (logs or {}).get(self.monitor) if self.monitor else None
        if value is None:
            return
        if value > self.best:
            self.best = float(value)
            self._save("best.keras", {"epoch": epoch + 1, "monitor": self.monitor, "value": self.best})


def describe_checkpoint(path):
    """'best.keras: EMA weights after epoch 16, best val_accuracy 0.9931 on minival ...' from its record."""
    name = os.path.basename(path)
    record = _read_record(path)
    if not record:
        return name
    text = f"{name}: {record.get('weights', 'model')} weights after epoch {record['epoch']}"
    if "monitor" in record:
        text += f", best {record['monitor']} {record['value']:.4f} on {record.get('selected_on', 'validation')}"
    return text


class StageTimer(keras.callbacks.Callback):
    """Training time and images/s per progressive stage (validation time excluded), and every epoch's logs."""

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.stages = {}  # stage -> {"epochs", "seconds", "image_size"}
        self.epoch_logs = []  # {"epoch": e, **logs}; val_* only where validation ran
        self._start = self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.epoch_logs.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        entry = self.stages.setdefault(int(logs.get("stage", 0)), {"epochs": 0, "seconds": 0.0, "image_size": None})
        entry["epochs"] += 1
        entry["seconds"] += seconds
        entry["image_size"] = int(logs["image_size"]) if "image_size" in logs else entry["image_size"]

    def rows(self):
        return [
            {
                "stage": stage + 1,
                "image_size": entry["image_size"],
                "epochs": entry["epochs"],
                "seconds": round(entry["seconds"], 1),
                "images_per_second": round(entry["epochs"] * self.images_per_epoch / entry["seconds"], 1),
            }
            for stage, entry in sorted(self.stages.items())
        ]


def plot_training_curves(epoch_logs, path, title=""):
    """Loss and accuracy per epoch (validation where it ran), a dotted line where each stage starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for name, style in ((metric, "-"), ("val_" + metric, "o--")):
            points = [(row["epoch"] + 1, row[name]) for row in epoch_logs if name in row]
            if points:
                axis.plot(*zip(*points), style, label=name if name.startswith("val_") else "train_" + name)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        for previous, row in zip(epoch_logs, epoch_logs[1:]):
            if row.get("stage") != previous.get("stage"):
                axis.axvline(row["epoch"] + 0.5, color="gray", linestyle=":", linewidth=1)
                label = f"stage {int(row['stage']) + 1}" + (f"\n{int(row['image_size'])} px" if "image_size" in row else "")
                axis.text(row["epoch"] + 0.6, axis.get_ylim()[1], label, fontsize=7, va="top", color="gray")
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _class_names(source):
    names = getattr(source, "class_names", None)
    return list(names) if names else [str(i) for i in range(int(source.num_classes))]


def _eval_dataset(config, source, split=None):
    """`split` (default: the test split, data.eval_split) at the eval size, with the evaluation preprocessing."""
    _, eval_size = hparams.image_sizes(config)
    return build_dataset(source, split or config.data.eval_split, eval_size, config.eval.batch_size,
                         training=False, **hparams.dataset_options(config))


def minival_split(config, source):
    """(training split, minival split or None, description) for `data.minival`.

    A count or fraction is carved from data.train_split with `source.hold_out` (seed 0: the same minival
    for every run of a dataset, whatever runtime.seed); a split name is used as it is; null: none.
    """
    data = config.data
    if data.minival is None:
        return data.train_split, None, None
    if isinstance(data.minival, str):
        return data.train_split, data.minival, {"split": data.minival, "examples": source.num_examples(data.minival)}
    train_split, held = source.hold_out(data.train_split, data.minival, seed=0)
    info = {"split": held, "carved_from": data.train_split, "size": data.minival,
            "examples": source.num_examples(held), "train_examples": source.num_examples(train_split)}
    return train_split, held, info


def _train_dataset(config, source, strategy, schedule):
    """(training dataset for fit, the ProgressiveLearning callback or None)."""
    options = hparams.dataset_options(config)
    if options.pop("cache"):  # decode and cache the split once, shared by every stage's pipeline
        from efficientnetv2_keras.data import CachedSource

        source = CachedSource(source)
    batch = config.train.batch_size
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def limit(dataset):  # train.steps_per_epoch: shorter epochs than one pass over the data
        steps = config.train.steps_per_epoch
        return dataset.take(steps) if steps else dataset

    def stage_dataset(stage, input_context=None):
        return limit(build_dataset(
            source, config.data.train_split, stage.image_size, batch, training=True,
            randaug_magnitude=stage.randaug_magnitude, mixup_alpha=stage.mixup_alpha,
            cutmix_alpha=stage.cutmix_alpha, input_context=input_context, **options,
        ))

    progressive = None
    if schedule is not None:
        progressive = ProgressiveLearning(schedule, stage_dataset, verbose=1)
        train = progressive.distribute(strategy) if multi_worker else progressive.dataset
    else:
        static = hparams.static_augmentation(config)
        train_size, _ = hparams.image_sizes(config)

        def train_fn(input_context=None):
            return limit(build_dataset(source, config.data.train_split, train_size, batch, training=True,
                                       input_context=input_context, **static, **options))

        train = strategy.distribute_datasets_from_function(train_fn) if multi_worker else train_fn()
    return train, progressive


def _schedule(config, epochs):
    if not config.progressive.enabled:
        return None
    return progressive_schedule(
        config.model.name,
        config.progressive.preset,
        total_epochs=epochs,
        num_stages=config.progressive.num_stages,
        random_resize_every=config.progressive.random_resize_every,
        seed=config.runtime.seed,
        **hparams.progressive_overrides(config),
    )


def find_checkpoint(model_dir):
    """model_dir's best.keras (selected on the minival), else its last.keras (the path of best.keras when
    neither exists). `describe_checkpoint` says which weights the file holds."""
    for name in ("best.keras", "last.keras"):
        if os.path.exists(os.path.join(model_dir, name)):
            return os.path.join(model_dir, name)
    return os.path.join(model_dir, "best.keras")


def evaluate_model(model, config, source=None, checkpoint_name="", role=None):
    """Evaluates a compiled model on the test split (data.eval_split) at the eval size; returns the metrics.

    checkpoint_name: a label, or the checkpoint's path (then labelled with `describe_checkpoint`).
    role: "final" or "best", for the results table. `loss` is the cross-entropy; `l2_loss` (when the
    recipe has a coupled weight decay) the L2 term of these weights, which is not part of it.
    """
    source = source or get_source(config.data.source, data_dir=config.data.data_dir, **config.data.source_options)
    metrics = model.evaluate(_eval_dataset(config, source), verbose=0, return_dict=True)
    if checkpoint_name and os.path.exists(checkpoint_name):
        checkpoint_name = describe_checkpoint(checkpoint_name)
    result = {"role": role, "checkpoint": checkpoint_name, "eval_split": config.data.eval_split,
              "eval_size": hparams.image_sizes(config)[1], **{k: float(v) for k, v in metrics.items()}}
    if config.train.weight_decay > 0 and config.train.optimizer != "adamw":
        result["l2_loss"] = weight_decay_loss(model, config.train.weight_decay)
    return result


def load_for_evaluation(config, checkpoint_path):
    """A saved model (`.keras`), compiled with the recipe's loss and metrics, ready to evaluate."""
    if not os.path.exists(checkpoint_path):
        raise FileNotFoundError(
            f"No checkpoint at {checkpoint_path!r}: train first (tools/train.py --mode=train) or pass "
            "--checkpoint=<file.keras>."
        )
    from efficientnetv2_keras.models.io import load_model_file  # names a truncated or foreign file

    model = load_model_file(checkpoint_path, compile=False)
    compile_from_config(model, config, steps_per_epoch=1, total_steps=1, num_classes=model.output_shape[-1])
    return model


def _evaluate_checkpoints(config, model_dir, strategy, source, final=None):
    """The test split for last.keras (role "final") and best.keras (role "best"), each evaluated once.

    final: the final model's metrics when it was evaluated in memory. best.keras is not evaluated again
    when it holds the same epoch as last.keras.
    """
    def evaluate_file(path, role):
        with strategy.scope():
            model = load_for_evaluation(config, path)
        return evaluate_model(model, config, source, path, role=role)

    evaluations = []
    last, best = (os.path.join(model_dir, name) for name in ("last.keras", "best.keras"))
    if final is not None:
        evaluations.append({**final, "role": "final", "checkpoint": describe_checkpoint(last)})
    elif os.path.exists(last):
        evaluations.append(evaluate_file(last, "final"))
    if os.path.exists(best):
        best_record, last_record = _read_record(best), _read_record(last)
        if evaluations and best_record and last_record and best_record.get("epoch") == last_record.get("epoch"):
            evaluations.append({**evaluations[0], "role": "best",
                                "checkpoint": describe_checkpoint(best) + " (the final weights)"})
        else:
            evaluations.append(evaluate_file(best, "best"))
    return evaluations


def _remove_stale_selection(model_dir, verbose):
    """A fresh run must not inherit best.keras (and its recorded value) from an earlier run in model_dir."""
    removed = []
    for name in ("best.keras", "best.json"):
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            os.remove(path)
            removed.append(name)
    if removed and verbose:
        print(f"New run in {model_dir}: removed the earlier run's {' and '.join(removed)}.")


def train_and_evaluate(config, model_dir, mode="traineval", strategy=None, verbose=1, overwrite=False):
    """Runs a recipe: "train", "eval" (of model_dir's last and best checkpoints) or "traineval".

    traineval validates on data.minival during training (choosing best.keras), then evaluates the test
    split (data.eval_split) once for the final model and for best.keras. Returns the results dict that
    is printed and written to `model_dir/results.json`.

    Rerunning resumes an interrupted run from its newest readable backup (and says so). A finished run
    (all train.epochs trained, results.json written) is not trained again: its results are returned;
    a larger train.epochs continues it, overwrite=True trains it again from scratch.
    Raises `resume.TrainingDiverged` at the first NaN/inf loss (the last good checkpoints stay).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    started = time.perf_counter()
    # First: a multi-worker strategy must be created before anything initializes TensorFlow.
    strategy = strategy or get_strategy(config.runtime.strategy, tpu=config.runtime.tpu,
                                        worker_timeout=config.runtime.worker_timeout)
    # A converted init_checkpoint's JSON: train and evaluate on the inputs its weights expect.
    config = apply_weights_info(config)
    # --- multi-worker hook: the chief writes into model_dir; every other worker runs the same callbacks
    # (so their collective ops match) on a private folder of its own ---
    run_dir = resume.worker_directory(model_dir, strategy)
    os.makedirs(run_dir, exist_ok=True)
    keras.utils.set_random_seed(config.runtime.seed)
    policy = configure_mixed_precision(resolve_mixed_precision(config.train.mixed_precision, strategy))
    source = get_source(config.data.source, data_dir=config.data.data_dir, **config.data.source_options)
    results = {"model": config.model.name, "mode": mode, "precision": policy, "replicas": strategy.num_replicas_in_sync}

    if overwrite and mode != "eval":
        resume.clear_run(run_dir)
    if mode == "eval":
        if not any(os.path.exists(os.path.join(model_dir, n)) for n in ("last.keras", "best.keras")):
            load_for_evaluation(config, find_checkpoint(model_dir))  # raises its "train first" error
        results["evaluations"] = _evaluate_checkpoints(config, model_dir, strategy, source)
        _finish(results, run_dir, verbose)
        return results

    train_split, minival, minival_info = minival_split(config, source)
    if minival_info:
        results["minival"] = minival_info
    # The data functions read the training split from the recipe: give them the one without the minival.
    data_config = dataclasses.replace(config, data=dataclasses.replace(config.data, train_split=train_split))
    steps_per_epoch, epochs, total_steps = training_steps(config, source.num_examples(train_split))
    # --- resume hook: a finished run is reported, not trained again ---
    finished = resume.finished_run(run_dir, epochs) if mode == "traineval" or mode == "train" else None
    if finished is not None and finished.get("mode") == mode:
        resume.say(f"{model_dir} holds a finished run ({epochs} of {epochs} epochs, {resume.RESULTS_FILE}): "
                   "nothing to train. Pass --overwrite (overwrite=True) to train it again from scratch, or a "
                   "larger train.epochs to continue it.")
        if verbose:
            print("\n" + format_results(finished))
        return finished
    hparams.to_yaml(config, os.path.join(run_dir, "config.yaml"))
    atomic_write_text(os.path.join(run_dir, "labels.txt"), "\n".join(_class_names(source)) + "\n")
    schedule = _schedule(config, epochs)
    if schedule is not None:
        table = schedule.table()
        atomic_write_text(os.path.join(run_dir, "schedule.txt"), table + "\n")
        schedule.plot(os.path.join(run_dir, "schedule.png"))
        if verbose:
            print(table)
    if verbose and minival_info and mode == "traineval":
        print(_minival_text(minival_info))

    with strategy.scope():
        model = build_model_from_config(config, num_classes=int(source.num_classes))
        compile_from_config(model, config, steps_per_epoch, total_steps, multi_label=is_multi_label(config, source),
                            num_classes=int(source.num_classes))
    if is_multi_worker(strategy):  # --- multi-worker hook: Keras 3 needs two narrow fixes there ---
        fit_multi_worker(model, strategy)
    train, progressive = _train_dataset(data_config, source, strategy, schedule)
    with_validation = mode == "traineval" and minival is not None
    monitor = default_monitor(config, is_multi_label(config, source))
    # --- resume hook: restore the newest readable backup before fit, and say where the run resumes ---
    backup = resume.RunBackup(os.path.join(run_dir, resume.BACKUP_DIR), verbose=verbose)
    with strategy.scope():
        resumed_epoch = backup.restore(model)
    resuming = resumed_epoch is not None
    if resuming:
        resume.say(resume.resume_text(model_dir, resumed_epoch, epochs, progressive))
        results["resumed_at_epoch"] = resumed_epoch + 1
    else:
        _remove_stale_selection(run_dir, verbose)
    record = {"weights": "EMA" if config.train.ema_decay > 0 else "model",
              "ema_bn_statistics": bool(config.train.ema_decay > 0 and config.train.ema_bn_statistics)}
    if with_validation:
        record["selected_on"] = _minival_text(minival_info, short=True)
    run_log = resume.RunLog(os.path.join(run_dir, resume.LOG_FILE), resume=resuming)
    # The NaN check first (it ends fit before anything of a diverged epoch is written); the L2 term right
    # after the stage switch (which adds the stage to the logs), before checkpointing and the loggers.
    # The backup last: once it is written, everything else of the epoch (checkpoints, log.csv) is too.
    callbacks = [resume.StopOnNonFiniteLoss(kept=lambda epoch: _kept_text(run_dir, epoch))]
    callbacks += ([progressive] if progressive else []) + [LogL2Loss()]
    callbacks += [
        EMACallback([ModelCheckpoint(run_dir, monitor=monitor if with_validation else None,
                                     restore_best=resuming, record=record)]),
        run_log,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        backup,
    ]
    start = time.perf_counter()
    model.fit(
        train,
        epochs=epochs,
        validation_data=_eval_dataset(config, source, minival) if with_validation else None,
        validation_freq=config.eval.validation_freq,
        callbacks=callbacks,
        verbose=verbose,
    )
    results["train_seconds"] = round(time.perf_counter() - start, 1)
    results["epochs"] = epochs
    results["stages"] = resume.stage_rows(run_log.rows, steps_per_epoch * config.train.batch_size)
    plot_training_curves(run_log.rows, os.path.join(run_dir, "training_curves.png"),
                         title=f"{config.model.name} on {config.data.source}")
    if mode == "traineval":
        # fit() has copied the EMA weights (and averaged BN statistics) into the model: the final model.
        final = evaluate_model(model, config, source, role="final")
        results["evaluations"] = _evaluate_checkpoints(config, run_dir, strategy, source, final=final)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    _finish(results, run_dir, verbose)
    return results


def _kept_text(model_dir, epoch):
    """What a diverged run keeps: the backup and last.keras of the epoch before `epoch` (0-based)."""
    if epoch == 0:
        return "no checkpoint yet (it diverged in the first epoch)"
    return (f"{os.path.join(model_dir, 'last.keras')} and the backup after epoch {epoch}, from before the "
            "divergence")


def _minival_text(info, short=False):
    name = f"'{info['split']}'"
    if "carved_from" not in info:
        return name if short else f"minival: split {name} ({info['examples']} examples)"
    if short:
        return f"minival ({info['examples']} examples carved from '{info['carved_from']}')"
    return (f"minival: {info['examples']} examples carved from '{info['carved_from']}' (data.minival={info['size']}); "
            f"training on the other {info['train_examples']}. Validation (val_*) and best.keras use the minival; "
            "the test split is evaluated once, after training.")


def _format_metric(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_results(results):
    """The results as text tables."""
    lines = [f"model {results['model']} | precision {results['precision']} | replicas {results['replicas']}"]
    if results.get("stages"):
        lines += ["", "| stage | image size | epochs | train time (s) | images/s |", "|---:|---:|---:|---:|---:|"]
        for row in results["stages"]:
            lines.append(f"| {row['stage']} | {row['image_size'] or '-'} | {row['epochs']} | {row['seconds']} | {row['images_per_second']} |")
        lines.append(
            f"\nfit: {results['train_seconds']} s over {results['epochs']} epochs (validation and checkpoints "
            f"included); whole run: {results.get('total_seconds', '-')} s"
        )
    if results.get("minival"):
        lines.append(_minival_text(results["minival"]))
    evaluations = results.get("evaluations") or ([results["evaluation"]] if results.get("evaluation") else [])
    if evaluations:
        first = evaluations[0]
        skip = {"role", "checkpoint", "eval_split", "eval_size"}
        names = [k for k in first if k not in skip and isinstance(first[k], float)]
        header = {"loss": "loss (cross-entropy)", "l2_loss": "L2 term (not in loss)"}
        lines += ["", f"test split '{first['eval_split']}' at {first['eval_size']} px:",
                  "| model | checkpoint | " + " | ".join(header.get(n, n) for n in names) + " |",
                  "|---|---|" + "---:|" * len(names)]
        for evaluation in evaluations:
            values = " | ".join(_format_metric(evaluation.get(n, "-")) for n in names)
            lines.append(f"| {evaluation.get('role') or '-'} | {evaluation['checkpoint']} | {values} |")
    return "\n".join(lines)


def _finish(results, model_dir, verbose):
    atomic_write_text(os.path.join(model_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    if verbose:
        print("\n" + format_results(results))
