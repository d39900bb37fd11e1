"""build_dataset: shapes, dtypes, label formats, stage-to-stage structure, sharding, seeds, errors."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_keras.data import CachedSource, DigitsSource, build_dataset


@pytest.fixture(scope="module")
def digits():
    return DigitsSource(image_size=16)


def test_training_batches_have_static_shapes_float_pixels_and_one_hot_labels(digits):
    dataset = build_dataset(digits, "train", 24, 8, training=True, randaug_magnitude=10, mixup_alpha=0.2,
                            cutmix_alpha=0.2, seed=0)  # fmt: skip
    image_spec, label_spec = dataset.element_spec
    assert image_spec.shape == (8, 24, 24, 3) and image_spec.dtype == tf.float32
    assert label_spec.shape == (8, 10) and label_spec.dtype == tf.float32
    for images, labels in dataset.take(3):
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
        np.testing.assert_allclose(tf.reduce_sum(labels, 1).numpy(), 1.0, atol=1e-6)


def test_sparse_labels_and_eval_batches(digits):
    dataset = build_dataset(digits, "test", 16, 100, training=False, label_format="sparse")
    assert dataset.element_spec[1].shape.as_list() == [None] and dataset.element_spec[1].dtype == tf.int32
    sizes = [int(labels.shape[0]) for _, labels in dataset]
    assert sizes == [100, 100, 100, 60]  # eval keeps the remainder


def test_element_structure_is_identical_across_stages_except_image_size(digits):
    stage_1 = build_dataset(digits, "train", 16, 8, training=True, randaug_magnitude=5, mixup_alpha=0.0)
    stage_4 = build_dataset(digits, "train", 32, 8, training=True, randaug_magnitude=15, mixup_alpha=0.2,
                            cutmix_alpha=0.2)  # fmt: skip
    (image_1, label_1), (image_4, label_4) = stage_1.element_spec, stage_4.element_spec
    assert label_1 == label_4
    assert image_1.dtype == image_4.dtype
    assert image_1.shape == (8, 16, 16, 3) and image_4.shape == (8, 32, 32, 3)


def test_one_epoch_is_finite_with_drop_remainder(digits):
    dataset = build_dataset(digits, "train", 16, 128, training=True, augment=None, flip=False)
    assert sum(1 for _ in dataset) == 1437 // 128 == digits.num_examples("train") // 128
    assert sum(1 for _ in build_dataset(digits, "test", 16, 128, training=False)) == 3  # 360 images, last batch kept
    repeated = build_dataset(digits, "train", 16, 128, training=True, augment=None, repeat=True)
    assert len(list(repeated.take(20))) == 20


def _image_hashes(dataset):
    return sorted(hashlib.sha1(image.tobytes()).hexdigest() for batch, _ in dataset.as_numpy_iterator() for image in batch)


@pytest.mark.parametrize("cached", [False, True], ids=["source", "cached"])
def test_input_context_shards_examples_and_batch_per_worker(digits, cached):
    whole = build_dataset(digits, "test", 16, 40, training=False)
    source = CachedSource(digits) if cached else digits  # a cache per worker's shard
    shards = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        dataset = build_dataset(source, "test", 16, 40, training=False, input_context=context)
        assert max(int(b.shape[0]) for b, _ in dataset) == 20  # per-replica batch
        shards.append(_image_hashes(dataset))
    assert len(shards[0]) == len(shards[1]) == 180
    assert sorted(shards[0] + shards[1]) == _image_hashes(whole)


class _CountingDigits(DigitsSource):
    """Digits that count how many images they decode."""

    def __init__(self):
        super().__init__(image_size=16)
        self.decoded = tf.Variable(0, dtype=tf.int64)

    def decode(self, record):
        self.decoded.assign_add(1)
        return super().decode(record)


def test_cached_source_decodes_a_split_once_for_every_pipeline(tmp_path):
    source = _CountingDigits()
    # cache=True in each pipeline: every stage decodes (and keeps) its own copy.
    for size in (16, 24):
        dataset = build_dataset(source, "train[:256]", size, 64, training=True, augment=None, cache=True)
        assert [sum(1 for _ in dataset) for _ in range(2)] == [4, 4]
    assert int(source.decoded.numpy()) == 2 * 256
    # One CachedSource for all stages: decoded once, whatever the size, augmentation or epoch.
    for cache in (True, str(tmp_path / "digits")):
        source.decoded.assign(0)
        cached = CachedSource(source, cache=cache)
        stages = [build_dataset(cached, "train[:256]", size, 64, training=True, mixup_alpha=0.1 * i, seed=i)
                  for i, size in enumerate((16, 24, 32))]  # fmt: skip
        assert [sum(1 for _ in dataset) for dataset in stages + stages] == [4] * 6
        assert int(source.decoded.numpy()) == 256
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("digits-train_256_-shuffled-0of1")
    # Evaluation reads its own split; names, sizes and aliases pass through.
    assert sum(int(b.shape[0]) for b, _ in build_dataset(cached, "val", 16, 100, training=False)) == 360
    assert (cached.name, cached.num_classes, cached.num_examples("train[:10%]")) == ("digits", 10, 144)
    assert cached.num_examples("train") // 128 == 11
    with pytest.raises(ValueError, match="pass cache=False"):
        build_dataset(cached, "train", 16, 8, training=True, cache=True)
    with pytest.raises(ValueError, match="wrap the underlying source once"):
        CachedSource(cached)
    with pytest.raises(ValueError, match="file-name prefix"):
        CachedSource(source, cache=1)


def test_seeded_pipelines_repeat_and_epochs_differ(digits):
    def first_batch(dataset):
        return next(iter(dataset))[0].numpy()

    kwargs = dict(training=True, randaug_magnitude=10, mixup_alpha=0.2, seed=3)
    a = build_dataset(digits, "train", 16, 8, **kwargs)
    b = build_dataset(digits, "train", 16, 8, **kwargs)
    np.testing.assert_array_equal(first_batch(a), first_batch(b))
    assert not np.array_equal(first_batch(a), first_batch(a))  # a new epoch draws new augmentations


def test_finetune_augmentation_pipeline(digits):
    train = build_dataset(digits, "train", 16, 4, training=True, augment="ft", seed=0)
    evaluate = build_dataset(digits, "test", 16, 4, training=False, augment="ft")
    assert train.element_spec[0].shape == (4, 16, 16, 3)
    assert next(iter(evaluate))[0].shape == (4, 16, 16, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=4), "image_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(split="holdout"), "available splits"),
        (dict(randaug_magnitude=31), "magnitude"),
        (dict(randaug_layers=-1), "randaug_layers"),
        (dict(mixup_alpha=-1), "mixup_alpha"),
        (dict(augment="autoaugment"), "augment"),
        (dict(crop_area_range=(0.0, 1.0)), "crop_area_range"),
        (dict(label_format="soft"), "label_format"),
        (dict(label_format="sparse", mixup_alpha=0.2), "sparse"),
        (dict(training="yes"), "training"),
    ],
)
def test_bad_arguments_name_the_problem(digits, kwargs, match):
    arguments = dict(source=digits, split="train", image_size=16, batch_size=4, training=True)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_dataset(**arguments)


def test_keras_fit_consumes_the_pipeline(digits):
    import keras

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(4, 3, strides=2),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile("adam", "categorical_crossentropy")
    dataset = build_dataset(digits, "train[:64]", 16, 16, training=True, randaug_magnitude=5, mixup_alpha=0.2)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_randaug_ops_narrow_the_op_set():
    with pytest.raises(ValueError, match="Unknown RandAugment op"):
        build_dataset("digits", "train", 16, 8, training=True, randaug_magnitude=5, randaug_ops=["Blur"])
    # Invert alone at any magnitude > 0 turns ink white-on-black into black-on-white.
    plain = next(iter(build_dataset("digits", "train", 16, 8, training=True, seed=0, flip=False, crop_area_range=(1.0, 1.0))))[0]
    inverted = next(iter(build_dataset("digits", "train", 16, 8, training=True, seed=0, flip=False, crop_area_range=(1.0, 1.0),
                                       randaug_magnitude=5, randaug_layers=1, randaug_ops=["Invert"])))[0]
    np.testing.assert_allclose(inverted.numpy(), 255.0 - plain.numpy(), atol=1.0)
