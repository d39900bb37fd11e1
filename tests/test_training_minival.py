"""Model selection on a minival carved from the training data; the test split only after training.

The paper's released code holds out part of the ImageNet training set (the first 20 training shards,
25,021 images) as a "minival" for choosing checkpoints, and reports the validation set (our test split)
once. These tests pin the carving for each kind of source, the recipe key, and that a resumed run keeps
the best value it had reached (so a worse epoch never replaces best.keras).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_keras as ev2
from efficientnetv2_keras import training
from efficientnetv2_keras.data import ArraySource, DigitsSource, TFDSSource, get_source
from efficientnetv2_keras.hparams import ConfigError, load_config
from efficientnetv2_keras.training.callbacks import BestAndLastCheckpoint, describe_checkpoint
from efficientnetv2_keras.training.evaluation import evaluate_checkpoints
from efficientnetv2_keras.training.recipe import minival_split

# ------------------------------------------------------------------------------------------------
# Carving the minival.
# ------------------------------------------------------------------------------------------------


def test_digits_minival_is_stratified_disjoint_and_fixed():
    source = DigitsSource(image_size=8)
    rest, held = source.hold_out("train", 0.1)
    assert (rest, held) == ("train-minival", "minival")
    assert (source.num_examples(rest), source.num_examples(held)) == (1293, 144)
    train_images, train_labels = source._arrays("train")
    rest_images, rest_labels = source._arrays(rest)
    held_images, held_labels = source._arrays(held)
    # Every class keeps its share (14 or 15 of 144), and the two parts are exactly the training split.
    assert set(np.bincount(held_labels, minlength=10)) <= {14, 15}
    together = np.concatenate([rest_images, held_images]).reshape(len(train_labels), -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, train_images.reshape(len(train_labels), -1)))
    # The test split is untouched, and the same minival comes out every time.
    assert source.num_examples("test") == 360
    other = DigitsSource(image_size=8)
    other.hold_out("train", 144)
    np.testing.assert_array_equal(other._arrays("minival")[0], held_images)


def test_minival_size_errors_name_the_key():
    source = ArraySource({"train": (np.zeros((10, 4, 4, 3), np.uint8), np.arange(10) % 2)}, 2)
    with pytest.raises(ValueError, match=r"data\.minival"):
        source.hold_out("train", 10)
    with pytest.raises(ValueError, match=r"data\.minival"):
        source.hold_out("train", 0.01)  # rounds to no example


def test_tfds_minival_is_a_tail_slice_of_each_part():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8):
        cifar = TFDSSource("cifar10")
        assert cifar.hold_out("train", 0.02) == ("train[0:49000]", "train[49000:50000]")
        flowers = TFDSSource("oxford_flowers102")
        rest, held = flowers.hold_out("train+validation", 0.05)  # 102 of 2,040, half from each part
        assert (rest, held) == ("train[0:969]+validation[0:969]", "train[969:1020]+validation[969:1020]")
        assert cifar.hold_out("train[:50%]", 1000) == ("train[0:24000]", "train[24000:25000]")


def _write_records(path, count, first_label=1):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            image = tf.io.encode_png(np.full((4, 4, 3), i, np.uint8)).numpy()
            features = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[first_label]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def test_tfrecord_minival_is_whole_leading_files(tmp_path):
    # The released ImageNet minival: the first training shards, whole files, until the size is reached.
    for shard in range(3):
        _write_records(tmp_path / f"train-0000{shard}-of-00003", 3)
    _write_records(tmp_path / "validation-00000-of-00001", 2)
    source = get_source(f"tfrecord:{tmp_path}", num_classes=2)
    assert source.hold_out("train", 4) == ("train-minival", "minival")
    assert source.split_sizes == {"train": 9, "validation": 2, "minival": 6, "train-minival": 3}
    assert len(list(source.records("minival"))) == 6 and len(list(source.records("train-minival"))) == 3
    with pytest.raises(ValueError, match="every file"):
        source.hold_out("train", 7)


# ------------------------------------------------------------------------------------------------
# The recipe key.
# ------------------------------------------------------------------------------------------------


def test_minival_key_values_and_errors():
    assert load_config(None).data.minival == 25_000  # the paper's ImageNet minival
    assert load_config(None, ["data.minival=0.05"]).data.minival == 0.05
    assert load_config(None, ["data.minival=minival"]).data.minival == "minival"
    assert load_config(None, ["data.minival=null"]).data.minival is None
    for bad, match in (("0", ">= 1"), ("1.5", r"in \(0, 1\)"), ("-3", ">= 1")):
        with pytest.raises(ConfigError, match=rf"data\.minival.*{match}"):
            load_config(None, [f"data.minival={bad}"])
    with pytest.raises(ConfigError, match="test split"):
        load_config("digits_demo", ["data.minival=test"])


def test_recipes_select_on_a_minival_sized_per_dataset():
    expected = {"imagenet_s": 25_000, "imagenet_b0": 25_000, "imagenet21k_s": 25_000, "finetune_imagenet": 25_000,
                "finetune_cifar10": 0.05, "finetune_cifar100": 0.05, "finetune_flowers": 0.05,
                "finetune_cars": 0.05, "digits_demo": 0.1}
    for recipe, size in expected.items():
        config = load_config(recipe)
        assert config.data.minival == size, recipe
        assert config.train.ema_bn_statistics, recipe  # the released code averages BN statistics


def test_minival_split_of_the_demo_recipe():
    config = load_config("digits_demo")
    source = DigitsSource(image_size=8)
    train_split, minival, info = minival_split(config, source)
    assert (train_split, minival) == ("train-minival", "minival")
    assert info == {"split": "minival", "carved_from": "train", "size": 0.1, "examples": 144, "train_examples": 1293}
    named = minival_split(load_config("digits_demo", ["data.minival=test[:50%]", "data.eval_split=test[50%:]"]),
                          source)
    assert named[:2] == ("train", "test[:50%]") and named[2]["examples"] == 180
    assert minival_split(load_config("digits_demo", ["data.minival=null"]), source) == ("train", None, None)


# ------------------------------------------------------------------------------------------------
# best.keras across a resume.
# ------------------------------------------------------------------------------------------------


def test_a_resumed_run_keeps_its_best_value(tiny_spec, tmp_path):
    """Interrupted after a good epoch, resumed: a worse epoch must not replace best.keras."""
    scores = [0.5, 0.9, 0.6, 0.95]  # the "validation" metric per epoch
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(8) % 3, 3)

    class Score(keras.callbacks.Callback):  # stands in for validation: a known value per epoch
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = scores[epoch]

    class Interrupt(keras.callbacks.Callback):
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.at:
                raise RuntimeError("simulated preemption")

    def run(stop_at, epochs, resuming):
        keras.utils.set_random_seed(0)
        model = ev2.build_model(tiny_spec, classes=3, input_shape=(32, 32, 3))
        config = load_config(None, ["train.optimizer=momentum", "train.ema_decay=0.9", "train.weight_decay=0"])
        model.compile(optimizer=training.build_optimizer(config, 0.1, model), loss="categorical_crossentropy",
                      run_eagerly=True)  # one step per epoch: tracing would cost more than it saves
        checkpoint = BestAndLastCheckpoint(str(tmp_path), monitor="val_score", restore_best=resuming,
                                     record={"weights": "EMA", "selected_on": "minival"})
        callbacks = [Score(), training.EMACallback([checkpoint]),
                     keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))]
        if stop_at is not None:
            callbacks.append(Interrupt(stop_at))
        model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=callbacks)

    def best_record():
        return json.loads((tmp_path / "best.json").read_text())

    with pytest.raises(RuntimeError, match="preemption"):
        run(stop_at=2, epochs=4, resuming=False)  # epochs 1-2 done: best 0.9 at epoch 2
    assert best_record() == {"weights": "EMA", "selected_on": "minival", "epoch": 2, "monitor": "val_score",
                             "value": 0.9}
    kernel = keras.models.load_model(str(tmp_path / "best.keras")).get_layer("stem_conv").kernel.numpy()
    with pytest.raises(RuntimeError, match="preemption"):
        run(stop_at=3, epochs=4, resuming=True)  # epoch 3 (0.6): worse than 0.9
    assert best_record()["epoch"] == 2
    np.testing.assert_array_equal(
        keras.models.load_model(str(tmp_path / "best.keras")).get_layer("stem_conv").kernel.numpy(), kernel)

    # The test split, once per checkpoint, each labelled (here best.keras is an earlier epoch than last.keras).
    config = load_config(None, ["data.eval_split=test", "data.eval_size=32", "data.eval_crop_padding=0",
                                "eval.batch_size=8", "train.weight_decay=0"])
    source = ArraySource({"test": (x.astype("uint8"), np.arange(8) % 3)}, 3)
    final, best = evaluate_checkpoints(config, str(tmp_path), tf.distribute.get_strategy(), source)
    assert (final["role"], final["checkpoint"]) == ("final", "last.keras: EMA weights after epoch 3")
    assert (best["role"], best["checkpoint"]) == ("best", "best.keras: EMA weights after epoch 2, best val_score "
                                                          "0.9000 on minival")
    assert final["eval_split"] == best["eval_split"] == "test" and final["loss"] != best["loss"]
    run(stop_at=None, epochs=4, resuming=True)  # epoch 4 (0.95) is better
    assert best_record()["epoch"] == 4 and best_record()["value"] == 0.95
    assert describe_checkpoint(str(tmp_path / "best.keras")) == (
        "best.keras: EMA weights after epoch 4, best val_score 0.9500 on minival")
    assert describe_checkpoint(str(tmp_path / "last.keras")) == "last.keras: EMA weights after epoch 4"
