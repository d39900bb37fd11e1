"""What a training run will do, said before it starts.

Short trial runs (`--override train.epochs=2`) meet a recipe rule that makes sense for long runs: every
progressive stage needs at least one epoch (the resolver's
`training.recipe.check_stages` names the fix). Validation (which selects
`best.keras`) runs every `eval.validation_freq` epochs and always after the last one, so a validating run
always has a best.keras; `checkpoint_plan` prints the epochs fit validates, from the same list fit gets.

Decision: a run with fewer epochs than `progressive.num_stages` stops before writing anything, with
the override that fixes it; it does not shrink the stages itself, because the schedule (sizes,
regularization per stage) is part of the recipe the run's config.yaml records.

Decision: a run continues only with the epochs and stages it was trained with. Rerunning a finished or
interrupted run with another `train.epochs` (or stage layout) stops before training, naming what differs
and the two ways out: --overwrite (train again from scratch in that folder), or a new --model_dir with
`model.init_checkpoint=<old run>/best.keras` (finetune from it). Continuing would lay the stages out
again, back to the first stage's size and a high learning rate (training/resume.py).
"""


def validated_epochs(epochs, validation_freq):
    """The 1-based epochs validated with `eval.validation_freq=N` over `epochs`: N, 2N, ... and always the
    last epoch, so a validating run always selects a best.keras."""
    return sorted(set(range(validation_freq, epochs + 1, validation_freq)) | {epochs})


def _epoch_list(epochs):
    shown = ", ".join(str(e) for e in epochs[:4])
    return shown + (f", ... {epochs[-1]}" if len(epochs) > 4 else "")


def backup_text(backup_interval_s, stages=True):
    """When last.keras and backup/ are written (`train.backup_interval_s`, training/backup.BackupCadence)."""
    if backup_interval_s <= 0:
        return "after every epoch"
    return (("at the end of each stage, " if stages else "") + "after the last epoch and every "
            f"{backup_interval_s:g} s of training in between (train.backup_interval_s)")


def checkpoint_plan(model_dir, validated, monitor=None, selected_on=None, resuming=False, backup_interval_s=0,
                    stages=True):
    """Lines that say which checkpoints a run writes into model_dir, and when.

    validated: the 1-based epochs that fit validates (the list `fit` is given: `Recipe.validation_freq`).
    monitor: the metric that selects best.keras (None: no validation, so no best.keras).
    backup_interval_s, stages: when last.keras and backup/ are written (`backup_text`).
    """
    lines = [f"Checkpoints in {model_dir}: last.keras (+ last.json) and backup/ "
             f"{backup_text(backup_interval_s, stages)}; a rerun of the same command (same train.epochs) resumes "
             "from backup/, which is kept after the run (a rerun then reports it finished). A kill loses at most "
             "the training since the last backup."]
    if monitor is None:
        lines.append("No best.keras: this run does not validate (mode=train, or data.minival=null).")
        return lines
    lines.append(
        f"best.keras (+ best.json) when {monitor} on {selected_on or 'the minival'} improves, validated at "
        f"epoch{'s' if len(validated) > 1 else ''} {_epoch_list(validated)}"
        + (" (a resumed run keeps the best value so far)." if resuming else ".")
    )
    return lines


def __getattr__(name):
    # `check_stages(config, epochs)` reads the recipe, so it is the resolver's (training.recipe); still
    # importable from here.
    if name == "check_stages":
        from efficientnetv2_keras.training.recipe import check_stages

        return check_stages
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
