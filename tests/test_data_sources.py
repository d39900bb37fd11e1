"""Sources: bundled digits, tfds (mocked, and unprepared), TFRecords, image folders with broken files."""

import hashlib
import os
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from efficientnetv2_keras.data import (
    IMAGENET21K_CLASSES,
    ArraySource,
    DigitsSource,
    ImageFolderSource,
    TFDSSource,
    TFRecordSource,
    build_dataset,
    get_source,
    stratified_split,
)

# ------------------------------------------------------------------------------------------------
# Digits.
# ------------------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_identical_on_every_run():
    first, second = DigitsSource(), DigitsSource()
    assert first.split_sizes == {"train": 1437, "test": 360}
    for split in ("train", "test"):
        np.testing.assert_array_equal(first.split_indices[split], second.split_indices[split])
    test = first.split_indices["test"]
    # Pinned: the split may never change between runs, machines or numpy versions (RandomState is frozen).
    assert hashlib.sha1(test.tobytes()).hexdigest()[:12] == "c2da8d855738"
    assert test[:5].tolist() == [3, 7, 13, 19, 36]
    assert not set(test) & set(first.split_indices["train"])
    assert len(set(test) | set(first.split_indices["train"])) == 1797
    per_class = np.bincount(first._labels[test], minlength=10)
    assert per_class.sum() == 360 and per_class.min() >= 35 and per_class.max() <= 37  # ~20 % of each class


def test_digits_examples_are_rgb_uint8_at_the_requested_size():
    source = DigitsSource(image_size=24)
    images, labels = zip(*source.as_dataset("test").take(16).as_numpy_iterator())
    images = np.stack(images)
    assert images.shape == (16, 24, 24, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray replicated to RGB
    assert images.max() > 200 and images.min() == 0  # 0..16 mapped onto 0..255
    assert set(labels) <= set(range(10))


def test_digits_aliases_and_slices():
    source = get_source("digits")
    assert source.num_examples("validation") == 360  # alias of test
    assert source.num_examples("train[:10%]") == 144
    assert len(list(source.as_dataset("train[-10:]"))) == 10
    with pytest.raises(ValueError, match="available splits"):
        source.as_dataset("holdout")


def test_stratified_split_counts():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(labels, 12, seed=0)
    assert len(test) == 12 and np.bincount(labels[test]).tolist() == [2, 4, 6]
    assert len(train) == 48


def test_array_source_takes_numpy_arrays_and_checks_them():
    gray = np.random.RandomState(0).randint(0, 256, (6, 10, 12)).astype(np.uint8)
    source = ArraySource({"train": (gray, [0, 1, 2, 0, 1, 2])}, num_classes=3)
    images, labels = zip(*source.as_dataset("train").as_numpy_iterator())
    assert images[0].shape == (10, 12, 3) and list(labels) == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="uint8"):
        ArraySource({"train": (gray.astype(np.float32), np.zeros(6))}, num_classes=3)
    with pytest.raises(ValueError, match="one label in"):
        ArraySource({"train": (gray, [0, 1, 2, 3, 0, 1])}, num_classes=3)


def test_unknown_source_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="digits.*cifar10.*folder:"):
        get_source("mnist-ish")


# ------------------------------------------------------------------------------------------------
# tensorflow-datasets.
# ------------------------------------------------------------------------------------------------


def test_unprepared_tfds_dataset_fails_fast_naming_dataset_and_data_dir(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as error:
        get_source("cifar10", data_dir=str(tmp_path))
    message = str(error.value)
    assert "cifar10" in message and str(tmp_path) in message and "tfds build cifar10" in message
    assert time.perf_counter() - start < 30  # no download attempt (those retry for minutes); generous bound


def test_tfds_source_with_mock_data_builds_a_training_pipeline():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=8):
        source = TFDSSource("cifar10")
        assert source.num_classes == 10 and source.split_sizes == {"train": 50_000, "test": 10_000}
        dataset = build_dataset(source, "train", 32, 4, training=True, randaug_magnitude=5, mixup_alpha=0.2, seed=0)
        images, labels = next(iter(dataset))
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (4, 10)
    np.testing.assert_allclose(tf.reduce_sum(labels, 1).numpy(), 1.0, atol=1e-6)


def test_tfds_imagenet_with_mock_data_evaluates_variable_sized_images_and_resolves_val():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        dataset = build_dataset("imagenet2012", "val", 24, 2, training=False, label_format="sparse")
        batches = list(dataset)
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert all(b[0].shape[1:] == (24, 24, 3) and b[1].dtype == tf.int32 for b in batches)


# ------------------------------------------------------------------------------------------------
# TFRecords.
# ------------------------------------------------------------------------------------------------


def _jpeg(seed, size=(20, 28)):
    image = np.random.RandomState(seed).randint(0, 256, (*size, 3)).astype(np.uint8)
    return tf.io.encode_jpeg(image).numpy()


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in examples:
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def test_imagenet_tfrecords_labels_become_zero_based(tmp_path):
    # imagenet_to_gcs format: image/encoded + image/class/label in 1..N.
    for shard in range(2):
        _write(tmp_path / f"train-0000{shard}-of-00002",
               [{"image/encoded": _bytes_feature(_jpeg(shard * 3 + i)), "image/class/label": _ints_feature([i + 1])}
                for i in range(3)])  # fmt: skip
    _write(tmp_path / "validation-00000-of-00001",
           [{"image/encoded": _bytes_feature(_jpeg(10 + i)), "image/class/label": _ints_feature([3 - i])}
            for i in range(3)])  # fmt: skip
    source = get_source(f"tfrecord:{tmp_path}", num_classes=3)
    assert source.split_sizes == {"train": 6, "validation": 3}
    images, labels = zip(*source.as_dataset("val").as_numpy_iterator())
    assert list(labels) == [2, 1, 0]
    assert images[0].shape == (20, 28, 3) and images[0].dtype == np.uint8
    _, one_hot = next(iter(build_dataset(source, "train", 16, 6, training=True, seed=0)))
    assert one_hot.shape == (6, 3) and sorted(np.argmax(one_hot, 1).tolist()) == [0, 0, 1, 1, 2, 2]


