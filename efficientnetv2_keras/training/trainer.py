"""The training system behind `tools/train.py` and `make demo`: a recipe in, a trained model out.

    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import train_and_evaluate
    results = train_and_evaluate(load_config("digits_demo"), "runs/demo", mode="traineval")

Three splits, as in the paper's released code: `data.minival` is carved from `data.train_split`
(which then excludes it) and is the only split seen during training (validation metrics `val_*`,
the choice of `best.keras`); `data.eval_split` is the test split, evaluated once after training, for
the final model (`last.keras`) and the selected one (`best.keras`), each labelled as such.

One `model.fit` runs every progressive-learning stage. `model_dir` receives (its layout: `run_folder.RunDir`):
  config.yaml            the resolved recipe
  schedule.txt/.png      the progressive-learning stages
  labels.txt             class names, one per line (for tools/predict.py)
  last.keras, best.keras EMA weights, written atomically with every backup / when the monitored minival
                         metric improves (no optimizer state: ready for evaluate, predict and export)
  last.json, best.json   which epoch each holds and, for best.keras, the metric value that selected it
                         (a resumed run starts from it, so a worse epoch never replaces best.keras)
  backup/                the last two backups of the training state (raw weights + optimizer + EMA),
                         written crash-safe every train.backup_interval_s of training, at each stage's end
                         and after the last epoch: a rerun resumes from the newest readable one
                         (training/backup.py; a kill loses at most the training since it)
  log.csv, tensorboard/  metrics and stage parameters per epoch, the whole run's (also across restarts);
                         `loss` is the cross-entropy, `l2_loss` the weight-decay term (their sum: the objective)
  training_curves.png    loss/accuracy per epoch with the stage boundaries marked
  results.json           the printed results

Rerunning resumes an interrupted run; a finished run is reported, not trained again (overwrite=True
trains it again from scratch); another train.epochs or stage layout is refused (training/resume.py).
Under MultiWorkerMirroredStrategy only the chief writes into model_dir
(the other workers run the same callbacks on a private folder, and resume from the chief's backups:
training/workers.py).
"""

import os
import time

import keras

from efficientnetv2_keras import hparams
from efficientnetv2_keras.files import atomic_write_text
from efficientnetv2_keras.training.run_folder import RunDir
from efficientnetv2_keras.training import plan, resume, workers
from efficientnetv2_keras.training.backup import BackupCadence, RunBackup
from efficientnetv2_keras.training.callbacks import BestAndLastCheckpoint, read_record
from efficientnetv2_keras.training.costs import CostTimer
from efficientnetv2_keras.training.divergence import StopOnNonFiniteLoss
from efficientnetv2_keras.training.ema import EMACallback, ema_optimizer
from efficientnetv2_keras.training.evaluation import (  # noqa: F401  (the names users import from here)
    evaluate_checkpoints,
    evaluate_model,
    find_checkpoint,
    load_for_evaluation,
    nothing_to_evaluate,
)
from efficientnetv2_keras.training.optimizers import LogL2Loss
from efficientnetv2_keras.training.recipe import resolve_recipe
from efficientnetv2_keras.training.report import (  # noqa: F401
    format_results,
    minival_text,
    no_test_split_text,
    plot_training_curves,
    say,
    write_results,
)
from efficientnetv2_keras.training.run_log import RunLog, stage_rows
from efficientnetv2_keras.training.strategy import (
    check_batches_divide,
    configure_mixed_precision,
    distribution_scope,
    fit_multi_worker,
    get_strategy,
    is_multi_worker,
    resolve_mixed_precision,
    synchronize_batch_norm,
    wants_synchronized_batch_norm,
)

MODES = ("train", "eval", "traineval")


