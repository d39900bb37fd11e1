"""The JSON beside a converted weights file, and recipes that follow it.

`convert_timm` writes `x.json` beside `x.weights.h5`: the variant, the source checkpoint and its tag,
the class count, and what the weights were trained and evaluated with (image sizes, evaluation crop,
input normalization). A finetuning recipe whose `model.init_checkpoint` is such a file takes its
normalization and evaluation protocol from it (`apply_weights_info`), so e.g. timm's B3 ImageNet-21k
weights, trained on (x - 128) / 128 rather than B3's usual ImageNet mean/std, are finetuned on the
inputs they expect.
"""

import copy
import json
import os

from efficientnetv2_keras.models.family import get_model_spec
from efficientnetv2_keras.models.weights import weights_info_path

INFO_FORMAT = "efficientnetv2-keras converted weights"


def read_weights_info(weights_path):
    """The JSON written beside `weights_path` by `convert_timm` (a dict), or None if there is none."""
    path = weights_info_path(weights_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the weights information {path!r}: {error}. Fix or remove it.") from None
    if not isinstance(info, dict) or info.get("format") != INFO_FORMAT:
        raise ValueError(f"{path!r} is not the weights information of a converted file (no 'format': {INFO_FORMAT!r}).")
    return info


def eval_crop_padding(eval_size, crop_pct):
    """The `data.eval_crop_padding` whose centre crop keeps `crop_pct` of the image at `eval_size`."""
    return max(0, round(eval_size / crop_pct) - eval_size)


def apply_weights_info(config):
    """The recipe with the facts of `model.init_checkpoint`'s JSON applied (a new Config).

    - `model.name` must be the checkpoint's variant (an error names the right one);
    - `model.input_normalization`, when unset, becomes the checkpoint's;
    - `data.eval_size`, when unset, becomes the checkpoint's evaluation size, and then
      `data.eval_crop_padding` reproduces its evaluation crop; `data.train_size`, when unset, its
      training size.
    Recipes without an init checkpoint, or whose checkpoint has no JSON, are returned unchanged.
    """
    from efficientnetv2_keras.hparams import ConfigError, validate_config

    checkpoint = config.model.init_checkpoint
    if not isinstance(checkpoint, str) or not checkpoint.endswith(".weights.h5"):
        return config
    info = read_weights_info(checkpoint)
    if info is None:
        return config
    variant = get_model_spec(config.model.name).name
    if info["variant"] != variant:
        raise ConfigError(
            f"model.init_checkpoint {checkpoint!r} holds {info['variant']} weights but model.name is "
            f"{config.model.name!r}: set model.name={info['variant']}."
        )
    config = copy.deepcopy(config)
    if config.model.input_normalization is None:
        config.model.input_normalization = info["input_normalization"]
    if config.data.eval_size is None:
        config.data.eval_size = int(info["eval_size"])
        config.data.eval_crop_padding = eval_crop_padding(info["eval_size"], info["crop_pct"])
    if config.data.train_size is None:
        config.data.train_size = int(info["train_size"])
    return validate_config(config)
