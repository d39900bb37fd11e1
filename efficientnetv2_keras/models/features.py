"""Feature endpoints for detection/segmentation backbones."""

import re

import keras

_BLOCK_LAYER = re.compile(r"^(block\d+[a-z]+)_")


def _blocks(model):
    """[(block prefix, stride, output layer name)] in order, read off the built model's layers."""
    blocks = {}
    for layer in model.layers:
        match = _BLOCK_LAYER.match(layer.name)
        if not match:
            continue
        entry = blocks.setdefault(match.group(1), {"stride": 1, "output": None})
        entry["output"] = layer.name  # layers are in topological order: the last one is the output
        strides = getattr(layer, "strides", None)
        if strides is not None:
            entry["stride"] = max(entry["stride"], *strides)
    return [(prefix, entry["stride"], entry["output"]) for prefix, entry in blocks.items()]


def feature_endpoint_names(model):
    """{"reduction_1".."reduction_5": layer name}, as the released code's endpoints.

    reduction_k is the output of the last block before each stride-2 block, and of the final block:
    strides 2, 4, 8, 16 and 32 relative to the input. Works on our models and on
    keras.applications' EfficientNetV2 models alike (same layer names).
    """
    blocks = _blocks(model)
    if not blocks:
        raise ValueError(f"Model {model.name!r} has no EfficientNetV2 blocks (layers named blockNx_...).")
    names = {}
    for index, (_, _, output) in enumerate(blocks):
        last = index == len(blocks) - 1
        if last or blocks[index + 1][1] > 1:
            names[f"reduction_{len(names) + 1}"] = output
    return names


def build_feature_extractor(model, endpoints=None):
    """A model from the same inputs to a dict of feature maps (default: reduction_1..5).

    Shares layers and weights with `model`; use it as a detection/segmentation backbone.
    """
    names = feature_endpoint_names(model)
    if endpoints is not None:
        unknown = [e for e in endpoints if e not in names]
        if unknown:
            raise ValueError(f"Unknown endpoints {unknown}; available: {sorted(names)}.")
        names = {e: names[e] for e in endpoints}
    outputs = {key: model.get_layer(name).output for key, name in names.items()}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_features")
