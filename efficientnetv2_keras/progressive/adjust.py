"""`make_adjustable(model)`: lets `ProgressiveLearning` schedule dropout on any functional Keras model.

Keras' `Dropout` keeps its rate in a Python float that the compiled train step bakes in, so changing
it inside one `fit` does nothing. This package's `AdjustableDropout` and `StochasticDepth` keep the
rate in a variable that every step reads (`set_regularization`). `make_adjustable` clones a
functional (or Sequential) model, e.g. a keras.applications or keras-hub backbone under your head,
with every `keras.layers.Dropout` replaced by one of them and the weights copied:

* element-wise dropout (no `noise_shape`)            -> `AdjustableDropout`, same rate;
* per-sample dropout (`noise_shape=(None, 1, ..., 1)`, one draw per example: stochastic depth, as
  keras.applications' EfficientNet/EfficientNetV2 blocks use it) -> `StochasticDepth`, same rate.

Stochastic-depth rates keep their profile over depth: each layer's `block_fraction` is its rate
divided by the largest one, so `set_regularization(model, survival_prob=p)` gives the deepest block
survival p and scales the others linearly with it (the released code's linear decay with depth,
google/automl `efficientnetv2/effnetv2_model.py`, `EffNetV2Model.call`). When every rate is 0, the
fractions follow layer order, i / N for the i-th of N such layers.

Without `make_adjustable`, `ProgressiveLearning` still schedules image size and data augmentation for
any model; only the dropout and stochastic-depth columns of a schedule need adjustable layers.
"""

import warnings

import keras

from efficientnetv2_keras.models.layers import AdjustableDropout, StochasticDepth

__all__ = ["make_adjustable"]


def _is_plain_dropout(layer):
    # Dropout subclasses (SpatialDropout*, ...) drop other shapes: they are left as they are.
    return type(layer) is keras.layers.Dropout


def _is_per_sample(layer):
    shape = layer.noise_shape
    return shape is not None and len(shape) >= 2 and all(d == 1 for d in shape[1:])


def _dropouts(model):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True) if _is_plain_dropout(layer)]


def make_adjustable(model):
    """A copy of `model` whose `Dropout` layers take scheduled rates (see the module docstring).

        backbone = keras.applications.ResNet50(include_top=False, pooling="avg", input_shape=(None, None, 3))
        inputs = keras.Input((None, None, 3))
        outputs = keras.layers.Dense(10)(keras.layers.Dropout(0.1)(backbone(inputs)))
        model = make_adjustable(keras.Model(inputs, outputs))
        schedule = progressive_schedule("s", "paper", total_epochs=30, dropout_rate=(0.1, 0.3), ...)
        model.fit(progressive.dataset, callbacks=[ProgressiveLearning(schedule, dataset_fn)], ...)

    Nested functional and Sequential models (a backbone under a head) are cloned too; layer names,
    rates, seeds and dtype policies are kept, and the copy computes the same outputs. The original
    model is not changed. Dropout layers inside custom layers (which cannot be cloned layer by layer)
    stay fixed-rate, with a warning; a `Dropout` with another `noise_shape` stays as it is.

    Raises ValueError for a subclassed model, and for a model without any `Dropout` to replace (add
    one to your head, or build the schedule with dropout_rate=None and survival_prob=None).
    """
    if not isinstance(model, (keras.Sequential, keras.Model)) or not _is_graph_model(model):
        raise ValueError(
            f"make_adjustable needs a functional or Sequential Keras model; {model.__class__.__name__} "
            f"{getattr(model, 'name', '')!r} is a subclassed model, whose layers cannot be replaced from "
            "outside. Use efficientnetv2_keras.AdjustableDropout / StochasticDepth in its code instead."
        )
    dropouts = _dropouts(model)
    replaceable = [layer for layer in dropouts if layer.noise_shape is None or _is_per_sample(layer)]
    if not replaceable:
        raise ValueError(
            f"Model {model.name!r} has no Dropout layer to make adjustable (found {len(dropouts)} with "
            "other noise shapes). Add keras.layers.Dropout (or efficientnetv2_keras.AdjustableDropout) "
            "to your head, or build the schedule with dropout_rate=None and survival_prob=None: image "
            "size and augmentation are scheduled for any model."
        )
    per_sample = [layer for layer in replaceable if layer.noise_shape is not None]
    largest = max((float(layer.rate) for layer in per_sample), default=0.0)
    fractions = {}
    for position, layer in enumerate(per_sample):
        fractions[id(layer)] = float(layer.rate) / largest if largest > 0 else position / len(per_sample)

    def clone(layer):
        if _is_plain_dropout(layer):
            common = {"seed": layer.seed, "name": layer.name, "dtype": layer.dtype_policy}
            if layer.noise_shape is None:
                return AdjustableDropout(float(layer.rate), **common)
            if id(layer) in fractions:
                return StochasticDepth(float(layer.rate), block_fraction=fractions[id(layer)], **common)
        return layer.__class__.from_config(layer.get_config())

    adjusted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    adjusted.set_weights(model.get_weights())  # the replaced layers have no weights: same order
    left = _dropouts(adjusted)
    if left:
        warnings.warn(
            f"make_adjustable left {len(left)} Dropout layer(s) with a fixed rate ({', '.join(l.name for l in left[:5])}"
            f"{', ...' if len(left) > 5 else ''}): inside custom layers, or with a noise_shape that is neither "
            "element-wise nor per-sample.",
            stacklevel=2,
        )
    return adjusted


def _is_graph_model(model):
    from keras.src.models.functional import Functional  # Keras' functional class (no public name)

    return isinstance(model, (keras.Sequential, Functional))
