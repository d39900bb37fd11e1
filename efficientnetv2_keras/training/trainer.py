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
  backup/                the last two epochs' training state (raw weights + optimizer + EMA), written
                         crash-safe: a rerun resumes from the newest readable one (training/resume.py)
  log.csv, tensorboard/  metrics and stage parameters per epoch, the whole run's (also across restarts);
                         `loss` is the cross-entropy, `l2_loss` the weight-decay term (their sum: the objective)
  training_curves.png    loss/accuracy per epoch with the stage boundaries marked
  results.json           the printed results

Rerunning resumes an interrupted run; a finished run is reported, not trained again (overwrite=True
trains it again from scratch). Under MultiWorkerMirroredStrategy only the chief writes into model_dir
(the other workers run the same callbacks on a private folder, and resume from the chief's backups:
training/workers.py).
"""

import os
import time

import keras

from efficientnetv2_keras import hparams
from efficientnetv2_keras.files import atomic_write_text
from efficientnetv2_keras.training import plan, resume, workers
from efficientnetv2_keras.training.callbacks import BestAndLastCheckpoint, read_record
from efficientnetv2_keras.training.costs import CostTimer
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
    write_results,
)
from efficientnetv2_keras.training.strategy import (
    check_even_batches,
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
    overwrite=True trains it again from scratch. A run continues only with the epochs and stages it was
    trained with: another train.epochs or stage layout is a ConfigError naming the ways out
    (`resume.check_continuation`).
    Raises `resume.TrainingDiverged` at the first NaN/inf loss (the last good checkpoints stay).
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
    # The chief writes into model_dir; every other worker of a multi-worker run runs the same callbacks
    # (so their collective ops match) on a private folder of its own.
    run_dir = workers.worker_directory(model_dir, strategy)
    keras.utils.set_random_seed(config.runtime.seed)
    policy = configure_mixed_precision(resolve_mixed_precision(config.train.mixed_precision, strategy))
    recipe = resolve_recipe(config, num_replicas=strategy.num_replicas_in_sync)
    config, source = recipe.config, recipe.source  # config: with a converted init_checkpoint's inputs
    results = {"model": config.model.name, "mode": mode, "backend": keras.backend.backend(), "precision": policy,
               "replicas": strategy.num_replicas_in_sync}

    if mode == "eval":
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"No run directory {model_dir!r}: train into it first (mode=train or traineval).")
        if recipe.no_test_split:
            raise nothing_to_evaluate(recipe.no_test_split)
        check_even_batches(strategy, config, source)  # JAX DataParallel: batches split over the devices
        if not any(os.path.exists(os.path.join(model_dir, n)) for n in ("last.keras", "best.keras")):
            load_for_evaluation(config, find_checkpoint(model_dir))  # raises its "train first" error
        results["evaluations"] = evaluate_checkpoints(config, model_dir, strategy, source)
        write_results(results, run_dir, verbose)
        return results

    layout = _training_layout(recipe)
    if overwrite:
        resume.clear_run(run_dir)
    else:
        # Before anything of an earlier run is rewritten: it continues only under the schedule it was
        # trained with, and a finished run is reported, not trained again. The chief's folder says so for
        # every worker (the run's backups and results are the chief's).
        resume.check_continuation(model_dir, layout)
        finished = resume.finished_run(model_dir, recipe.fit_epochs)
    if not overwrite and finished is not None and finished.get("mode") == mode:
        resume.say(f"{model_dir} holds a finished run ({recipe.epochs} of {recipe.epochs} epochs, "
                   f"{resume.RESULTS_FILE}): nothing to train. Pass --overwrite (overwrite=True) to train it "
                   "again from scratch.")
        if verbose:
            print("\n" + format_results(finished))
        return finished
    check_even_batches(strategy, config, source, recipe.minival, evaluate=mode == "traineval")  # JAX DataParallel
    with strategy.scope():
        model = recipe.build_model()
        recipe.compile(model)
        # Optimizer variables (slots, EMA averages) made now, not inside the first trace of the train
        # step: TensorFlow traces a step that creates variables a second time (measured: 2 -> 1 trace).
        model.optimizer.build(model.trainable_variables)
    if wants_synchronized_batch_norm(strategy, config.model.sync_batch_norm):
        synchronize_batch_norm(model)
    fit_multi_worker(model, strategy)  # two narrow Keras 3 fixes under MultiWorkerMirroredStrategy
    # The callback tells the pipelines the epoch (ProgressiveLearning, or FitEpoch without stages): a resumed
    # run reads the data the uninterrupted run would have read.
    train, steering = recipe.train_dataset(strategy)
    progressive = steering if recipe.schedule is not None else None

    # Everything the recipe can get wrong has been checked (resolve_recipe: too few epochs for the stages,
    # ...; the model built): only now write into model_dir, so a failed start leaves nothing behind (and a
    # resumed run's files are not replaced by a broken recipe's).
    os.makedirs(run_dir, exist_ok=True)
    hparams.to_yaml(config, os.path.join(run_dir, "config.yaml"))
    atomic_write_text(os.path.join(run_dir, "labels.txt"), "\n".join(recipe.class_names()) + "\n")
    if recipe.minival_info:
        results["minival"] = recipe.minival_info
    if recipe.schedule is not None:
        table = recipe.schedule.table()
        atomic_write_text(os.path.join(run_dir, "schedule.txt"), table + "\n")
        recipe.schedule.plot(os.path.join(run_dir, "schedule.png"))
        if verbose:
            print(table)
    if verbose and recipe.minival_info and mode == "traineval":
        print(minival_text(recipe.minival_info, test_split=not recipe.no_test_split))
    if verbose and recipe.no_test_split and mode == "traineval":
        print(no_test_split_text(recipe.no_test_split))

    with_validation = mode == "traineval" and recipe.minival is not None
    # Restore the newest readable backup before fit (fit starts after its epoch), and say where.
    # Multi-worker: the workers agree on the epoch to resume after, and on each epoch that is backed up.
    meeting = workers.WorkerMeeting(strategy) if is_multi_worker(strategy) else None
    cadence = resume.BackupCadence(config.train.backup_interval_s, always=_stage_ends(recipe, progressive),
                                   agree=meeting.any if meeting else None)
    backup = resume.RunBackup(os.path.join(model_dir, resume.BACKUP_DIR), os.path.join(run_dir, resume.BACKUP_DIR),
                              verbose=verbose, layout=layout, cadence=cadence, meeting=meeting)
    with strategy.scope():
        resumed_epoch = backup.restore(model)
    resuming = resumed_epoch is not None
    if verbose:
        print("\n".join(plan.checkpoint_plan(
            model_dir, recipe.validation_freq, recipe.monitor if with_validation else None,
            minival_text(recipe.minival_info, short=True) if with_validation else None, resuming,
            backup_interval_s=config.train.backup_interval_s, stages=progressive is not None)))
    if resuming:
        resume.say(resume.resume_text(model_dir, resumed_epoch, recipe.fit_epochs, progressive))
        results["resumed_at_epoch"] = resumed_epoch + 1
    else:
        _remove_stale_selection(run_dir, verbose)
    record = {"weights": "EMA" if config.train.ema_decay > 0 else "model",  # statistics: not averaged on JAX
              "ema_bn_statistics": bool(getattr(ema_optimizer(model), "ema_statistics", None))}
    if with_validation:
        record["selected_on"] = minival_text(recipe.minival_info, short=True)
    run_log = resume.RunLog(os.path.join(run_dir, resume.LOG_FILE), resume=resuming)
    costs = CostTimer()
    # The NaN check first (it ends fit before anything of a diverged epoch is written); the L2 term right
    # after the stage switch (which adds the stage to the logs), before checkpointing and the loggers.
    # The backup last: once it is written, everything else of the epoch (checkpoints, log.csv) is too.
    callbacks = [resume.StopOnNonFiniteLoss(kept=lambda epoch: _kept_text(run_dir, epoch))]
    callbacks += [steering, LogL2Loss(), costs]
    callbacks += [
        EMACallback([BestAndLastCheckpoint(run_dir, monitor=recipe.monitor if with_validation else None,
                                           restore_best=resuming, record=record, cadence=cadence)]),
        run_log,
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
        backup,
    ]
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
    results["train_seconds"] = round(time.perf_counter() - start, 1)
    results["epochs"] = recipe.fit_epochs
    results["steps_per_epoch"] = recipe.fit_steps_per_epoch or recipe.steps_per_epoch  # per fit epoch
    results["costs"] = costs.costs
    results["epoch_times"] = costs.epochs
    results["stages"] = resume.stage_rows(run_log.rows, recipe.steps_per_epoch * recipe.batch_size,
                                          recipe.fit_steps_per_epoch)
    plot_training_curves(run_log.rows, os.path.join(run_dir, "training_curves.png"),
                         title=f"{config.model.name} on {config.data.source}")
    if mode == "traineval" and recipe.no_test_split:
        results.setdefault("notes", []).append(no_test_split_text(recipe.no_test_split))
    elif mode == "traineval":
        # fit() has copied the EMA weights (and averaged BN statistics) into the model: the final model.
        evaluation_start = time.perf_counter(), time.process_time()
        final = evaluate_model(model, config, source, role="final")
        results["evaluations"] = evaluate_checkpoints(config, run_dir, strategy, source, final=final)
        results["costs"]["test_evaluation"] = {"wall": round(time.perf_counter() - evaluation_start[0], 2),
                                               "cpu": round(time.process_time() - evaluation_start[1], 2)}
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    write_results(results, run_dir, verbose)
    return results


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


def _kept_text(model_dir, epoch):
    """What a diverged run keeps: last.keras and the newest backup, both from before `epoch` (0-based)."""
    last = os.path.join(model_dir, "last.keras")
    backups = resume.backup_epochs(os.path.join(model_dir, resume.BACKUP_DIR))
    if not backups:
        return "no backup yet (it diverged before the first one)"
    written = (read_record(last) or {}).get("epoch")
    last_text = "" if written is None else last + (" and " if written == backups[0] else f" (after epoch {written}) and ")
    return f"{last_text}the backup after epoch {backups[0]}, from before the divergence"
