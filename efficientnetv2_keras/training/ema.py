"""Exponential moving average (EMA) of the weights: evaluation and checkpoints use it (paper §5.1).

The average itself is Keras': an optimizer with `use_ema=True, ema_momentum=d` keeps
`_model_variables_moving_average` (one per trainable variable) up to date inside the compiled train
step. This module adds what the recipe needs around it:

* `EMAWarmupMixin` (used by this package's optimizers): the released code's TF1
  `ExponentialMovingAverage(decay, num_updates=global_step)` uses min(decay, (1 + t) / (10 + t)),
  so early on the average follows the weights closely. Keras uses the fixed decay from step 2, and
  0.9999 then needs ~10^4 steps before the average forgets the random initialization: useless for
  short runs and finetuning. With `ema_warmup=True` the ramp is applied (t = the step being taken).
* `ema_weights(model)`: a context manager that swaps the EMA values into the model and back (exactly:
  values are copied, not added and subtracted).
* `EMACallback`: evaluation inside `fit` (validation metrics) uses the EMA weights, and the callbacks
  it wraps (e.g. best/last `ModelCheckpoint`s) run their `on_epoch_end` with the EMA weights in the
  model, while training continues on the raw weights. Callbacks outside it (e.g. `BackupAndRestore`)
  see the raw weights and the optimizer's averages, which is what a resumed run needs.
* `apply_ema_weights(model)`: copies the averages into the model for good (export, manual loops).

Two behaviours of Keras to know:
* At the end of `fit`, Keras overwrites the model weights with the averages
  (`optimizer.finalize_variable_values`). After `fit` the model holds the EMA weights; a second `fit`
  continues from them.
* Only trainable variables are averaged. The released code also averages BatchNorm moving means and
  variances; here they stay the running statistics of the raw weights (they are themselves moving
  averages, with momentum 0.99/0.9), so evaluation uses EMA weights with raw-weight BN statistics.
"""

import contextlib
import functools

import keras
import numpy as np
from keras import ops