def train_and_evaluate(config, model_dir, mode="traineval", strategy=None, verbose=1, overwrite=False):
    """Runs a recipe: "train", "eval" (of model_dir's last and best checkpoints) or "traineval".

    traineval validates on data.minival during training (choosing best.keras), then evaluates the test
    split (data.eval_split) once for the final model and for best.keras. Returns the results dict that
    is printed and written to `model_dir/results.json`.

    Rerunning resumes an interrupted run from its newest readable backup (and says so). A finished run
    (all train.epochs trained, results.json written) is not trained again: its results are returned;
    overwrite=True trains it again from scratch. A run continues only with the epochs and stages it was
    trained with: another train.epochs or stage layout is a ConfigError naming the ways out
    (`resume.check_continuation`).
    Raises `divergence.TrainingDiverged` at the first NaN/inf loss (the last good checkpoints stay).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    # First: a multi-worker strategy must be created before anything initializes TensorFlow.
    strategy = strategy or get_strategy(config.runtime.strategy, tpu=config.runtime.tpu,
                                        worker_timeout=config.runtime.worker_timeout)
    with distribution_scope(strategy):  # JAX: keras.distribution over the run (build, fit, evaluate)
        return _train_and_evaluate(config, model_dir, mode, strategy, verbose, overwrite)


def _train_and_evaluate(config, model_dir, mode, strategy, verbose, overwrite=False):
    started = time.perf_counter()
    # The run's folder is the chief's (its backups and results are the run's); this process writes into it
    # on the chief, and on every other worker of a multi-worker run into a private folder of its own (the
    # workers run the same callbacks, so that their collective ops match).
    run, own = RunDir(model_dir), RunDir(workers.worker_directory(model_dir, strategy))
    keras.utils.set_random_seed(config.runtime.seed)
    policy = configure_mixed_precision(resolve_mixed_precision(config.train.mixed_precision, strategy))
    recipe = resolve_recipe(config, num_replicas=strategy.num_replicas_in_sync)
    results = {"model": recipe.model_name, "mode": mode, "backend": keras.backend.backend(), "precision": policy,
               "replicas": strategy.num_replicas_in_sync}
    if mode == "eval":
        return _evaluate_run(recipe, run, own, strategy, results, verbose)
    layout = _training_layout(recipe)
    finished = _earlier_run(recipe, run, own, layout, mode, overwrite)
    if finished is not None:
        if verbose:
            print("\n" + format_results(finished))
        return finished
    _check_even_batches(recipe, strategy, [recipe.evaluation.split, recipe.minival] if mode == "traineval" else [])
    model = _build_model(recipe, strategy)
    # The callback tells the pipelines the epoch (ProgressiveLearning, or FitEpoch without stages): a resumed
    # run reads the data the uninterrupted run would have read.
    train, steering = recipe.train_dataset(strategy, verbose=verbose)
    progressive = steering if recipe.schedule is not None else None
    _write_run_files(recipe, own, mode, results, verbose)
    with_validation = mode == "traineval" and recipe.minival is not None
    backup = _restore(recipe, run, own, model, strategy, layout, progressive, with_validation, verbose)
    if backup.restored_epoch is not None:
        results["resumed_at_epoch"] = backup.restored_epoch + 1
    run_log = RunLog(own.log, resume=backup.restored_epoch is not None)
    costs = CostTimer()
    callbacks = _callbacks(recipe, own, model, steering, costs, run_log, backup, with_validation)
    start = time.perf_counter()
    model.fit(
        train,
        # Batch-scaled stages: fewer epochs of steps_per_epoch steps (recipe.fit_epochs), validation where
        # the data seen crosses eval.validation_freq epochs' worth.
        epochs=recipe.fit_epochs,
        steps_per_epoch=recipe.fit_steps_per_epoch,
        validation_data=recipe.eval_dataset(recipe.minival) if with_validation else None,
        validation_freq=recipe.validation_freq,
        callbacks=callbacks,
        verbose=verbose,
    )
    results.update(train_seconds=round(time.perf_counter() - start, 1), epochs=recipe.fit_epochs,
                   steps_per_epoch=recipe.fit_steps_per_epoch or recipe.steps_per_epoch,  # per fit epoch
                   costs=costs.costs, epoch_times=costs.epochs,
                   stages=stage_rows(run_log.rows, recipe.steps_per_epoch * recipe.batch_size,
                                     recipe.fit_steps_per_epoch))
    plot_training_curves(run_log.rows, own.curves_plot, title=f"{recipe.model_name} on {recipe.data_source}")
    if mode == "traineval":
        _evaluate_after_fit(recipe, own, model, strategy, results)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    write_results(results, own.path, verbose)
    return results


def _evaluate_run(recipe, run, own, strategy, results, verbose):
    """mode=eval: the test split for the run's last.keras and best.keras."""
    if not os.path.isdir(run.path):
        raise FileNotFoundError(f"No run directory {run.path!r}: train into it first (mode=train or traineval).")
    if recipe.no_test_split:
        raise nothing_to_evaluate(recipe.no_test_split)
    _check_even_batches(recipe, strategy, [recipe.evaluation.split])
    if not run.has_checkpoint():
        load_for_evaluation(recipe, run.checkpoint())  # raises its "train first" error
    results["evaluations"] = evaluate_checkpoints(recipe, run.path, strategy)
    write_results(results, own.path, verbose)
    return results


