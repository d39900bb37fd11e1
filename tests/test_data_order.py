"""The order of training examples: every pass a fresh permutation of the split whatever the shuffle buffer,
streams that start at a given pass or position (resumed runs), and the recipe's epochs that continue
through the data with train.steps_per_epoch."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from efficientnetv2_keras.data import ArraySource, CachedSource, ImageFolderSource, TFRecordSource, build_dataset

CLASSES, PER_CLASS = 20, 16  # 320 files, listed class after class


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    for label in range(CLASSES):
        (root / f"class{label:02d}").mkdir()
        for i in range(PER_CLASS):
            image = Image.fromarray(np.full((8, 8, 3), label * 10 + i % 8, np.uint8))
            image.save(root / f"class{label:02d}" / f"{i}.png")
    return ImageFolderSource(str(root))


def _label_batches(dataset):
    return [labels if labels.ndim == 1 else labels.argmax(1) for _, labels in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("cached", [False, True], ids=["folder", "cached"])
def test_class_sorted_files_are_mixed_from_the_first_batch_whatever_the_buffer(class_folder, cached):
    source = CachedSource(class_folder) if cached else class_folder
    # A shuffle buffer of 8 records over 320 files stored class after class: the buffer alone would
    # give batches of one or two classes.
    dataset = build_dataset(source, "train", 8, 16, training=True, augment=None, flip=False, shuffle_buffer=8,
                            label_format="sparse", seed=0)
    for _ in range(2):  # two passes, each a permutation of all 320 files
        batches = _label_batches(dataset)
        # A uniformly random batch of 16 out of 20 equal classes holds 11.2 classes on average.
        assert min(len(set(batch)) for batch in batches[:5]) >= 7, [sorted(set(b)) for b in batches[:5]]
        assert np.bincount(np.concatenate(batches), minlength=CLASSES).tolist() == [PER_CLASS] * CLASSES


def _numbered(count=40):
    """An ArraySource whose image i is filled with the value i (so the pipeline's order can be read back)."""
    images = np.repeat(np.arange(count, dtype=np.uint8), 8 * 8 * 3).reshape(count, 8, 8, 3)
    return ArraySource({"train": (images, np.arange(count) % 4)}, num_classes=4)


def _order(dataset):
    return [int(image[0, 0, 0]) for images, _ in dataset.as_numpy_iterator() for image in images]


def test_every_pass_is_a_fresh_seeded_permutation_and_epoch_picks_a_pass():
    source = _numbered()
    plain = dict(training=True, augment=None, flip=False, shuffle_buffer=1, seed=1)
    dataset = build_dataset(source, "train", 8, 8, **plain)
    first, second = _order(dataset), _order(dataset)  # each iteration is the next pass
    assert sorted(first) == sorted(second) == list(range(40)) and first != second
    assert _order(build_dataset(source, "train", 8, 8, **plain)) == first  # the same seed: the same passes
    assert _order(build_dataset(source, "train", 8, 8, epoch=1, **plain)) == second
    assert _order(build_dataset(source, "train", 8, 8, **{**plain, "seed": 2})) != first
    # epoch=k: pass k, however often the dataset is iterated (a resumed run's epoch k).
    third = build_dataset(source, "train", 8, 8, epoch=3, **plain)
    assert _order(third) == _order(third) != _order(build_dataset(source, "train", 8, 8, epoch=4, **plain))
    epoch = tf.Variable(0, dtype=tf.int64)  # read when an iterator starts: set by a callback before each epoch
    steered = build_dataset(source, "train", 8, 8, epoch=epoch, **plain)
    epoch.assign(3)
    assert _order(steered) == _order(third)
    assert int(steered.cardinality()) == 5  # one pass: 40 // 8 batches, known to Keras
    in_order = build_dataset(source, "train", 8, 8, **{**plain, "shuffle_buffer": 0})  # shuffling off
    assert _order(in_order) == _order(in_order) == list(range(40))


def test_a_stream_started_at_a_position_continues_the_uninterrupted_stream():
    source = _numbered()
    options = dict(training=True, randaug_magnitude=10, randaug_ops=["Rotate", "Solarize"], mixup_alpha=0.2,
                   cutmix_alpha=0.2, crop_area_range=(0.5, 1.0), seed=2, repeat=True)
    whole = list(build_dataset(source, "train", 16, 8, position=0, **options).take(12).as_numpy_iterator())
    # 56 examples in: inside the second pass of 40; the next 5 batches cross into the third pass.
    position = tf.Variable(0, dtype=tf.int64)
    resumed_later = build_dataset(source, "train", 16, 8, position=lambda: position * 8, **options)
    position.assign(7)
    for resumed in (build_dataset(source, "train", 16, 8, position=56, **options), resumed_later):
        for expected, got in zip(whole[7:], resumed.take(5).as_numpy_iterator()):
            np.testing.assert_array_equal(expected[0], got[0])  # same examples, crops, RandAugment, mixing
            np.testing.assert_array_equal(expected[1], got[1])
    assert int(build_dataset(source, "train", 16, 8, **options).cardinality()) == tf.data.INFINITE_CARDINALITY


def test_workers_permute_their_own_shards_every_pass():
    source = _numbered()
    passes = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        dataset = build_dataset(source, "train", 8, 8, training=True, augment=None, flip=False, seed=1,
                                input_context=context)  # per-worker batch 4, 20 examples per shard
        passes.append((_order(dataset), _order(dataset)))
    (first_0, second_0), (first_1, second_1) = passes
    assert sorted(first_0 + first_1) == sorted(second_0 + second_1) == list(range(40))
    assert first_0 != second_0 and first_1 != second_1 and sorted(first_0) == sorted(second_0)


def test_a_cached_folder_with_an_unreadable_file_gives_the_readable_ones_once_per_pass(tmp_path):
    for label in range(2):
        (tmp_path / f"class{label}").mkdir()
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), label * 6 + i, np.uint8)).save(tmp_path / f"class{label}" / f"{i}.png")
    whole = (tmp_path / "class1" / "5.png").read_bytes()
    (tmp_path / "class1" / "5.png").write_bytes(whole[: len(whole) // 2])  # passes the header check only
    source = CachedSource(ImageFolderSource(tmp_path, validate="header"))
    dataset = build_dataset(source, "train", 8, 1, training=True, augment=None, flip=False, seed=0)
    first, second = _order(dataset), _order(dataset)
    assert sorted(first) == sorted(second) == list(range(11)) and first != second


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(position=8), "repeat=True"),
        (dict(position=8, epoch=1, repeat=True), "either epoch .* or position"),
        (dict(epoch=-1), "epoch"),
        (dict(epoch=1.5), "epoch"),
        (dict(epoch=tf.Variable(0.5)), "integer"),
        (dict(epoch=1, training=False), "training"),
    ],
)
def test_bad_stream_starts_name_the_problem(kwargs, match):
    arguments = dict(source=_numbered(), split="train", image_size=8, batch_size=4, training=True)
    with pytest.raises(ValueError, match=match):
        build_dataset(**{**arguments, **kwargs})


