"""Exponential moving average (EMA) of the weights: evaluation and checkpoints use it (paper §5.1).

The average itself is Keras': an optimizer with `use_ema=True, ema_momentum=d` keeps
`_model_variables_moving_average` (one per trainable variable) up to date inside the compiled train
step. This module adds what the recipe needs around it:

* `EMAWarmupMixin` (used by this package's optimizers): the released code's TF1
  `ExponentialMovingAverage(decay, num_updates=global_step)` uses min(decay, (1 + t) / (10 + t)),
  so early on the average follows the weights closely. Keras uses the fixed decay from step 2, and
  0.9999 then needs ~10^4 steps before the average forgets the random initialization: useless for
  short runs and finetuning. With `ema_warmup=True` the ramp is applied (t = the step being taken).
  It also averages BatchNorm moving means and variances when asked (`average_statistics`), as the
  released code does (`get_ema_vars` in google/automl `efficientnetv2/utils.py` adds every
  `moving_mean`/`moving_variance` to the averaged variables): Keras averages trainable variables only.
* `ema_variables(model)`: the one lookup of (model variable, average) pairs, through a
  `LossScaleOptimizer` (mixed_float16); export uses it too.
* `ema_weights(model)`: a context manager that swaps the EMA values into the model and back (exactly:
  values are copied, not added and subtracted).
* `EMACallback`: evaluation inside `fit` (validation metrics) uses the EMA weights, and the callbacks
  it wraps (e.g. best/last `ModelCheckpoint`s) run their `on_epoch_end` with the EMA weights in the
  model, while training continues on the raw weights. Callbacks outside it (e.g. `BackupAndRestore`)
  see the raw weights and the optimizer's averages, which is what a resumed run needs.
* `apply_ema_weights(model)`: copies the averages into the model for good (export, manual loops).

Behaviours to know:
* At the end of `fit`, Keras overwrites the model weights with the averages
  (`optimizer.finalize_variable_values`; the mixin adds the averaged BN statistics). After `fit` the
  model holds the EMA weights; a second `fit` continues from them.
* BatchNorm statistics, two choices (`train.ema_bn_statistics`): averaged with the weights (the
  released code, the default of every recipe), or left as the running statistics of the raw weights
  (themselves moving averages, momentum 0.99/0.9), so the EMA weights are evaluated with raw-weight
  BN statistics. The statistics average is updated in the compiled train step, after the forward
  pass has updated the statistics, like the weights' average; on the JAX backend, whose stateless
  train step does not show the updated statistics to the optimizer, it is not available.
"""

import contextlib
import functools
import warnings

import keras
import numpy as np
from keras import ops

from efficientnetv2_keras.training import fused_updates
from efficientnetv2_keras.training.schedules import training_progress


class _Untracked:
    """Holds model variables an optimizer refers to without owning them.

    Keras optimizers track every variable (and list of variables) assigned to an attribute and would
    save, restore and reset the model's BatchNorm statistics as if they were optimizer state.
    """

    def __init__(self, items=()):
        self.items = list(items)