def test_imagenet21k_tfrecords_give_multi_hot_labels(tmp_path):
    # Official 21k format: `image` bytes and a variable-length `labels` list (0-based).
    label_lists = [[5], [0, 21842], [7, 7, 100]]
    _write(tmp_path / "imagenet21k-00000",
           [{"image": _bytes_feature(_jpeg(i)), "labels": _ints_feature(ls)} for i, ls in enumerate(label_lists)])
    source = get_source(f"tfrecord21k:{tmp_path}")
    assert source.multi_label and source.num_classes == IMAGENET21K_CLASSES
    normalized = next(iter(build_dataset(source, "imagenet21k", 16, 3, training=False)))[1].numpy()
    assert normalized.shape == (3, 21843)
    np.testing.assert_allclose(normalized.sum(1), 1.0, atol=1e-6)
    assert normalized[1, 0] == normalized[1, 21842] == 0.5 and normalized[2, 7] == normalized[2, 100] == 0.5
    binary = next(iter(build_dataset(source, "imagenet21k", 16, 3, training=False, label_format="multi_hot")))[1]
    assert binary.numpy().sum(1).tolist() == [1.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="multi-label"):
        build_dataset(source, "imagenet21k", 16, 3, training=False, label_format="one_hot")


def test_tfrecord_directory_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No TFRecord files"):
        TFRecordSource(str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Image folders.
# ------------------------------------------------------------------------------------------------


def _save(path, array, mode=None, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path, fmt)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.RandomState(0)

    def rgb(h=18, w=22):
        return rng.randint(0, 256, (h, w, 3)).astype(np.uint8)

    root = tmp_path / "flowers"
    _save(root / "daisy" / "a.jpg", rgb())
    _save(root / "daisy" / "b.PNG", rng.randint(0, 256, (16, 16)).astype(np.uint8))  # grayscale
    _save(root / "daisy" / "nested" / "c.bmp", rgb())
    _save(root / "rose" / "d.png", rng.randint(0, 256, (20, 12, 4)).astype(np.uint8), "RGBA")
    frames = [Image.fromarray(rgb(10, 10)) for _ in range(2)]
    frames[0].save(root / "rose" / "e.gif", save_all=True, append_images=frames[1:])
    _save(root / "tulip" / "f.jpeg", rgb())
    full = (root / "tulip" / "f.jpeg").read_bytes()
    (root / "tulip" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "tulip" / "notes.jpg").write_text("this is not an image\n")
    (root / "tulip" / "README.txt").write_text("ignored: not an image extension\n")
    return root


def test_image_folder_skips_and_counts_corrupt_files(image_folder):
    source = get_source(str(image_folder))
    assert isinstance(source, ImageFolderSource)
    assert source.class_names == ["daisy", "rose", "tulip"]
    assert source.num_skipped == 2
    assert sorted(os.path.basename(p) for p, _ in source.skipped_files) == ["notes.jpg", "truncated.jpg"]
    assert source.split_sizes == {"train": 6}
    examples = list(source.as_dataset("train").as_numpy_iterator())
    assert len(examples) == 6
    assert all(image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 for image, _ in examples)
    assert sorted(label for _, label in examples) == [0, 0, 0, 1, 1, 2]


def test_image_folder_header_only_scan_still_never_crashes(image_folder):
    # Header checks catch the text file; the truncated JPEG is dropped while reading (ignore_errors).
    source = ImageFolderSource(image_folder, validate="header")
    assert source.num_skipped == 1
    dataset = build_dataset(source, "train", 16, 2, training=False, label_format="sparse")
    assert sum(int(labels.shape[0]) for _, labels in dataset) == 6


def test_image_folder_training_pipeline(image_folder):
    dataset = build_dataset(f"folder:{image_folder}", "train", 16, 3, training=True, randaug_magnitude=10,
                            cutmix_alpha=1.0, seed=1)  # fmt: skip
    batches = list(dataset)
    assert len(batches) == 2 and all(b[0].shape == (3, 16, 16, 3) and b[1].shape == (3, 3) for b in batches)


def test_image_folder_with_split_folders_and_validation_split(tmp_path):
    rng = np.random.RandomState(1)
    for split, count in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                _save(tmp_path / "pets" / split / cls / f"{i}.png", rng.randint(0, 256, (8, 8, 3)).astype(np.uint8))
    source = ImageFolderSource(tmp_path / "pets")
    assert source.split_sizes == {"train": 8, "val": 4} and source.num_examples("validation") == 4
    flat = ImageFolderSource(tmp_path / "pets" / "train", validation_split=0.25)
    assert flat.split_sizes == {"train": 6, "validation": 2}


def test_image_folder_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderSource(tmp_path / "empty")
    _save(tmp_path / "one" / "only" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="only the class folder 'only'"):
        ImageFolderSource(tmp_path / "one")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "b").mkdir()
    (tmp_path / "bad" / "a" / "x.jpg").write_text("not an image")
    (tmp_path / "bad" / "b" / "y.jpg").write_text("not an image")  # (an empty class folder is refused first)
    with pytest.raises(ValueError, match="No readable images"):
        ImageFolderSource(tmp_path / "bad")
