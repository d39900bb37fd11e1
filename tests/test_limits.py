"""One owner per fact: `limits` holds the choices and limits, and the recipe schema, the input pipeline,
the progressive schedule and the models read the same values from it (and import it, not each other)."""

import ast
import dataclasses
import subprocess
import sys

import pytest

from efficientnetv2_keras import hparams, limits
from efficientnetv2_keras.hparams import ConfigError, load_config

PACKAGES = ("efficientnetv2_keras", "keras", "tensorflow")


def _modules_loaded_by(module):
    """The package, keras and TensorFlow modules a fresh process holds after importing `module`."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.split('.')[0] in {PACKAGES}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_limits_module_imports_nothing():
    tree = ast.parse(open(limits.__file__, encoding="utf-8").read())
    assert [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))] == []


def test_the_recipe_schema_loads_without_keras_tensorflow_or_the_layers_above_it():
    loaded = _modules_loaded_by("efficientnetv2_keras.hparams")
    assert {m for m in loaded if not m.startswith("efficientnetv2_keras.hparams")} == {
        "efficientnetv2_keras", "efficientnetv2_keras.files", "efficientnetv2_keras.limits"}


def test_the_data_layer_does_not_import_the_recipe_schema_or_the_layers_above_it():
    loaded = _modules_loaded_by("efficientnetv2_keras.data")
    above = ("efficientnetv2_keras.hparams", "efficientnetv2_keras.progressive", "efficientnetv2_keras.training")
    assert "efficientnetv2_keras.limits" in loaded and not [m for m in loaded if m.startswith(above)]


def test_schema_and_pipeline_share_one_tuple_of_each_choice():
    from efficientnetv2_keras import data

    assert data.LABEL_FORMATS is hparams.LABEL_FORMATS is limits.LABEL_FORMATS
    assert data.RANDAUGMENT_OPS is hparams.RANDAUGMENT_OP_NAMES is limits.RANDAUGMENT_OP_NAMES
    fields = {section: {f.name: f.metadata for f in dataclasses.fields(cls)}
              for section, cls in hparams.SECTION_TYPES.items()}
    assert fields["data"]["augment"]["choices"] is limits.AUGMENTS
    assert fields["model"]["input_normalization"]["choices"] is limits.INPUT_NORMALIZATIONS
    assert fields["progressive"]["preset"]["choices"] is limits.PRESETS


def test_no_augmentation_is_one_choice_spelled_none_in_recipes_and_python():
    from efficientnetv2_keras.data import DigitsSource, build_dataset
    from efficientnetv2_keras.training.recipe import dataset_options

    assert limits.augment_argument(limits.NO_AUGMENT) is None and limits.augment_argument(None) is None
    assert dataset_options(load_config("digits_demo", ["data.augment=none"]))["augment"] is None
    digits = DigitsSource(image_size=16)
    recipe_spelling = build_dataset(digits, "test[:8]", 16, 8, training=False, augment="none")
    python_spelling = build_dataset(digits, "test[:8]", 16, 8, training=False, augment=None)
    assert (next(iter(recipe_spelling))[0].numpy() == next(iter(python_spelling))[0].numpy()).all()
    with pytest.raises(ValueError, match=r"augment must be one of \['randaug', 'ft', 'none'\] or None"):
        limits.augment_argument("autoaugment")


def test_a_recipe_and_the_code_draw_the_line_at_the_same_sizes_and_magnitudes():
    from efficientnetv2_keras.data import RandAugment, build_dataset
    from efficientnetv2_keras.models import build_model
    from efficientnetv2_keras.progressive import progressive_schedule

    smallest_image, smallest_stage = limits.MIN_PIPELINE_IMAGE_SIZE, limits.MIN_MODEL_IMAGE_SIZE
    load_config("digits_demo", [f"data.train_size={smallest_image}", f"data.eval_size={smallest_image}"])
    build_dataset("digits", "test[:4]", smallest_image, 4, training=False)
    with pytest.raises(ConfigError, match="data.train_size must be >= 8"):
        load_config("digits_demo", [f"data.train_size={smallest_image - 1}"])
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        build_dataset("digits", "test", smallest_image - 1, 4, training=False)

    progressive_schedule("b0", "paper", total_epochs=4, image_size=(smallest_stage, 64))
    with pytest.raises(ConfigError, match="progressive.image_size values must be >= 32"):
        load_config("digits_demo", [f"progressive.image_size=[{smallest_stage - 1}, 64]"])
    with pytest.raises(ValueError, match="image_size must be an integer >= 32"):
        progressive_schedule("b0", "paper", total_epochs=4, image_size=(smallest_stage - 1, 64))
    with pytest.raises(ValueError, match="at least 32"):
        build_model("b0", input_shape=(smallest_stage - 1, smallest_stage - 1, 3))

    RandAugment(limits.MAX_RANDAUG_MAGNITUDE)
    load_config("digits_demo", [f"data.randaug_magnitude={limits.MAX_RANDAUG_MAGNITUDE}"])
    for override in ("data.randaug_magnitude=30.5", "progressive.randaug_magnitude=[5, 30.5]"):
        with pytest.raises(ConfigError, match=r"in \[0, 30\]"):
            load_config("digits_demo", [override])
    with pytest.raises(ValueError, match=r"in \[0, 30\]"):
        RandAugment(limits.MAX_RANDAUG_MAGNITUDE + 0.5)
