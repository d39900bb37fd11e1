"""Serving a model trained under mixed precision: its float32 rebuild.

A model built under mixed_float16 (what `train.mixed_precision: auto` picks on GPUs) or mixed_bfloat16
(TPUs) keeps float32 variables but computes in float16 / bfloat16, and so does its traced inference
graph: TFLite's builtin ops reject it ("'tf.Conv2D' op is neither a custom op nor a flex op"), and
many serving CPUs have no fast half-precision kernels. Every export therefore traces a float32
rebuild: the architecture from the model's config with each layer's dtype policy set to float32,
holding the model's weights (the EMA values when those are served) cast to float32. The user's model
is not touched, and the global dtype policy is float32 only while the rebuild is constructed.

Parity is checked against the rebuild (what is served); the export report adds how far the
mixed-precision model itself is from it (`ExportResult.precision_gap`).
"""

import collections
import copy

import keras

from efficientnetv2_keras.models.io import dtype_policy_configs, dtype_policy_scope

FLOAT32 = "float32"


def lower_precision_policy(model):
    """The dtype policy of the model's layers that are not float32 (the most common one, e.g.
    "mixed_float16"), or None when every layer computes and keeps its variables in float32."""
    names = collections.Counter(
        layer.dtype_policy.name
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if FLOAT32 != layer.dtype_policy.compute_dtype or FLOAT32 != layer.dtype_policy.variable_dtype
    )
    return names.most_common(1)[0][0] if names else None


def float32_config(config):
    """A Keras config with every layer's dtype policy set to float32 (the config given is not changed)."""
    config = copy.deepcopy(config)
    for policy in dtype_policy_configs(config):
        policy["config"]["name"] = FLOAT32
    return config


def _cannot_rebuild(model, policy, reason):
    reason = " ".join(str(reason).strip().split("\n\n")[0].split()).rstrip(".")  # Keras' first paragraph, one line
    return (
        f"Model {model.name!r} computes in {policy}; export serves models in float32 (TFLite has no "
        f"half-precision kernels for most ops), but it cannot be rebuilt in float32 from its config: "
        f"{reason}. Rebuild it yourself: under keras.mixed_precision.set_global_policy('float32'), build "
        "the same model, copy the weights (model.get_weights(), after training.apply_ema_weights to "
        "serve the EMA) with set_weights, and export that model."
    )


def float32_rebuild(model, ema_mapping=()):
    """`model` rebuilt with float32 layers, holding its weights cast to float32.

    ema_mapping: (model variable, EMA variable) pairs (`common.ema_state_mapping`): the rebuild holds
      the averages of those variables, so it serves the EMA weights without a mapping of its own.
    """
    policy = lower_precision_policy(model)
    try:
        # Layers that create sublayers without a dtype give them the global policy: float32 too.
        with dtype_policy_scope(FLOAT32):
            rebuilt = model.__class__.from_config(float32_config(model.get_config()))
    except Exception as error:  # noqa: BLE001 - a custom model whose config does not round-trip
        raise ValueError(_cannot_rebuild(model, policy, error)) from error
    layout = [(weight.path, tuple(weight.shape)) for weight in model.weights]
    if layout != [(weight.path, tuple(weight.shape)) for weight in rebuilt.weights]:
        raise ValueError(_cannot_rebuild(model, policy, "the rebuilt model's weights differ from the model's"))
    averages = {id(variable): average for variable, average in ema_mapping}
    for weight, rebuilt_weight in zip(model.weights, rebuilt.weights):
        value = keras.ops.convert_to_numpy(averages.get(id(weight), weight))
        rebuilt_weight.assign(value.astype(rebuilt_weight.dtype))
    return rebuilt
