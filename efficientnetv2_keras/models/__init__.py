"""The EfficientNetV2 family (keras only: runs on the TensorFlow, JAX and PyTorch backends)."""

from efficientnetv2_keras.models.batch_norm import FusedBatchNormalization
from efficientnetv2_keras.models.blocks import fused_mbconv_block, mbconv_block, squeeze_excite
from efficientnetv2_keras.models.applications import (
    EfficientNetV2B0,
    EfficientNetV2B1,
    EfficientNetV2B2,
    EfficientNetV2B3,
    EfficientNetV2L,
    EfficientNetV2M,
    EfficientNetV2S,
    EfficientNetV2XL,
)
from efficientnetv2_keras.models.builder import build_model, load_pretrained, load_weights
from efficientnetv2_keras.models.family import (
    MODEL_SPECS,
    VARIANTS,
    ModelSpec,
    StageSpec,
    get_model_spec,
)
from efficientnetv2_keras.models.features import build_feature_extractor, feature_endpoint_names
from efficientnetv2_keras.models.layers import AdjustableDropout, StochasticDepth
from efficientnetv2_keras.models.regularization import get_regularization, set_regularization
from efficientnetv2_keras.models.summary import count_flops, family_summary, format_summary
from efficientnetv2_keras.models.weights import (
    KERAS_APPLICATIONS,
    WeightsDownloadError,
    WeightsMismatchError,
    load_weights_from_keras_applications,
)

__all__ = [
    "EfficientNetV2B0",
    "EfficientNetV2B1",
    "EfficientNetV2B2",
    "EfficientNetV2B3",
    "EfficientNetV2S",
    "EfficientNetV2M",
    "EfficientNetV2L",
    "EfficientNetV2XL",
    "build_model",
    "fused_mbconv_block",
    "mbconv_block",
    "squeeze_excite",
    "ModelSpec",
    "StageSpec",
    "MODEL_SPECS",
    "VARIANTS",
    "get_model_spec",
    "AdjustableDropout",
    "FusedBatchNormalization",
    "StochasticDepth",
    "set_regularization",
    "get_regularization",
    "load_weights",
    "load_pretrained",
    "load_weights_from_keras_applications",
    "KERAS_APPLICATIONS",
    "WeightsMismatchError",
    "WeightsDownloadError",
    "feature_endpoint_names",
    "build_feature_extractor",
    "count_flops",
    "family_summary",
    "format_summary",
]
