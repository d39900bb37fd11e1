"""Finetuning helpers (paper §5.2-5.3; REFERENCE §3.8): pretrained weights without the head, min_steps.

The finetuning recipes start from a pretrained checkpoint, keep the new classifier (another class
count) and train for at least 10,000 steps however small the dataset: epochs are raised to
ceil(min_steps / steps_per_epoch) (CIFAR-10 at batch 512: 97 steps per epoch -> 104 epochs).

Checkpoints written by this package's training hold the EMA weights (they are saved with the EMA
swapped in), which is what the released code's `ft_init_ema=True` picks from a TF1 checkpoint.
"""

import math


def epochs_for_min_steps(epochs, min_steps, steps_per_epoch):
    """max(epochs, ceil(min_steps / steps_per_epoch)): the released finetuning's `min_steps` rule."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    if not min_steps:
        return int(epochs)
    return max(int(epochs), math.ceil(min_steps / steps_per_epoch))


def training_steps(config, num_train_examples=None):
    """(steps_per_epoch, epochs, total_steps) of a recipe, `train.min_steps` applied.

    steps_per_epoch is `train.steps_per_epoch`, else num_train_examples // train.batch_size (the
    training pipeline drops the last partial batch).
    """
    train = config.train
    steps_per_epoch = train.steps_per_epoch
    if steps_per_epoch is None:
        if num_train_examples is None:
            raise ValueError("Give num_train_examples or set train.steps_per_epoch.")
        steps_per_epoch = int(num_train_examples) // train.batch_size
        if steps_per_epoch < 1:
            raise ValueError(
                f"The training split has {num_train_examples} examples, fewer than one batch of "
                f"{train.batch_size}: lower train.batch_size."
            )
    epochs = epochs_for_min_steps(train.epochs, train.min_steps, steps_per_epoch)
    return steps_per_epoch, epochs, steps_per_epoch * epochs
