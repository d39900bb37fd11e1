"""A recipe's network: the variant and its build arguments (`model.*`), and the checkpoint it starts from.

`ModelSettings` holds them as plain values (the recipe resolver, `training.recipe`, reads them from the
schema once); `make_model` builds the Keras model with the data's class count.
"""

import dataclasses
from typing import Any, Optional

from efficientnetv2_keras.models import WeightsDownloadError, build_model, load_pretrained


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The recipe's model in plain values."""

    name: str  # the variant
    build_options: dict  # `models.build_model` keywords besides the variant, the head and the class count
    init_checkpoint: Optional[Any] = None  # weights to start from (model.init_checkpoint)
    skip_head: bool = False  # leave the classifier of init_checkpoint out (another class count)


def make_model(settings, num_classes, input_shape=None, load_checkpoint=True):
    """The model of `settings` with a `num_classes`-way classifier, its init checkpoint loaded.

    Call under the strategy's scope, after `configure_mixed_precision`.
    """
    model = build_model(settings.name, include_top=True, input_shape=input_shape, classes=int(num_classes),
                        **settings.build_options)
    if load_checkpoint and settings.init_checkpoint:
        try:
            load_pretrained(model, settings.init_checkpoint, skip_head=settings.skip_head)
        except WeightsDownloadError as error:
            raise WeightsDownloadError(error.problem, "set model.init_checkpoint to a local weights file (.weights.h5, "
                                       ".keras or a keras.applications .h5), or model.init_checkpoint=null to train "
                                       "from scratch") from error
    return model
