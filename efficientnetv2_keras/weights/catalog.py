"""The released EfficientNetV2 checkpoints as timm publishes them (`tf_efficientnetv2_*`), as data.

timm converted the released TensorFlow checkpoints (google/automl `efficientnetv2`) to PyTorch and
keeps their TensorFlow behaviour in its `tf_` models: "SAME" padding and BatchNorm epsilon 1e-3.
Each entry records what the weights were trained and evaluated with (timm's `pretrained_cfg`):
image sizes, the evaluation crop, the input normalization, the class count, and the ImageNet-1k
top-1 timm measured at the evaluation size (`results/results-imagenet.csv` of
huggingface/pytorch-image-models) beside the one the released code's README states.
"""

import dataclasses
from typing import Optional

from efficientnetv2_keras.models.family import get_model_spec

TAG_MEANINGS = {
    "in1k": "trained on ImageNet-1k",
    "in21k": "pretrained on ImageNet-21k (21,843 classes)",
    "in21k_ft_in1k": "pretrained on ImageNet-21k, finetuned on ImageNet-1k",
}
# timm's mean/std on [0, 1] pixels for each of our normalizations (builder.build_model).
NORMALIZATION_MEAN_STD = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
TIMM_PREFIX = "tf_efficientnetv2_"


@dataclasses.dataclass(frozen=True)
class TimmCheckpoint:
    """One published checkpoint: `timm.create_model(name, pretrained=True)` downloads it."""

    name: str  # timm name with its tag, e.g. "tf_efficientnetv2_s.in21k"
    variant: str  # ours, e.g. "efficientnetv2-s"
    tag: str
    classes: int
    train_size: int
    eval_size: int
    crop_pct: float  # fraction of the image kept by the evaluation centre crop (1.0 = none)
    input_normalization: str  # "imagenet" or "symmetric"
    crop_mode: str = "center"
    timm_top1: Optional[float] = None  # ImageNet-1k top-1 measured by timm at eval_size
    released_top1: Optional[float] = None  # as stated by the released code's README

    @property
    def architecture(self):
        return self.name.split(".")[0]


def _entry(short, tag, train, evaluate, crop, norm, top1=None, released=None, crop_mode="center"):
    classes = 21843 if tag == "in21k" else 1000
    return TimmCheckpoint(
        f"{TIMM_PREFIX}{short}.{tag}", get_model_spec(short).name, tag, classes, train, evaluate, crop, norm,
        crop_mode, top1, released,
    )


# B0-B2 have only ImageNet-1k weights in timm. B0-B3 1k weights were trained on ImageNet mean/std
# inputs (the released code's legacy V1 pipeline); every 21k checkpoint, B3's included, on
# (x - 128) / 128.
TIMM_CHECKPOINTS = {
    c.name: c
    for c in (
        _entry("b0", "in1k", 192, 224, 0.875, "imagenet", 78.386, 78.7),
        _entry("b1", "in1k", 192, 240, 0.882, "imagenet", 79.518, 79.8),
        _entry("b2", "in1k", 208, 260, 0.890, "imagenet", 80.226, 80.5),
        _entry("b3", "in1k", 240, 300, 0.904, "imagenet", 81.960, 82.1),
        _entry("b3", "in21k", 240, 300, 0.904, "symmetric"),
        _entry("b3", "in21k_ft_in1k", 240, 300, 0.9, "symmetric", 82.634, crop_mode="squash"),
        _entry("s", "in1k", 300, 384, 1.0, "symmetric", 83.900, 83.9),
        _entry("s", "in21k", 300, 384, 1.0, "symmetric"),
        _entry("s", "in21k_ft_in1k", 300, 384, 1.0, "symmetric", 84.332, 84.9),
        _entry("m", "in1k", 384, 480, 1.0, "symmetric", 85.208, 85.2, crop_mode="squash"),
        _entry("m", "in21k", 384, 480, 1.0, "symmetric", crop_mode="squash"),
        _entry("m", "in21k_ft_in1k", 384, 480, 1.0, "symmetric", 86.014, 86.2, crop_mode="squash"),
        _entry("l", "in1k", 384, 480, 1.0, "symmetric", 85.660, 85.7, crop_mode="squash"),
        _entry("l", "in21k", 384, 480, 1.0, "symmetric", crop_mode="squash"),
        _entry("l", "in21k_ft_in1k", 384, 480, 1.0, "symmetric", 86.802, 86.9, crop_mode="squash"),
        _entry("xl", "in21k", 384, 512, 1.0, "symmetric", crop_mode="squash"),
        _entry("xl", "in21k_ft_in1k", 384, 512, 1.0, "symmetric", 86.754, 87.2, crop_mode="squash"),
    )
}


def timm_architecture(variant):
    """Our variant name -> timm's architecture name: "s" -> "tf_efficientnetv2_s"."""
    return TIMM_PREFIX + get_model_spec(variant).name.split("-", 1)[1]


def find_timm_checkpoint(name):
    """The catalogue entry for a timm name ("tf_efficientnetv2_s.in21k"), or None when it has no tag.

    Raises ValueError for names that are not a released checkpoint: timm's own `efficientnetv2_*`
    models use PyTorch padding and BatchNorm epsilon, which this package's models do not reproduce.
    """
    name = str(name).strip()
    architecture, _, tag = name.partition(".")
    if not architecture.startswith(TIMM_PREFIX):
        raise ValueError(
            f"{name!r} is not one of timm's tf_efficientnetv2_* models (the released TensorFlow "
            "checkpoints, with TensorFlow 'SAME' padding and BatchNorm epsilon 1e-3). timm's own "
            "efficientnetv2_* models use PyTorch padding and epsilon, which these models do not reproduce. "
            f"Known checkpoints: {', '.join(TIMM_CHECKPOINTS)}."
        )
    get_model_spec(architecture[len(TIMM_PREFIX):])  # raises for unknown variants
    if not tag:
        return None
    if name not in TIMM_CHECKPOINTS:
        known = [n for n in TIMM_CHECKPOINTS if n.startswith(architecture + ".")]
        raise ValueError(f"timm has no checkpoint {name!r}; for {architecture} it has: {', '.join(known)}.")
    return TIMM_CHECKPOINTS[name]
