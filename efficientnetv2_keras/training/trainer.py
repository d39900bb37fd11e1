"""The training system behind `tools/train.py` and `make demo`: a recipe in, a trained model out.

    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import train_and_evaluate
    results = train_and_evaluate(load_config("digits_demo"), "runs/demo", mode="traineval")

One `model.fit` runs every progressive-learning stage. `model_dir` receives:
  config.yaml            the resolved recipe
  schedule.txt/.png      the progressive-learning stages
  labels.txt             class names, one per line (for tools/predict.py)
  last.keras, best.keras EMA weights, written atomically every epoch / when the monitored metric
                         improves (no optimizer state: ready for evaluate, predict and export)
  backup/                BackupAndRestore state (raw weights + optimizer + EMA): a rerun resumes
  log.csv, tensorboard/  metrics and stage parameters per epoch
  training_curves.png    loss/accuracy per epoch with the stage boundaries marked
  results.json           the printed results
"""

import json
import math
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from efficientnetv2_keras import hparams
from efficientnetv2_keras.data import build_dataset, get_source
from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
from efficientnetv2_keras.training.builders import build_model_from_config, compile_from_config, is_multi_label
from efficientnetv2_keras.training.ema import EMACallback
from efficientnetv2_keras.training.finetune import training_steps
from efficientnetv2_keras.training.losses import default_monitor
from efficientnetv2_keras.training.strategy import configure_mixed_precision, get_strategy, resolve_mixed_precision

MODES = ("train", "eval", "traineval")


