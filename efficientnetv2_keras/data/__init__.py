"""Input pipelines for EfficientNetV2 training (tf.data): sources, preprocessing, RandAugment, mixing.

    from efficientnetv2_keras.data import build_dataset
    train = build_dataset("digits", "train", image_size=64, batch_size=32, training=True,
                          randaug_magnitude=5, mixup_alpha=0.1, flip=False, crop_area_range=(0.5, 1.0))

Images come out as float32 in [0, 255] (the models rescale inside with `include_preprocessing=True`).
See `pipeline.build_dataset` for every argument, `stream` for the order of training examples (and
resumed runs), `preprocessing` for crops and resizing, `randaugment` for the magnitude scale (`image_ops`
for the ops), `mixing` for mixup/CutMix, `labels` for label encodings, `sources` for the data sources
(one kind per module; `keras_datasets` for keras.datasets).
"""

from efficientnetv2_keras.data.keras_datasets import (
    KERAS_DATASETS,
    KerasDatasetSource,
    keras_cache_folder,
    load_keras_dataset,
)
from efficientnetv2_keras.data.mixing import cutmix, mix_batch, mixup
from efficientnetv2_keras.data.labels import default_label_format, encode_label
from efficientnetv2_keras.data.pipeline import build_dataset
from efficientnetv2_keras.data.preprocessing import (
    decode_and_preprocess,
    preprocess_for_eval,
    preprocess_for_finetune,
    preprocess_for_train,
    preprocess_image,
)
from efficientnetv2_keras.data.randaugment import RANDAUGMENT_OPS, RandAugment, validate_magnitude
from efficientnetv2_keras.data.sources import (
    IMAGENET21K_CLASSES,
    CachedSource,
    PAPER_TFDS_DATASETS,
    ArraySource,
    DigitsSource,
    ImageFolderSource,
    Source,
    TFDSSource,
    TFRecordSource,
    get_source,
    stratified_split,
)
from efficientnetv2_keras.data.stream import FitEpoch, examples_per_step
from efficientnetv2_keras.limits import LABEL_FORMATS

__all__ = [
    "build_dataset",
    "FitEpoch",
    "examples_per_step",
    "CachedSource",
    "encode_label",
    "default_label_format",
    "LABEL_FORMATS",
    "Source",
    "ArraySource",
    "DigitsSource",
    "TFDSSource",
    "TFRecordSource",
    "ImageFolderSource",
    "KerasDatasetSource",
    "KERAS_DATASETS",
    "load_keras_dataset",
    "keras_cache_folder",
    "get_source",
    "stratified_split",
    "PAPER_TFDS_DATASETS",
    "IMAGENET21K_CLASSES",
    "RandAugment",
    "RANDAUGMENT_OPS",
    "validate_magnitude",
    "preprocess_image",
    "decode_and_preprocess",
    "preprocess_for_train",
    "preprocess_for_eval",
    "preprocess_for_finetune",
    "mixup",
    "cutmix",
    "mix_batch",
]
