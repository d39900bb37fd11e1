"""A training run read back: its folder (`RunDir`, owned by `training.run_folder` and re-exported here)
and the recipe (`config.yaml`) it was trained with.

A model trained at 48 px with a whole-image resize (`data.eval_crop_padding: 0`) must be evaluated,
served and exported that way, not at its variant's default 224 px with the official centre crop:
`eval_preprocessing` finds those values from the checkpoint's path, for tools/predict.py,
tools/export.py and tools/evaluate.py alike.
"""

import dataclasses

from efficientnetv2_keras.training.run_folder import (  # noqa: F401  (the names users import from here)
    BACKUP_DIR,
    BEST_FILE,
    CONFIG_FILE,
    CURVES_PLOT,
    LABELS_FILE,
    LAST_FILE,
    LOG_FILE,
    RESULTS_FILE,
    SCHEDULE_PLOT,
    SCHEDULE_TEXT,
    TENSORBOARD_DIR,
    RunDir,
    backup_epochs,
    backup_path,
    record_path,
    run_directory,
    run_file,
)


@dataclasses.dataclass(frozen=True)
class EvalPreprocessing:
    """The input size and centre-crop padding to evaluate, serve or export a checkpoint with.

    None means "not known here": the model's fixed input size or its variant's eval size, and the
    official crop padding (32).
    """

    image_size: object  # int or None
    crop_padding: object  # int or None
    config_path: object = None  # the config.yaml the values not given explicitly came from

    def describe(self):
        size = f"{self.image_size} px" if self.image_size else "the model's default size"
        padding = "the official crop padding" if self.crop_padding is None else f"crop padding {self.crop_padding}"
        origin = f" (from {self.config_path})" if self.config_path else ""
        return f"{size}, {padding}{origin}"


def eval_preprocessing(path=None, image_size=None, crop_padding=None):
    """Input size and crop padding for a checkpoint: explicit values first, then its run's config.yaml.

    path: a checkpoint (`runs/x/best.keras`) or a run directory; when `config.yaml` sits next to it,
      its eval size (`data.eval_size`, else the variant's) and `data.eval_crop_padding` fill the
      values not given. None, or a file outside a run: only the explicit values.
    Raises ConfigError (a ValueError) when the run's config.yaml cannot be read, naming the flags
    that make reading it unnecessary.
    """
    if path is None or (image_size is not None and crop_padding is not None):
        return EvalPreprocessing(image_size, crop_padding)
    recipe = run_file(path, CONFIG_FILE)
    if recipe is None:
        return EvalPreprocessing(image_size, crop_padding)
    from efficientnetv2_keras import hparams
    from efficientnetv2_keras.training.recipe import image_sizes

    try:
        config = hparams.load_config(recipe)
    except hparams.ConfigError as error:
        raise hparams.ConfigError(
            f"Cannot read {recipe}, the recipe of the run this checkpoint came from, for its image size "
            f"and crop padding: {error}\nPass them explicitly (--image_size, --crop_padding) to skip it."
        ) from None
    return EvalPreprocessing(
        image_size if image_size is not None else image_sizes(config)[1],
        crop_padding if crop_padding is not None else config.data.eval_crop_padding,
        recipe,
    )
