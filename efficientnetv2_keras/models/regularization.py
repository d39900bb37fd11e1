"""The one way to change a built model's dropout and stochastic-depth strength."""

from efficientnetv2_keras.models.layers import AdjustableDropout, StochasticDepth


def _layers_of(model, layer_type):
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, layer_type)
    ]


def set_regularization(model, dropout_rate=None, survival_prob=None):
    """Sets the head dropout rate and/or the stochastic-depth survival probability.

    Takes effect in the next train step, also inside an already compiled (even XLA) train function:
    the rates are Keras variables read by every step. `survival_prob` is the last block's survival;
    block i of N gets 1 - (1 - survival_prob) * i / N, as when building. None leaves a value as it is.
    Works on models nested inside other models (e.g. a backbone under a new head).
    """
    if dropout_rate is not None:
        dropouts = _layers_of(model, AdjustableDropout)
        if not dropouts:
            raise ValueError(
                f"Model {model.name!r} has no adjustable head dropout (was it built with "
                "include_top=False?). Add efficientnetv2_keras.AdjustableDropout to your own head "
                "to schedule its rate, or leave dropout_rate=None."
            )
        for layer in dropouts:
            layer.set_rate(dropout_rate)
    if survival_prob is not None:
        if not 0.0 < float(survival_prob) <= 1.0:
            raise ValueError(f"survival_prob must be in (0, 1], got {survival_prob}.")
        blocks = _layers_of(model, StochasticDepth)
        if not blocks:
            raise ValueError(f"Model {model.name!r} has no StochasticDepth layers to adjust.")
        for layer in blocks:
            layer.set_rate((1.0 - float(survival_prob)) * layer.block_fraction)


def get_regularization(model):
    """The rates in effect: {"dropout_rate": head rate or None, "survival_prob": last block's}."""
    dropouts = _layers_of(model, AdjustableDropout)
    blocks = [layer for layer in _layers_of(model, StochasticDepth) if layer.block_fraction > 0]
    survival = None
    if blocks:
        deepest = max(blocks, key=lambda layer: layer.block_fraction)
        survival = 1.0 - deepest.rate / deepest.block_fraction
    return {
        "dropout_rate": dropouts[0].rate if dropouts else None,
        "survival_prob": survival,
    }
