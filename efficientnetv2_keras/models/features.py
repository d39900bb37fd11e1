"""Feature endpoints for detection/segmentation backbones, and the FLOPs/params report."""

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


def count_flops(model):
    """Multiply-adds of one image through the model's convolutions and dense layers.

    This is the convention of the official README (FLOPs = multiply-adds: S 8.4 B at 384). Needs a
    model built with a fixed input size; BN, activations and additions are not counted.
    """
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = _nhwc(layer.output.shape)
            total += h * w * kh * kw * c * layer.depth_multiplier
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = _nhwc(layer.output.shape)
            in_channels = layer.kernel.shape[-2]
            total += h * w * kh * kw * in_channels * c
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def _nhwc(shape):
    if keras.config.image_data_format() == "channels_first":
        shape = (shape[0], shape[2], shape[3], shape[1])
    if any(dim is None for dim in shape[1:]):
        raise ValueError(
            "count_flops needs a model built with a fixed input size, e.g. input_shape=(384, 384, 3)."
        )
    return shape
