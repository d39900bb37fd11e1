"""The package's choices and limits, each stated once: image sizes, magnitudes, label formats, names.

Plain Python with no imports (no keras, TensorFlow or package modules), so every layer can read it:
the recipe schema (`hparams`) validates a recipe against exactly what the input pipeline (`data`),
the progressive schedule (`progressive`) and the models (`models`) accept, because they all read
the values here. A value that only one module uses stays in that module.
"""

# -- image sizes ----------------------------------------------------------------------------------

# The smallest side the network is built for, exported at, or trained at in a progressive stage: it
# downsamples 32x (stride 2 in the stem and in stages 2, 3, 4 and 6, paper Table 4), so 32 px leave
# one pixel in the last feature map.
MIN_MODEL_IMAGE_SIZE = 32
# The smallest side the input pipeline makes (`data.build_dataset`), and so a recipe's fixed
# data.train_size / data.eval_size: the bundled digits are 8x8 images, read at their own size in
# quick runs and tests.
MIN_PIPELINE_IMAGE_SIZE = 8

# -- RandAugment ----------------------------------------------------------------------------------

# The largest magnitude on the released code's scale (10 = its nominal maximum level): the paper uses
# 5-25 (Table 6); the RandAugment paper's search range ends at 30.
MAX_RANDAUG_MAGNITUDE = 30.0
# The released RandAugment op list, in the released order (google/automl efficientnetv2/autoaugment.py,
# `distort_image_with_randaugment`): `data.RANDAUGMENT_OPS` and the choices of `data.randaug_ops`.
RANDAUGMENT_OP_NAMES = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
)  # fmt: skip

# -- augmentation and labels ----------------------------------------------------------------------

# data.augment: RandAugment with the random-area crop (paper §5.1), the finetuning preprocessing (§5.3),
# or none. A recipe spells "no augmentation" "none" (YAML text); `build_dataset(augment=None)` is the
# Python spelling of the same choice, and `augment_argument` is the one place that translates.
NO_AUGMENT = "none"
AUGMENTS = ("randaug", "ft", NO_AUGMENT)
# Label encodings (`data.encode_label`): one_hot is the default; multi_hot_normalized sums to 1, for the
# softmax loss on multi-label ImageNet-21k (§5.2); multi_hot is 0/1 for the sigmoid loss; sparse is an index.
LABEL_FORMATS = ("one_hot", "multi_hot_normalized", "multi_hot", "sparse")
MULTI_LABEL_FORMATS = ("multi_hot", "multi_hot_normalized")


def augment_argument(augment):
    """`build_dataset`'s `augment` for a recipe's data.augment or an argument: "none" and None -> None."""
    if augment is None or augment == NO_AUGMENT:
        return None
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {list(AUGMENTS)} or None, got {augment!r}.")
    return augment


# -- the model ------------------------------------------------------------------------------------

ACTIVATIONS = ("silu", "swish", "relu", "relu6", "gelu", "hard_silu", "elu", "selu", "mish")
# What include_preprocessing applies to [0, 255] pixels: ImageNet mean/std (B0-B3, the V1 pipeline they
# were trained with) or (x - 128) / 128 (S/M/L/XL, the released code's).
INPUT_NORMALIZATIONS = ("imagenet", "symmetric")

# -- progressive learning (paper §4, Algorithm 1) ---------------------------------------------------

# "paper": Algorithm 1 with Table 6's ranges; "official": what the released code's stage loop does.
PRESETS = ("paper", "official")
# What a progressive stage sets: its image size and regularization (Table 6; survival_prob only when asked).
REGULARIZERS = ("image_size", "randaug_magnitude", "mixup_alpha", "cutmix_alpha", "dropout_rate", "survival_prob")
# batch_scaling's learning-rate rules for a k-times batch: LR x k (Goyal et al. 2017) or LR x sqrt(k)
# (Malladi et al. 2022); see `progressive.schedule`.
LR_SCALING_RULES = ("linear", "sqrt")
# batch_scaling rounds stage batch sizes to multiples of this and of the replica count.
BATCH_MULTIPLE = 8

# -- training -------------------------------------------------------------------------------------

OPTIMIZERS = ("rmsprop", "sgd", "momentum", "adam", "adamw")
LR_SCHEDULES = ("exponential", "cosine", "linear", "constant")
LOSSES = ("softmax", "sigmoid")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "tpu", "gpus", "multi_worker", "cpu")
