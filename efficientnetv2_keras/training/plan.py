"""What a training run will do, said before it starts (and why a file is missing after it ends).

Short trial runs (`--override train.epochs=2`) meet two recipe rules that make sense for long runs:
every progressive stage needs at least one epoch, and validation (which selects `best.keras`) runs
every `eval.validation_freq` epochs. These functions turn both into messages that name the fix.

Decision: a run with fewer epochs than `progressive.num_stages` stops before writing anything, with
the override that fixes it; it does not shrink the stages itself, because the schedule (sizes,
regularization per stage) is part of the recipe the run's config.yaml records.
"""

from efficientnetv2_keras.hparams import ConfigError


def check_stages(config, epochs):
    """Raises ConfigError naming the fix when `epochs` cannot hold `progressive.num_stages` stages."""
    progressive = config.progressive
    if not progressive.enabled or epochs >= progressive.num_stages:
        return
    why = f"train.epochs={config.train.epochs}"
    if epochs != config.train.epochs:
        why += f" (train.min_steps={config.train.min_steps} makes it {epochs} epochs)"
    raise ConfigError(
        f"{why} is fewer epochs than progressive.num_stages={progressive.num_stages}, and every progressive "
        f"stage needs at least one epoch. For a short run add --override=progressive.num_stages={epochs} "
        "(or progressive.enabled=false for no stages), or train for more epochs."
    )


def validated_epochs(epochs, validation_freq):
    """The 1-based epochs Keras validates with `validation_freq=N`: N, 2N, ... up to `epochs`."""
    return list(range(validation_freq, epochs + 1, validation_freq))


def _epoch_list(epochs):
    shown = ", ".join(str(e) for e in epochs[:4])
    return shown + (f", ... {epochs[-1]}" if len(epochs) > 4 else "")


def checkpoint_plan(model_dir, epochs, validation_freq, monitor=None, selected_on=None, resuming=False):
    """Lines that say which checkpoints a run writes into model_dir, and when.

    monitor: the metric that selects best.keras (None: no validation, so no best.keras).
    """
    lines = [f"Checkpoints in {model_dir}: last.keras (+ last.json) after every epoch; backup/ after every "
             "epoch for resuming (rerun the same command), removed when the run finishes."]
    if monitor is None:
        lines.append("No best.keras: this run does not validate (mode=train, or data.minival=null).")
        return lines
    validated = validated_epochs(epochs, validation_freq)
    if not validated:
        lines.append(
            f"No best.keras: validation runs every {validation_freq} epochs (eval.validation_freq) and this run "
            f"has {epochs}; add --override=eval.validation_freq={epochs} (or 1) to validate and select one."
        )
        return lines
    lines.append(
        f"best.keras (+ best.json) when {monitor} on {selected_on or 'the minival'} improves, validated at "
        f"epoch{'s' if len(validated) > 1 else ''} {_epoch_list(validated)}"
        + (" (a resumed run keeps the best value so far)." if resuming else ".")
    )
    return lines


def missing_best_reason(epochs_run, validation_freq):
    """Why a validating run ended without best.keras, or None when validation ran."""
    if validated_epochs(epochs_run, validation_freq):
        return None
    return (f"No best.keras: validation runs every {validation_freq} epochs (eval.validation_freq) and the run "
            f"had {epochs_run}, so no epoch was validated; tools/evaluate.py and the results use last.keras.")
