"""Pretrained weights beyond keras.applications: timm's conversions of the released checkpoints.

keras.applications hosts ImageNet-1k weights for B0-B3/S/M/L only. The released code also published
ImageNet-21k and 21k-finetuned-on-1k checkpoints and the XL model; timm keeps all of them as
`tf_efficientnetv2_*` (see `TIMM_CHECKPOINTS`). `convert_timm` turns one into a `.weights.h5` file
that every model constructor takes (`EfficientNetV2S(weights="tf_efficientnetv2_s.in21k.weights.h5",
classes=21843)`), with a JSON beside it recording what the weights were trained with; finetuning
recipes read it (`apply_weights_info`).

    from efficientnetv2_keras.weights import convert_timm
    convert_timm("tf_efficientnetv2_s.in21k", "weights/")   # needs timm and a network
    convert_timm("model.safetensors", "weights/", name="tf_efficientnetv2_s.in21k")

Nothing here imports torch or timm until a conversion needs them.
"""

from efficientnetv2_keras.models.weights import weights_info_path
from efficientnetv2_keras.weights.catalog import (
    TIMM_CHECKPOINTS,
    TimmCheckpoint,
    find_timm_checkpoint,
    timm_architecture,
)
from efficientnetv2_keras.weights.info import apply_weights_info, read_weights_info
from efficientnetv2_keras.weights.timm_checkpoint import ConversionError, read_timm_checkpoint
from efficientnetv2_keras.weights.timm_convert import compare_with_timm, convert_timm, infer_variant, timm_to_keras

__all__ = [
    "TIMM_CHECKPOINTS",
    "TimmCheckpoint",
    "find_timm_checkpoint",
    "timm_architecture",
    "convert_timm",
    "compare_with_timm",
    "infer_variant",
    "read_timm_checkpoint",
    "timm_to_keras",
    "ConversionError",
    "weights_info_path",
    "read_weights_info",
    "apply_weights_info",
]