def _tfrecords(directory, files=3, per_file=8):
    for shard in range(files):
        with tf.io.TFRecordWriter(str(directory / f"train-{shard:05d}-of-{files:05d}")) as writer:
            for i in range(per_file):
                number = shard * per_file + i
                image = tf.io.encode_png(np.full((8, 8, 3), number, np.uint8)).numpy()
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                           "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[number % 4 + 1]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return TFRecordSource(str(directory), num_classes=4)


def test_streaming_sources_seed_every_pass(tmp_path):
    keras.utils.set_random_seed(0)  # as the trainer does: a global seed of 0 must not get in the way
    source = _tfrecords(tmp_path)
    options = dict(training=True, augment=None, flip=False, shuffle_buffer=4, seed=3)
    dataset = build_dataset(source, "train", 8, 4, **options)
    first, second = _order(dataset), _order(dataset)
    assert sorted(first) == sorted(second) == list(range(24)) and first != second
    # Pass k is the same in a fresh process (a resumed run), not the first pass again.
    assert _order(build_dataset(source, "train", 8, 4, epoch=1, **options)) == second
    whole = _order(build_dataset(source, "train", 8, 4, position=0, repeat=True, **options).take(15))
    assert _order(build_dataset(source, "train", 8, 4, position=28, repeat=True, **options).take(8)) == whole[28:]