def _earlier_run(recipe, run, own, layout, mode, overwrite):
    """What an earlier run in the folder means: the results of a finished one (said, not trained again),
    else None. With overwrite it is removed first; another schedule's run is refused."""
    if overwrite:
        own.clear()
        return None
    # Before anything of an earlier run is rewritten: it continues only under the schedule it was trained
    # with (`resume.check_continuation`). The chief's folder says so for every worker; a worker's own copy
    # where it cannot see the chief's (model_dir not shared).
    folders = [run] if own.path == run.path else [run, own]
    for folder in folders:
        resume.check_continuation(folder.path, layout)
    finished = next((found for folder in folders if (found := folder.finished(recipe.fit_epochs))), None)
    if finished is None or finished.get("mode") != mode:
        return None
    say(f"{run.path} holds a finished run ({recipe.epochs} of {recipe.epochs} epochs, "
        f"{os.path.basename(run.results)}): nothing to train. Pass --overwrite (overwrite=True) to train it again "
        "from scratch.")
    return finished


def _build_model(recipe, strategy):
    """The recipe's model, compiled, under the strategy (and its multi-worker fixes)."""
    with strategy.scope():
        model = recipe.build_model()
        recipe.compile(model)
        # Optimizer variables (slots, EMA averages) made now, not inside the first trace of the train
        # step: TensorFlow traces a step that creates variables a second time (measured: 2 -> 1 trace).
        model.optimizer.build(model.trainable_variables)
    if wants_synchronized_batch_norm(strategy, recipe.sync_batch_norm):
        synchronize_batch_norm(model)
    fit_multi_worker(model, strategy)  # two narrow Keras 3 fixes under MultiWorkerMirroredStrategy
    return model


def _write_run_files(recipe, own, mode, results, verbose):
    """config.yaml, labels.txt and the schedule, and what the run says before it trains.

    Everything the recipe can get wrong has been checked by now (resolve_recipe: too few epochs for the
    stages, ...; the model built), so a failed start leaves nothing behind (and a resumed run's files are
    not replaced by a broken recipe's).
    """
    os.makedirs(own.path, exist_ok=True)
    hparams.to_yaml(recipe.config, own.config)
    atomic_write_text(own.labels, "\n".join(recipe.class_names()) + "\n")
    if recipe.minival_info:
        results["minival"] = recipe.minival_info
    if recipe.schedule is not None:
        table = recipe.schedule.table()
        atomic_write_text(own.schedule_text, table + "\n")
        recipe.schedule.plot(own.schedule_plot)
        if verbose:
            print(table)
    if verbose and recipe.minival_info and mode == "traineval":
        print(minival_text(recipe.minival_info, test_split=not recipe.no_test_split))
    if verbose and recipe.no_test_split and mode == "traineval":
        print(no_test_split_text(recipe.no_test_split))


