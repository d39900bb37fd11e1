"""The family's FLOPs/params report (`python tools/model_summary.py`)."""

import numpy as np

import keras

from efficientnetv2_keras.models.builder import build_model
from efficientnetv2_keras.models.family import VARIANTS, get_model_spec


def count_flops(model):
    """Multiply-adds of one image through the model's convolutions and dense layers.

    This is the convention of the official README (FLOPs = multiply-adds: S 8.4 B at 384). Needs a
    model built with a fixed input size. BN, activations, SE gating and additions are not counted;
    the official profiler's numbers include them and come out < 1 % higher (M 24.7 vs 24.6 B).
    """
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = _nhwc(layer)
            total += h * w * kh * kw * c * layer.depth_multiplier
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = _nhwc(layer)
            in_channels = layer.kernel.shape[-2]
            total += h * w * kh * kw * in_channels * c
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def _nhwc(layer):
    """The layer's output shape as (batch, height, width, channels), in either layout."""
    shape = layer.output.shape
    channels_first = layer.data_format == "channels_first"  # the model's, not today's global setting
    if channels_first:
        shape = (shape[0], shape[2], shape[3], shape[1])
    if any(dim is None for dim in shape[1:]):
        example = "(3, 384, 384)" if channels_first else "(384, 384, 3)"
        raise ValueError(
            f"count_flops needs a model built with a fixed input size, e.g. input_shape={example}."
        )
    return shape


def family_summary(variants=VARIANTS):
    """One row per variant: parameters, FLOPs at the eval size, official sizes and dropout."""
    rows = []
    for variant in variants:
        spec = get_model_spec(variant)
        size = spec.eval_size
        channels_first = keras.config.image_data_format() == "channels_first"
        model = build_model(spec, input_shape=(3, size, size) if channels_first else (size, size, 3))
        rows.append(
            {
                "model": spec.name,
                "params": model.count_params(),
                "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                "flops": count_flops(model),
                "train_size": spec.train_size,
                "eval_size": spec.eval_size,
                "dropout_rate": spec.dropout_rate,
                "blocks": spec.num_blocks,
            }
        )
        del model
        keras.backend.clear_session()
    return rows


def format_summary(rows):
    """A Markdown table of `family_summary` rows."""
    lines = [
        "| Model | Params | Trainable | FLOPs (multiply-adds) @ eval size | Train size | Eval size | Dropout | Blocks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['trainable_params']:,} | {r['flops'] / 1e9:.2f} B @ {r['eval_size']} "
            f"| {r['train_size']} | {r['eval_size']} | {r['dropout_rate']} | {r['blocks']} |"
        )
    return "\n".join(lines)
