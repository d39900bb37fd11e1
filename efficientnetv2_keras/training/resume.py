"""Reruns of a run folder: which runs continue (`check_continuation`) and what a resumed run says.

Rerunning the command of an interrupted run resumes it from its newest readable backup
(training/backup.py) and says where ("resuming runs/x at epoch 9 of 24 (stage 2 of 3, image size 40) from
the backup after epoch 8"); a finished run is reported, not trained again (`run_folder.RunDir.finished`).

A run continues only with the schedule it was trained with: every backup records its `training_layout`
(fit's epochs, each stage's epochs and image size), and a restart under another `train.epochs` or stage
layout (a finished run given more epochs, or an interrupted one) stops before anything is written, naming
--overwrite (train again from scratch there) and a new --model_dir with
`model.init_checkpoint=<run>/best.keras` (finetune from it). Continuing would lay the stages out again:
the run would go back to its first stage's size and regularization, and a cosine learning rate back up.
"""

from efficientnetv2_keras.hparams import ConfigError
from efficientnetv2_keras.training.run_folder import RunDir
from efficientnetv2_keras.training.backup import backup_layout


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


def check_continuation(run_dir, layout):
    """Raises ConfigError when run_dir's newest backup was written under another `training_layout`.

    Continuing a run under another train.epochs (or stage layout) would lay the stages out again (a
    finished 4-epoch, 2-stage run continued with 12 epochs would go back to its first stage's size, and
    a cosine learning rate back up): refused, naming --overwrite and finetuning from the run's
    checkpoint instead. A run continues only with the schedule it was trained with.
    """
    run = RunDir(run_dir)
    trained = next((found for epoch in run.backup_epochs()
                    if (found := backup_layout(run.backup_file(epoch))) is not None), None)
    if trained is None or trained == layout:
        return
    raise ConfigError(
        f"{run.path} was trained with {layout_text(trained)}; this recipe lays out {layout_text(layout)}, and "
        "a run continues only with the schedule it was trained with. Pass --overwrite to train it again from "
        f"scratch in {run.path}, or train into a new --model_dir with --override=model.init_checkpoint="
        f"{run.checkpoint()} to finetune from it."
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
