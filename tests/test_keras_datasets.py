"""keras.datasets as data sources ("keras:fashion_mnist", ...), offline.

No test needs the Debian package or the network: each writes a tiny Fashion-MNIST of its own (the real
gzip'd idx files, 28x28) into a temporary Keras home and reads it through the source, the pipeline and
tools/train.py. Keras reads KERAS_HOME once, when it is imported, so the `keras_home` fixture sets the
variable (for subprocesses) and Keras' imported value (for this process).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_fashion_mnist

from efficientnetv2_keras import data
from efficientnetv2_keras.data import keras_datasets
from efficientnetv2_keras.hparams import load_config
from efficientnetv2_keras.training import recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "tests", "train_runner.py")
TRAIN_EXAMPLES, TEST_EXAMPLES = 40, 20


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras home: KERAS_HOME for subprocesses, and the value Keras read at import here."""
    from keras.src.backend import config

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    return home


@pytest.fixture
def offline(monkeypatch):
    """No name resolves, as on this machine without internet: a download fails at once, nothing leaves."""

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)


def test_the_cache_folder_is_the_keras_home_keras_read_at_import(keras_home):
    assert keras_datasets.keras_cache_folder() == os.path.join(str(keras_home), "datasets")
    code = ("import os, keras\n"
            "os.environ['KERAS_HOME'] = '/changed/after/import'\n"
            "from efficientnetv2_keras.data.keras_datasets import keras_cache_folder\n"
            "print(keras_cache_folder())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, KERAS_HOME=str(keras_home / "at_import"), TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == os.path.join(str(keras_home / "at_import"), "datasets")


def test_fashion_mnist_reads_the_idx_files_in_the_keras_cache(keras_home):
    arrays = tiny_fashion_mnist(keras_home / "datasets" / "fashion-mnist", TRAIN_EXAMPLES, TEST_EXAMPLES)
    source = data.get_source("keras:fashion_mnist")
    assert isinstance(source, data.ArraySource) and source.name == "keras:fashion_mnist"
    assert source.num_classes == 10 and source.split_sizes == {"train": TRAIN_EXAMPLES, "test": TEST_EXAMPLES}
    assert source.class_names[:3] == ["T-shirt/top", "Trouser", "Pullover"] and source.class_names[9] == "Ankle boot"
    images, labels = zip(*source.as_dataset("test").as_numpy_iterator())
    assert images[0].shape == (28, 28, 3) and images[0].dtype == np.uint8
    gray, expected_labels = arrays["t10k"]
    np.testing.assert_array_equal(np.stack(images), np.repeat(gray[..., None], 3, axis=-1))  # gray -> RGB
    np.testing.assert_array_equal(labels, expected_labels)
    assert source.num_examples("validation") == TEST_EXAMPLES  # the usual alias of the test split


def test_the_arrays_are_loaded_once_per_process_and_folder(keras_home, monkeypatch):
    import keras

    tiny_fashion_mnist(keras_home / "datasets" / "fashion-mnist", TRAIN_EXAMPLES, TEST_EXAMPLES)
    calls = []
    load_data = keras.datasets.fashion_mnist.load_data
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", lambda: calls.append(1) or load_data())
    first, second = data.get_source("keras:fashion_mnist"), data.get_source("keras:fashion_mnist")
    assert len(calls) == 1
    assert np.shares_memory(first._split_arrays("train")[0], second._split_arrays("train")[0])
    # Another Keras home is another dataset.
    other = keras_home / "other"
    tiny_fashion_mnist(other / "datasets" / "fashion-mnist", TRAIN_EXAMPLES, TEST_EXAMPLES, seed=1)
    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(other))
    third = data.get_source("keras:fashion_mnist")
    assert len(calls) == 2
    assert not np.array_equal(third._split_arrays("train")[0], first._split_arrays("train")[0])


def test_the_pipeline_and_a_minival_read_the_source(keras_home):
    tiny_fashion_mnist(keras_home / "datasets" / "fashion-mnist", TRAIN_EXAMPLES, TEST_EXAMPLES)
    train = data.build_dataset("keras:fashion_mnist", "train", 32, 8, training=True, randaug_magnitude=3,
                               randaug_ops=["Rotate", "TranslateX"], seed=0)
    images, labels = next(iter(train))
    assert images.shape == (8, 32, 32, 3) and labels.shape == (8, 10)
    source = data.get_source("keras:fashion_mnist")
    rest, held = source.hold_out("train", 10)
    assert (source.num_examples(rest), source.num_examples(held)) == (TRAIN_EXAMPLES - 10, 10)
    evaluation = data.build_dataset(source, "test", 32, 10, training=False, eval_crop_padding=0)
    assert sum(int(batch[0].shape[0]) for batch in evaluation) == TEST_EXAMPLES


