"""A diverging run stops at its first NaN/inf loss, before anything of that epoch is written.

`StopOnNonFiniteLoss` raises `TrainingDiverged` naming the epoch, step and learning rate, and what was kept
(the last good checkpoint and backup); the command line prints it as one line (exit status 3).
"""

import math

import keras


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names where and what was kept."""


def current_learning_rate(optimizer):
    """The learning rate the optimizer applies now (its schedule at its current step), or None."""
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # an optimizer without a readable learning rate
        return None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the first batch whose loss is NaN or infinite.

    Raising (instead of `stop_training`, `keras.callbacks.TerminateOnNaN`'s default) ends `fit` before the
    epoch ends, so no checkpoint or backup of the diverged weights is written: the last good ones stay.
    `TerminateOnNaN(raise_error=True)` raises too, but a bare RuntimeError naming only the batch; this one
    names the epoch, the optimizer step and learning rate, what was kept and the recipe keys that fix it,
    and its own class lets the command line tell a divergence (exit status 3) from a crash.
    kept: what to name as kept in the message (e.g. "last.keras and the backup after epoch 3").
    """

    def __init__(self, kept=None):
        super().__init__()
        self.kept = kept
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            return
        rate = current_learning_rate(self.model.optimizer)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        kept = self.kept(self._epoch) if callable(self.kept) else self.kept
        rate_text = f", learning rate {rate:.4g}" if rate is not None else ""
        raise TrainingDiverged(
            f"Training diverged: the loss is {loss} at epoch {self._epoch + 1}, step {batch + 1} of the epoch "
            f"(optimizer step {step}{rate_text}). Nothing of this epoch was saved"
            + (f"; kept: {kept}" if kept else "") + ". Lower the learning rate (train.lr_base), lengthen the "
            "warmup (train.lr_warmup_epochs) or clip gradients (train.gradient_clip_norm), then rerun: the run "
            "resumes from the last good backup."
        )