def _restore(recipe, run, own, model, strategy, layout, progressive, with_validation, verbose):
    """The backup callback, with the newest readable backup restored (fit starts after its epoch); says
    what the run writes and where it resumes. Multi-worker: the workers agree on the epoch to resume
    after, and on each epoch that is backed up."""
    meeting = workers.WorkerMeeting(strategy) if is_multi_worker(strategy) else None
    interval = recipe.backup_interval_s
    cadence = BackupCadence(interval, always=_stage_ends(recipe, progressive), agree=meeting.any if meeting else None)
    backup = RunBackup(run.backup, own.backup, verbose=verbose, layout=layout, cadence=cadence, meeting=meeting)
    with strategy.scope():
        resumed_epoch = backup.restore(model)
    if verbose:
        selected_on = minival_text(recipe.minival_info, short=True) if with_validation else None
        print("\n".join(plan.checkpoint_plan(
            run.path, recipe.validation_freq, recipe.monitor if with_validation else None, selected_on,
            resumed_epoch is not None, backup_interval_s=interval, stages=progressive is not None)))
    if resumed_epoch is not None:
        say(resume.resume_text(run.path, resumed_epoch, recipe.fit_epochs, progressive))
    else:  # a fresh run must not inherit best.keras (and its recorded value) from an earlier run here
        removed = own.remove_selection()
        if removed and verbose:
            print(f"New run in {own.path}: removed the earlier run's {' and '.join(removed)}.")
    return backup


def _callbacks(recipe, own, model, steering, costs, run_log, backup, with_validation):
    """fit's callbacks, in order.

    The NaN check first (it ends fit before anything of a diverged epoch is written); the L2 term right
    after the stage switch (which adds the stage to the logs), before checkpointing and the loggers. The
    backup last: once it is written, everything else of the epoch (checkpoints, log.csv) is too.
    """
    record = {"weights": "EMA" if recipe.compile_settings.optimizer.ema_decay > 0 else "model",  # statistics: not averaged on JAX
              "ema_bn_statistics": bool(getattr(ema_optimizer(model), "ema_statistics", None))}
    if with_validation:
        record["selected_on"] = minival_text(recipe.minival_info, short=True)
    checkpoints = BestAndLastCheckpoint(own.path, monitor=recipe.monitor if with_validation else None,
                                        restore_best=backup.restored_epoch is not None, record=record,
                                        cadence=backup.cadence)
    return [
        StopOnNonFiniteLoss(kept=lambda epoch: _kept_text(own, epoch)),
        steering, LogL2Loss(), costs,
        EMACallback([checkpoints]),
        run_log,
        keras.callbacks.TensorBoard(own.tensorboard, write_graph=False),
        backup,
    ]


def _evaluate_after_fit(recipe, own, model, strategy, results):
    """traineval: the test split, once for the final model (in memory) and for best.keras."""
    if recipe.no_test_split:
        results.setdefault("notes", []).append(no_test_split_text(recipe.no_test_split))
        return
    # fit() has copied the EMA weights (and averaged BN statistics) into the model: the final model.
    evaluation_start = time.perf_counter(), time.process_time()
    final = evaluate_model(model, recipe, role="final")
    results["evaluations"] = evaluate_checkpoints(recipe, own.path, strategy, final=final)
    results["costs"]["test_evaluation"] = {"wall": round(time.perf_counter() - evaluation_start[0], 2),
                                           "cpu": round(time.process_time() - evaluation_start[1], 2)}


def _check_even_batches(recipe, strategy, eval_splits):
    """JAX DataParallel: the training batch and the evaluated splits' batches split over the devices."""
    check_batches_divide(strategy, recipe.batch_size, recipe.evaluation.batch_size, eval_splits,
                         recipe.source.num_examples)


def _training_layout(recipe):
    """The epochs and stages this recipe trains (`resume.training_layout`)."""
    stages = [(s.start, s.end, s.image_size) for s in recipe.schedule.stages] if recipe.schedule else ()
    return resume.training_layout(recipe.fit_epochs, stages)


def _stage_ends(recipe, progressive):
    """The 1-based epochs after which a stage ends, the last epoch included: always backed up."""
    epochs = recipe.fit_epochs
    if progressive is None:
        return {epochs}
    return {epoch + 1 for epoch in range(epochs - 1)
            if progressive.stage_for_epoch(epoch) is not progressive.stage_for_epoch(epoch + 1)} | {epochs}


def _kept_text(own, epoch):
    """What a diverged run keeps: last.keras and the newest backup, both from before `epoch` (0-based)."""
    backups = own.backup_epochs()
    if not backups:
        return "no backup yet (it diverged before the first one)"
    written = (read_record(own.last) or {}).get("epoch")
    last = "" if written is None else f"{own.last} and " if written == backups[0] else \
        f"{own.last} (after epoch {written}) and "
    return f"{last}the backup after epoch {backups[0]}, from before the divergence"