def test_a_missing_dataset_offline_is_one_clear_error(keras_home, offline):
    with pytest.raises(FileNotFoundError) as raised:
        data.get_source("keras:fashion_mnist")
    message = str(raised.value)
    folder = os.path.join(str(keras_home), "datasets")
    assert "keras.datasets.fashion_mnist" in message and folder in message
    assert "train-images-idx3-ubyte.gz" in message  # what is missing
    assert "dataset-fashion-mnist" in message and "make data" in message  # the fix here
    assert "KERAS_HOME" in message and "Name or service not known" in message  # why no download


def test_no_download_is_tried_when_the_origin_does_not_answer(keras_home, monkeypatch):
    # A firewall that drops packets: Keras' urlretrieve has no timeout and would hang; the check gives up.
    import urllib.request

    import keras

    def silent(request, timeout=None):
        assert timeout == keras_datasets.DOWNLOAD_CHECK_SECONDS
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", silent)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", lambda: pytest.fail("load_data was called"))
    with pytest.raises(FileNotFoundError, match="could not be downloaded \\(TimeoutError: timed out\\)"):
        data.get_source("keras:fashion_mnist")


def test_a_download_that_fails_after_all_is_the_same_clear_error(keras_home, offline, monkeypatch):
    # The origin answered the check, then the download itself failed (inside keras.utils.get_file).
    monkeypatch.setattr(keras_datasets, "_download_problem", lambda origin: None)
    with pytest.raises(FileNotFoundError) as raised:
        data.get_source("keras:fashion_mnist")
    assert "dataset-fashion-mnist" in str(raised.value) and "URL fetch failure" in str(raised.value)
    assert not os.listdir(keras_home / "datasets" / "fashion-mnist")  # no partial file left behind


def test_a_dataset_without_a_debian_package_names_what_to_copy_where(keras_home, offline):
    with pytest.raises(FileNotFoundError) as raised:
        data.get_source("keras:cifar10")
    message = str(raised.value)
    assert "cifar-10-python.tar.gz" in message  # the file to fetch elsewhere
    assert os.path.join(str(keras_home), "datasets", "cifar-10-batches-py-target_archive") in message
    assert "apt-get" not in message  # Debian has no package for it


def test_unknown_names_and_options_are_refused():
    with pytest.raises(ValueError, match="keras:fashion_mnist.*keras:mnist.*keras:cifar10.*keras:cifar100"):
        data.get_source("keras:imagenet")
    with pytest.raises(ValueError, match="takes no option 'image_size'"):
        data.get_source("keras:fashion_mnist", image_size=48)


def test_class_counts_and_names_are_known_without_loading(monkeypatch):
    monkeypatch.setattr(keras_datasets, "load_keras_dataset", None)  # any load would fail
    counts = {name: recipe.resolve_num_classes(load_config("digits_demo", [f"data.source=keras:{name}"]))
              for name in ("fashion_mnist", "mnist", "cifar10", "cifar100")}
    assert counts == {"fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
    names = {name: spec.class_names for name, spec in keras_datasets.KERAS_DATASETS.items()}
    assert names["mnist"] == tuple("0123456789")
    assert names["cifar10"][:2] == ("airplane", "automobile") and names["cifar100"][-1] == "worm"
    assert list(names["cifar100"]) == sorted(names["cifar100"]) and len(set(names["cifar100"])) == 100


def test_the_fashion_mnist_recipe(keras_home):
    config = load_config("fashion_mnist_b0")
    assert (config.model.name, config.model.weights, config.data.source) == (
        "efficientnetv2-b0", None, "keras:fashion_mnist")
    assert config.progressive.enabled and config.progressive.num_stages >= 2
    sizes = config.progressive.image_size
    assert sizes[0] < sizes[1] == config.data.eval_size
    assert (config.data.minival, config.data.eval_split) == (5000, "test")


def test_tools_train_runs_the_recipe_on_a_tiny_fashion_mnist(keras_home, tmp_path):
    tiny_fashion_mnist(keras_home / "datasets" / "fashion-mnist", TRAIN_EXAMPLES, TEST_EXAMPLES)
    overrides = ",".join([
        "train.epochs=2", "train.steps_per_epoch=1", "train.batch_size=8", "progressive.num_stages=2",
        "progressive.image_size=[32,40]", "data.eval_size=40", "data.minival=10", "eval.batch_size=10",
        "eval.validation_freq=1",
    ])
    model_dir = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, RUNNER, "--hparams=hparams/fashion_mnist_b0.yaml", f"--model_dir={model_dir}",
         f"--override={overrides}", "--mode=traineval"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # KERAS_HOME (the fixture's) is read when the subprocess imports Keras
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    labels = (model_dir / "labels.txt").read_text().splitlines()
    assert labels[0] == "T-shirt/top" and len(labels) == 10
    results = json.loads((model_dir / "results.json").read_text())
    assert [(stage["stage"], stage["image_size"]) for stage in results["stages"]] == [(1, 32), (2, 40)]
    assert results["minival"]["examples"] == 10
