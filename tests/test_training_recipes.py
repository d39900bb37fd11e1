"""Every YAML recipe builds its model (with its class count) and its optimizer, schedule, loss and metrics.

No training, no data on disk and no downloads (`init_checkpoint` is not loaded). Each distinct variant
is built once, with the head of the first recipe that uses it; the other recipes of that variant are
compiled on the same backbone with their own optimizer, loss and metrics.
"""

import pytest
import gc

import keras

from efficientnetv2_keras import hparams, training
from efficientnetv2_keras.data import IMAGENET21K_CLASSES, KERAS_DATASETS, PAPER_TFDS_DATASETS

# Training-set sizes for steps_per_epoch (tensorflow-datasets splits; 21k: the released code's); digits 1,437;
# Fashion-MNIST (keras.datasets) 60,000.
TRAIN_EXAMPLES = {"imagenet2012": 1_281_167, "tfrecord21k:": 12_720_275, "cifar10": 50_000, "cifar100": 50_000,
                  "oxford_flowers102": 2_040, "cars196": 8_144, "digits": 1_437, "keras:fashion_mnist": 60_000}
EXPECTED_CLASSES = {"imagenet": 1000, "imagenet21k": IMAGENET21K_CLASSES, "cifar10": 10, "cifar100": 100,
                    "flowers": 102, "cars": 196, "digits": 10, "fashion": 10}


def _expected_classes(recipe):
    if recipe.startswith("finetune_"):  # finetune_<dataset>[_<from what>]
        return EXPECTED_CLASSES[recipe.split("_")[1]]
    if recipe.startswith("digits"):
        return 10
    return EXPECTED_CLASSES[recipe.split("_", 1)[0]]


# finetune_folder's folder comes from the command line (data.source=folder:DIR): tests/test_finetune_folder.py.
FOLDER_RECIPE_SOURCE = "folder:"


def test_recipe_sources_are_known():
    for recipe in hparams.list_recipes():
        source = hparams.load_config(recipe).data.source
        if source == FOLDER_RECIPE_SOURCE:
            continue
        assert source in TRAIN_EXAMPLES, (recipe, source)
        keras_dataset = source.startswith("keras:") and source[len("keras:"):] in KERAS_DATASETS
        assert source in PAPER_TFDS_DATASETS or source in ("tfrecord21k:", "digits") or keras_dataset


# Slow (builds every recipe's model up to XL, ~70 s); make test stays under 15 minutes.
@pytest.mark.slow
def test_every_recipe_builds_its_model_and_optimizer():
    by_variant = {}
    for recipe in hparams.list_recipes():
        config = hparams.load_config(recipe)
        if config.data.source != FOLDER_RECIPE_SOURCE:
            by_variant.setdefault(config.model.name, []).append((recipe, config))

    for variant, recipes in by_variant.items():
        first_recipe, first_config = recipes[0]
        classes = training.resolve_num_classes(first_config)
        model = training.build_model_from_config(first_config, load_checkpoint=False)
        assert model.name == variant
        assert model.output_shape == (None, classes) == (None, _expected_classes(first_recipe))
        for recipe, config in recipes:
            assert training.resolve_num_classes(config) == _expected_classes(recipe)
            steps_per_epoch, epochs, total = training.training_steps(config, TRAIN_EXAMPLES[config.data.source])
            optimizer = training.compile_from_config(model, config, steps_per_epoch, total)
            train = config.train
            assert optimizer.use_ema == (train.ema_decay > 0)
            # Weight decay: the coupled L2 term is in the optimizer's gradient, never in the reported loss.
            assert not model.losses, recipe
            coupled = getattr(optimizer, "l2_weight_decay", 0.0)
            assert coupled == (train.weight_decay if train.optimizer != "adamw" else 0.0), recipe
            averaged = train.ema_decay > 0 and train.ema_bn_statistics
            statistics = training.batch_norm_statistics(model) if averaged else []
            assert [id(v) for v in optimizer.ema_statistics] == [id(v) for v in statistics], recipe
            lr_peak = float(keras.ops.convert_to_numpy(optimizer.learning_rate))  # step 0 of the warmup
            assert lr_peak == 0.0 or train.lr_warmup_epochs == 0, recipe
            expected_loss = (keras.losses.CategoricalCrossentropy, training.MultiLabelSoftmaxCrossEntropy)
            assert isinstance(model.loss, expected_loss)
            if recipe.startswith("finetune_"):
                assert steps_per_epoch * epochs >= 10_000 and train.weight_decay == 0.0
        del model
        keras.backend.clear_session()
        gc.collect()


def test_multi_label_recipe_trains_with_precision_metrics(tiny_spec):
    """The 21k recipe's loss and metrics on a tiny model with multi-hot targets (one step)."""
    import numpy as np

    from efficientnetv2_keras.models import build_model

    config = hparams.load_config("imagenet21k_s", ["train.batch_size=4"])
    model = build_model(tiny_spec, classes=7, input_shape=(32, 32, 3))
    training.compile_from_config(model, config, steps_per_epoch=10, total_steps=100)
    model.run_eagerly = True  # wiring only
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.zeros((4, 7), "float32")
    y[[0, 0, 1, 2, 3, 3, 3], [1, 4, 2, 6, 0, 3, 5]] = 1
    y /= y.sum(-1, keepdims=True)  # what the 21k pipeline emits
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) >= {"loss", "accuracy", "top5_accuracy", "precision_at_1", "precision_at_5", "recall_at_5"}
    assert np.isfinite(logs["loss"])