def _recipe(source, *overrides):
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.recipe import resolve_recipe

    config = load_config("digits_demo", [
        "data.minival=null", "data.cache=false", "data.augment=none", "data.shuffle_buffer=8", "data.train_size=8",
        "data.eval_size=8", "data.eval_split=null", "train.batch_size=16", "train.steps_per_epoch=2", "train.epochs=10", *overrides,
    ])
    return resolve_recipe(config, source=source)


@pytest.mark.parametrize("progressive", [False, True], ids=["static", "progressive"])
def test_recipe_epochs_of_steps_per_epoch_continue_through_the_data(class_folder, progressive):
    stages = ["progressive.num_stages=2", "progressive.image_size=[32,40]"]
    overrides = stages if progressive else ["progressive.enabled=false"]
    recipe = _recipe(class_folder, *overrides)
    train, callback = recipe.train_dataset(verbose=0)
    assert recipe.fit_steps_per_epoch == 2  # fit(steps_per_epoch=2) keeps one iterator for the run
    iterator, seen = iter(train), []
    for epoch in range(10):
        callback.epoch.assign(epoch)  # what its on_epoch_begin does before Keras reads the epoch
        seen += [next(iterator)[1].numpy().argmax(1) for _ in range(2)]
    counts = np.bincount(np.concatenate(seen), minlength=CLASSES)
    if progressive:  # two stages, each reading its own permutation: half of the files each
        assert counts.min() >= 1 and counts.sum() == 320
    else:  # 10 epochs x 2 steps x 16 = one pass over the 320 files: every file once
        assert counts.tolist() == [PER_CLASS] * CLASSES


def _epochs(recipe, first_epoch, epochs):
    """The batches a fit from `first_epoch` (a resumed run when > 0) reads in each epoch, as Keras reads them:
    a new iterator per epoch, or with fit_steps_per_epoch one iterator for the whole fit."""
    train, callback = recipe.train_dataset(verbose=0)
    steps, iterator, read = recipe.fit_steps_per_epoch, None, []
    for epoch in range(first_epoch, epochs):
        callback.epoch.assign(epoch)  # what its on_epoch_begin does before Keras reads the epoch
        if steps is None:
            read.append(list(train.as_numpy_iterator()))
        else:
            iterator = iterator or train.as_numpy_iterator()
            read.append([next(iterator) for _ in range(steps)])
    return read


@pytest.mark.parametrize("steps", ["null", "2"], ids=["one_pass", "steps_per_epoch"])
@pytest.mark.parametrize("progressive", [False, True], ids=["static", "progressive"])
def test_a_resumed_recipe_reads_what_the_uninterrupted_run_would_have(class_folder, progressive, steps):
    # Random crops (no RandAugment, to keep the test short); 2 stages of 2 epochs each.
    overrides = [f"train.steps_per_epoch={steps}", "train.epochs=4", "data.augment=randaug", "data.crop_area_min=0.5",
                 "data.randaug_magnitude=0", "data.train_size=16", "progressive.randaug_magnitude=[0,0]"]
    stages = ["progressive.num_stages=2", "progressive.image_size=[32,40]"]
    overrides += stages if progressive else ["progressive.enabled=false"]
    uninterrupted = _epochs(_recipe(class_folder, *overrides), 0, 4)
    for restart in (1, 3):  # inside a stage's run (1: stage 1, 3: stage 2)
        resumed = _epochs(_recipe(class_folder, *overrides), restart, 4)
        for expected, got in zip(uninterrupted[restart:], resumed, strict=True):
            for (images, labels), (images_again, labels_again) in zip(expected, got, strict=True):
                np.testing.assert_array_equal(images, images_again)
                np.testing.assert_array_equal(labels, labels_again)