def _atomic_write(path, write):
    """`write(tmp_path)` then rename onto `path`: a crash never leaves a half-written file there."""
    directory = os.path.dirname(os.path.abspath(path))
    suffix = ".keras" if path.endswith(".keras") else os.path.splitext(path)[1]
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class ModelCheckpoint(keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` when `monitor` improves, atomically.

    Saves an uncompiled twin of the model (same weights, no optimizer state: a quarter of the size),
    so the files load with `keras.models.load_model` for evaluation, prediction and export. Put it
    inside `EMACallback` to save the EMA weights.
    """

    def __init__(self, directory, monitor="val_accuracy"):
        super().__init__()
        self.directory = directory
        self.monitor = monitor  # higher is better; None: only last.keras
        self.best = -math.inf
        self._twin = None

    def on_train_begin(self, logs=None):
        # From the config, not clone_model: a clone keeps the compile config (optimizer, schedule).
        self._twin = self.model.__class__.from_config(self.model.get_config())

    def _save(self, name):
        self._twin.set_weights(self.model.get_weights())
        _atomic_write(os.path.join(self.directory, name), self._twin.save)

    def on_epoch_end(self, epoch, logs=None):
        self._save("last.keras")
        value = (logs or {}).get(self.monitor) if self.monitor else None
        if value is None:
            return
        if value > self.best:
            self.best = float(value)
            self._save("best.keras")


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


def _write_text(path, text):
    _atomic_write(path, lambda tmp: open(tmp, "w", encoding="utf-8").write(text))


def _eval_dataset(config, source):
    """The recipe's held-out split at its eval size, with the evaluation preprocessing."""
    _, eval_size = hparams.image_sizes(config)
    return build_dataset(source, config.data.eval_split, eval_size, config.eval.batch_size, training=False,
                         **hparams.dataset_options(config))


def _train_dataset(config, source, strategy, schedule):
    """(training dataset for fit, the ProgressiveLearning callback or None)."""
    options = hparams.dataset_options(config)
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
    """model_dir's best.keras, else its last.keras (the path of best.keras when neither exists)."""
    for name in ("best.keras", "last.keras"):
        if os.path.exists(os.path.join(model_dir, name)):
            return os.path.join(model_dir, name)
    return os.path.join(model_dir, "best.keras")


def evaluate_model(model, config, source=None, checkpoint_name=""):
    """Evaluates a compiled model on the recipe's eval split at its eval size; returns the metrics."""
    source = source or get_source(config.data.source, data_dir=config.data.data_dir, **config.data.source_options)
    metrics = model.evaluate(_eval_dataset(config, source), verbose=0, return_dict=True)
    return {"checkpoint": checkpoint_name, "eval_split": config.data.eval_split,
            "eval_size": hparams.image_sizes(config)[1],
            **{k: float(v) for k, v in metrics.items()}}


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


def train_and_evaluate(config, model_dir, mode="traineval", strategy=None, verbose=1):
    """Runs a recipe: "train", "eval" (of model_dir's best or last checkpoint) or "traineval".

    Returns the results dict that is printed and written to `model_dir/results.json`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    started = time.perf_counter()
    os.makedirs(model_dir, exist_ok=True)
    keras.utils.set_random_seed(config.runtime.seed)
    strategy = strategy or get_strategy(config.runtime.strategy, tpu=config.runtime.tpu)
    policy = configure_mixed_precision(resolve_mixed_precision(config.train.mixed_precision, strategy))
    source = get_source(config.data.source, data_dir=config.data.data_dir, **config.data.source_options)
    results = {"model": config.model.name, "mode": mode, "precision": policy, "replicas": strategy.num_replicas_in_sync}

    if mode == "eval":
        checkpoint = find_checkpoint(model_dir)
        with strategy.scope():
            model = load_for_evaluation(config, checkpoint)
        results["evaluation"] = evaluate_model(model, config, source, os.path.basename(checkpoint))
        _finish(results, model_dir, verbose)
        return results

    hparams.to_yaml(config, os.path.join(model_dir, "config.yaml"))
    _write_text(os.path.join(model_dir, "labels.txt"), "\n".join(_class_names(source)) + "\n")
    steps_per_epoch, epochs, total_steps = training_steps(config, source.num_examples(config.data.train_split))
    schedule = _schedule(config, epochs)
    if schedule is not None:
        table = schedule.table()
        _write_text(os.path.join(model_dir, "schedule.txt"), table + "\n")
        schedule.plot(os.path.join(model_dir, "schedule.png"))
        if verbose:
            print(table)

    with strategy.scope():
        model = build_model_from_config(config, num_classes=int(source.num_classes))
        compile_from_config(model, config, steps_per_epoch, total_steps, multi_label=is_multi_label(config, source),
                            num_classes=int(source.num_classes))
    train, progressive = _train_dataset(config, source, strategy, schedule)
    with_validation = mode == "traineval"
    monitor = default_monitor(config, is_multi_label(config, source))
    backup_dir = os.path.join(model_dir, "backup")
    resuming = os.path.isdir(backup_dir)  # an interrupted run: fit continues from its last epoch
    timer = StageTimer(steps_per_epoch * config.train.batch_size)
    # The timer right after the stage switch (which adds the stage to the logs) and before
    # checkpointing, so it times training alone.
    callbacks = ([progressive] if progressive else []) + [timer] + [
        EMACallback([ModelCheckpoint(model_dir, monitor=monitor if with_validation else None)]),
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "log.csv"), append=resuming),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "tensorboard"), write_graph=False),
    ]
    start = time.perf_counter()
    model.fit(
        train,
        epochs=epochs,
        validation_data=_eval_dataset(config, source) if with_validation else None,
        validation_freq=config.eval.validation_freq,
        callbacks=callbacks,
        verbose=verbose,
    )
    results["train_seconds"] = round(time.perf_counter() - start, 1)
    results["epochs"] = epochs
    results["stages"] = timer.rows()
    plot_training_curves(timer.epoch_logs, os.path.join(model_dir, "training_curves.png"),
                         title=f"{config.model.name} on {config.data.source}")
    if with_validation:
        # fit() has copied the EMA weights into the model (use_ema): this is the EMA model.
        results["evaluation"] = evaluate_model(model, config, source, "final EMA weights")
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    _finish(results, model_dir, verbose)
    return results


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
    evaluation = results.get("evaluation")
    if evaluation:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items() if isinstance(v, float))
        lines.append(f"held-out '{evaluation['eval_split']}' at {evaluation['eval_size']} px ({evaluation['checkpoint']}): {metrics}")
    return "\n".join(lines)


def _finish(results, model_dir, verbose):
    _write_text(os.path.join(model_dir, "results.json"), json.dumps(results, indent=2) + "\n")
    if verbose:
        print("\n" + format_results(results))