class EMAWarmupMixin:
    """Ramps the EMA decay as min(ema_momentum, (1 + t) / (10 + t)) when `ema_warmup` is true.

    Mix into a Keras optimizer class before it: `class RMSprop(EMAWarmupMixin, keras.optimizers.RMSprop)`.
    t is the number of the step being applied (1 for the first); as in Keras, the very first step
    copies the weights into the average (the TF1 average starts from the initial weights instead).
    """

    def __init__(self, *args, ema_warmup=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_warmup = bool(ema_warmup)

    def effective_ema_momentum(self, step=None):
        """The decay used for the update at `step` (default: the next one), as a tensor."""
        step = self.iterations if step is None else step
        t = ops.cast(step, "float32") + 1.0
        momentum = ops.convert_to_tensor(float(self.ema_momentum), "float32")
        if self.ema_warmup:
            momentum = ops.minimum(momentum, (1.0 + t) / (10.0 + t))
        return momentum

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema or not self.ema_warmup:
            return super()._update_model_variables_moving_average(trainable_variables)
        not_first_step = ops.cast(ops.not_equal(self.iterations, 0), "float32")
        momentum32 = not_first_step * self.effective_ema_momentum()
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is None:
                continue
            momentum = ops.cast(momentum32, var.dtype)
            average.assign(ops.add(ops.multiply(momentum, average), ops.multiply(ops.subtract(1, momentum), var)))

    def get_config(self):
        config = super().get_config()
        config["ema_warmup"] = self.ema_warmup
        return config


def ema_optimizer(model_or_optimizer):
    """The optimizer holding the averages (unwrapping a LossScaleOptimizer), or None without EMA."""
    if isinstance(model_or_optimizer, keras.optimizers.Optimizer):
        optimizer = model_or_optimizer
    else:
        optimizer = getattr(model_or_optimizer, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if optimizer is None or not getattr(optimizer, "use_ema", False):
        return None
    return optimizer


def _pairs(model, optimizer):
    optimizer = ema_optimizer(optimizer if optimizer is not None else model)
    if optimizer is None:
        raise ValueError(
            f"Model {getattr(model, 'name', model)!r} has no optimizer with use_ema=True: compile it with "
            "training.build_optimizer (train.ema_decay > 0) or a Keras optimizer with use_ema=True."
        )
    if not optimizer.built:
        return []  # no step taken yet: the model weights are the only values
    variables = optimizer._trainable_variables
    averages = optimizer._model_variables_moving_average
    if len(variables) != len(averages):
        raise ValueError(f"The optimizer tracks {len(variables)} variables but {len(averages)} averages.")
    return [(v, a) for v, a in zip(variables, averages) if a is not None]


def ema_variables(model, optimizer=None):
    """[(model variable, its moving average)] for the model's trainable variables."""
    return _pairs(model, optimizer)


def swap_ema_weights(model, optimizer=None):
    """Exchanges the model's trainable weights and their averages in place (exact copies)."""
    for variable, average in _pairs(model, optimizer):
        raw = ops.convert_to_numpy(variable)
        variable.assign(ops.convert_to_numpy(average))
        average.assign(raw)


def apply_ema_weights(model, optimizer=None):
    """Copies the averages into the model for good (what Keras does at the end of `fit`)."""
    for variable, average in _pairs(model, optimizer):
        variable.assign(ops.convert_to_numpy(average))


@contextlib.contextmanager
def ema_weights(model, optimizer=None):
    """`with ema_weights(model): model.evaluate(...)` runs with the EMA weights, then restores the raw ones."""
    swap_ema_weights(model, optimizer)
    try:
        yield model
    finally:
        swap_ema_weights(model, optimizer)


def max_ema_difference(model, optimizer=None):
    """Largest |weight - average| over all trainable variables (0.0 before the first step)."""
    diffs = [
        float(np.max(np.abs(ops.convert_to_numpy(v) - ops.convert_to_numpy(a))))
        for v, a in _pairs(model, optimizer)
        if np.prod(v.shape) > 0
    ]
    return max(diffs, default=0.0)


_BATCH_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_batch_begin",
    "on_test_batch_end",
    "on_predict_batch_begin",
    "on_predict_batch_end",
)


class EMACallback(keras.callbacks.Callback):
    """Evaluate and checkpoint with the EMA weights while training continues on the raw weights.

        checkpoints = [keras.callbacks.ModelCheckpoint("best.weights.h5", save_best_only=True, ...),
                       keras.callbacks.ModelCheckpoint("last.weights.h5", ...)]
        model.fit(..., validation_data=val, callbacks=[EMACallback(checkpoints), backup_and_restore])

    Args:
      callbacks: callbacks whose `on_epoch_end` and `on_train_end` run with the EMA weights swapped in
        (checkpoints, exporters). Their other hooks run as usual. Do not also pass them to `fit`.
        Keras `ModelCheckpoint`s must save once per epoch (`save_freq="epoch"`).
      evaluate: swap the EMA weights in for evaluation/prediction run by `fit` or with this callback
        (validation metrics, hence "best" checkpoints, are the EMA model's).
    Without EMA in the optimizer it does nothing but call the wrapped callbacks.
    """

    def __init__(self, callbacks=(), evaluate=True):
        super().__init__()
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if isinstance(callback, keras.callbacks.ModelCheckpoint) and callback.save_freq != "epoch":
                raise ValueError(
                    "EMACallback swaps the EMA weights in at epoch ends only; give the ModelCheckpoint "
                    f"save_freq='epoch' (got {callback.save_freq!r}) or keep it outside EMACallback."
                )
        self.evaluate = evaluate
        self._swapped = False
        # Batch hooks are forwarded only when a wrapped callback has one: a callback that defines batch
        # hooks makes Keras dispatch every batch synchronously.
        for hook in _BATCH_HOOKS:
            if any(not getattr(getattr(c, hook), "_is_default", False) for c in self.callbacks):
                setattr(self, hook, functools.partial(self._delegate, hook))

    # The wrapped callbacks see the same model and params.
    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def _has_ema(self):
        return self.model is not None and ema_optimizer(self.model) is not None

    def _swap_in(self):
        if not self._swapped and self._has_ema():
            swap_ema_weights(self.model)
            self._swapped = True

    def _swap_out(self):
        if self._swapped:
            swap_ema_weights(self.model)
            self._swapped = False

    def _delegate(self, hook, *args, **kwargs):
        for callback in self.callbacks:
            getattr(callback, hook)(*args, **kwargs)

    def _delegate_with_ema(self, hook, *args, **kwargs):
        was_swapped = self._swapped
        self._swap_in()
        try:
            self._delegate(hook, *args, **kwargs)
        finally:
            if not was_swapped:
                self._swap_out()

    # Evaluation and prediction with the EMA weights.
    def on_test_begin(self, logs=None):
        if self.evaluate:
            self._swap_in()
        self._delegate("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._delegate("on_test_end", logs)
        if self.evaluate:
            self._swap_out()

    def on_predict_begin(self, logs=None):
        if self.evaluate:
            self._swap_in()
        self._delegate("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._delegate("on_predict_end", logs)
        if self.evaluate:
            self._swap_out()

    # Saving with the EMA weights.
    def on_epoch_end(self, epoch, logs=None):
        self._delegate_with_ema("on_epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        # Keras has already copied the averages into the model (finalize_variable_values).
        self._delegate_with_ema("on_train_end", logs)

    # Everything else passes through.
    def on_train_begin(self, logs=None):
        self._delegate("on_train_begin", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._delegate("on_epoch_begin", epoch, logs)