def batch_norm_layers(model):
    """Every BatchNormalization layer of `model` (nested ones included), in layer order."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def batch_norm_statistics(model):
    """The moving means and variances of every BatchNormalization layer of `model`, in layer order."""
    statistics = []
    for layer in batch_norm_layers(model):
        if layer.built:
            statistics += [layer.moving_mean, layer.moving_variance]
    return statistics


class EMAWarmupMixin:
    """Ramps the EMA decay as min(ema_momentum, (1 + t) / (10 + t)) when `ema_warmup` is true.

    Mix into a Keras optimizer class before it: `class RMSprop(EMAWarmupMixin, keras.optimizers.RMSprop)`.
    t is the number of the step being applied (1 for the first); as in Keras, the very first step
    copies the weights into the average (the TF1 average starts from the initial weights instead).

    `average_statistics(variables)` adds non-trainable variables (BatchNorm moving statistics, see
    `batch_norm_statistics`) to the average, with the same decay, in the same compiled step. Their
    averages are optimizer variables (saved and restored with the optimizer, e.g. by
    `BackupAndRestore`), created after all others when the optimizer is built.
    """

    def __init__(self, *args, ema_warmup=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.ema_warmup = bool(ema_warmup)
        # A `schedules.TrainingProgress` when stages train with different batch sizes (set by
        # `build_optimizer` from a `ProgressLR`, else read from the learning-rate schedule): the decay
        # is then defined over images seen.
        self.progress = None
        self._ema_statistics = _Untracked()  # model variables
        self._ema_statistic_averages = _Untracked()  # their averages (optimizer variables)

    def average_statistics(self, variables):
        """Also average these non-trainable model variables (call before the optimizer is built)."""
        variables = list(variables)
        if any(v.trainable for v in variables):
            raise ValueError("average_statistics takes non-trainable variables (BatchNorm moving "
                             "statistics); trainable variables are averaged already.")
        if self.built:
            raise ValueError("Call average_statistics before the optimizer is built (before compile/fit "
                             "takes its first step).")
        if variables and keras.backend.backend() == "jax":
            # JAX's stateless train step hands the optimizer the statistics of the last state sync,
            # not the ones this step computed: the average would lag silently.
            warnings.warn("BatchNorm statistics are not averaged on the JAX backend; the EMA weights "
                          "are used with the raw model's statistics.", stacklevel=2)
            return
        self._ema_statistics = _Untracked(variables)

    def build(self, variables):
        super().build(variables)
        if self.use_ema and self._ema_statistics.items:
            self._ema_statistic_averages = _Untracked(
                self.add_variable_from_reference(v, name="average") for v in self._ema_statistics.items
            )

    @property
    def ema_statistics(self):
        """The non-trainable model variables averaged besides the trainable ones (see `average_statistics`)."""
        return list(self._ema_statistics.items)

    def ema_statistic_pairs(self):
        """[(statistic, its average)] once built, else []."""
        return list(zip(self._ema_statistics.items, self._ema_statistic_averages.items))

    def effective_ema_momentum(self, step=None):
        """The decay used for the update at `step` (default: the next one), as a tensor."""
        step = self.iterations if step is None else step
        momentum = ops.convert_to_tensor(float(self.ema_momentum), "float32")
        progress = training_progress(self)
        if progress is None:
            t = ops.cast(step, "float32") + 1.0
            if self.ema_warmup:
                momentum = ops.minimum(momentum, (1.0 + t) / (10.0 + t))
            return momentum
        # Over training progress: a step of r base batches decays the average as r base steps would
        # (momentum^r), and the warmup ramp counts base steps, so the average spans the same images.
        ratio = progress.ratio(step)
        t = progress.base_step(step) + ratio
        if self.ema_warmup:
            momentum = ops.minimum(momentum, (1.0 + t) / (10.0 + t))
        return ops.power(momentum, ratio)

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras' update with the decay computed once per step (Keras recomputes it per variable) and one
        # fused op per average on TensorFlow (`fused_updates.move_average`).
        if not self.use_ema:
            return
        if self.ema_warmup or training_progress(self) is not None:
            momentum = self.effective_ema_momentum()
        else:
            momentum = ops.convert_to_tensor(float(self.ema_momentum), "float32")
        # As in Keras, the first step copies the weights into the average (decay 0, weight 1).
        weight = 1.0 - ops.cast(ops.not_equal(self.iterations, 0), "float32") * momentum
        pairs = list(zip(trainable_variables, self._model_variables_moving_average)) + self.ema_statistic_pairs()
        for variable, average in pairs:
            if average is not None:
                fused_updates.move_average(average, variable, weight)

    def finalize_variable_values(self, var_list):
        super().finalize_variable_values(var_list)
        if self.use_ema:
            for statistic, average in self.ema_statistic_pairs():
                statistic.assign(average)

    def load_own_variables(self, store):
        # A compiled model saved with averaged statistics and loaded without `average_statistics`
        # (keras.models.load_model) has fewer variables than the file: restore the others (the
        # statistic averages are last) instead of skipping the whole optimizer state. A file without
        # them (older runs) leaves the averages to start from the statistics.
        saved, own = len(store.keys()), len(self.variables)
        extra = len(self._ema_statistic_averages.items)
        shared = min(saved, own)
        matches = all(tuple(store[str(i)].shape) == tuple(v.shape) for i, v in enumerate(self.variables[:shared]))
        if saved == own or not matches or not (saved > own or saved == own - extra):
            return super().load_own_variables(store)
        for i, variable in enumerate(self.variables[:shared]):
            variable.assign(store[str(i)])
        if saved > own:
            warnings.warn(f"Optimizer {self.name!r}: {saved - own} saved BatchNorm-statistic averages were not "
                          "restored (call average_statistics(batch_norm_statistics(model)) before loading to "
                          "restore them).", stacklevel=2)
        else:
            for statistic, average in self.ema_statistic_pairs():
                average.assign(statistic)

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
    pairs = [(v, a) for v, a in zip(variables, averages) if a is not None]
    if hasattr(optimizer, "ema_statistic_pairs"):
        pairs += optimizer.ema_statistic_pairs()
    return pairs


def ema_variables(model, optimizer=None):
    """[(model variable, its moving average)]: the trainable variables, then any averaged statistics.

    The one EMA lookup of the package (training and export): it sees through a LossScaleOptimizer.
    Raises ValueError when the model's optimizer keeps no averages; [] before the optimizer is built.
    """
    return _pairs(model, optimizer)


def swap_ema_weights(model, optimizer=None):
    """Exchanges the model's averaged variables and their averages in place (exact copies)."""
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
    """Largest |weight - average| over all averaged variables (0.0 before the first step)."""
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

    Not `keras.callbacks.SwapEMAWeights` (Keras 3.15): that swaps the optimizer's averages of the
    trainable variables only, so the averaged BatchNorm statistics (`average_statistics`, the released
    code's) would stay the raw model's; and its `swap_on_epoch=True` swaps for every callback from
    epoch end to epoch begin, so a backup written then (`RunBackup`, `BackupAndRestore`) would hold the
    EMA values as raw weights and the raw ones as averages. Here only the wrapped callbacks see the EMA
    weights, and only when one of them saves.
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

    # Saving with the EMA weights: a swap copies every weight twice, so it happens only when a wrapped
    # callback saves (one with `saves_at_epoch_end(epoch, logs)` says whether it will; others always may).
    def on_epoch_end(self, epoch, logs=None):
        if any(getattr(c, "saves_at_epoch_end", lambda *args: True)(epoch, logs) for c in self.callbacks):
            self._delegate_with_ema("on_epoch_end", epoch, logs)
        else:
            self._delegate("on_epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        # Keras has already copied the averages into the model (finalize_variable_values).
        if any(not getattr(c.on_train_end, "_is_default", False) for c in self.callbacks):
            self._delegate_with_ema("on_train_end", logs)

    # Everything else passes through.
    def on_train_begin(self, logs=None):
        self._delegate("on_train_begin", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._delegate("on_epoch_begin", epoch, logs)
