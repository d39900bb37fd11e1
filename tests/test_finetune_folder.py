"""Finetuning on your own image folder from the command line (hparams/finetune_folder.yaml):

    effnetv2-train --hparams=finetune_folder --override=data.source=folder:/path/to/images --model_dir=runs/mine

Tested on generated folders of tiny images; nothing is downloaded (the end-to-end run trains the tiny
model table from scratch, model.init_checkpoint=null; the failed download is a monkeypatched urllib).
"""

import json
import os
import socket
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
from PIL import Image

from efficientnetv2_keras.hparams import ConfigError, load_config
from efficientnetv2_keras.training.recipe import resolve_recipe, training_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("cat", "dog", "owl")


def image_folder(root, per_class=10, splits=None):
    """root/<class>/*.png, or with `splits` root/<split>/<class>/*.png: tiny random images."""
    rng = np.random.default_rng(0)
    for split in splits or [None]:
        for name in CLASSES:
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return root


def folder_recipe(root, *overrides):
    return load_config("finetune_folder", [f"data.source=folder:{root}", *overrides])


def test_the_test_split_is_the_folder_s_test_folder_when_there_is_one(tmp_path):
    with_test = resolve_recipe(folder_recipe(image_folder(tmp_path / "a", splits=["train", "test"]),
                                             "train.batch_size=8"))
    assert with_test.config.data.eval_split == "test" and with_test.no_test_split is None
    assert with_test.minival_info["carved_from"] == "train" and with_test.num_classes == 3
    without = resolve_recipe(folder_recipe(image_folder(tmp_path / "b"), "train.batch_size=8"))
    assert without.config.data.eval_split is None
    assert without.no_test_split == f"folder:{tmp_path / 'b'} has no 'test' split; its splits: ['train']"
    # A recipe that needs its test split still stops, naming the override.
    with pytest.raises(ConfigError, match=r"To fix it, set data.eval_split to one of \['train'\], or "
                                          r"data.eval_split=null to train without a test split"):
        resolve_recipe(folder_recipe(tmp_path / "b", "data.eval_split_optional=false"))


def test_the_folder_recipe_is_the_released_finetuning_recipe_scaled_to_a_small_folder():
    config = load_config("finetune_folder")
    train = config.train
    assert (train.optimizer, train.lr_schedule, train.ema_decay, config.model.skip_head) == ("rmsprop", "constant",
                                                                                            0.9996, True)
    assert config.model.init_checkpoint == "imagenet" and not config.progressive.enabled
    # 300 images (270 after the minival): hundreds of steps, not the released 10,000.
    steps_per_epoch, epochs, total = training_steps(config, 270)
    assert 300 <= total <= 1000, (steps_per_epoch, epochs, total)
    # A large folder trains at least train.epochs epochs.
    assert training_steps(config, 30_000)[1] == train.epochs
    with pytest.raises(ConfigError, match=r"data.source=folder:/path/to/images"):  # the folder left out
        resolve_recipe(config)


def test_a_split_the_folder_lacks_names_the_override_that_fixes_it(tmp_path):
    """The flowers recipe on a folder: its 'train+validation' training split."""
    root = image_folder(tmp_path / "images")
    config = load_config("finetune_flowers", [f"data.source=folder:{root}"])
    with pytest.raises(ConfigError) as error:
        resolve_recipe(config)
    assert str(error.value) == (f"Unknown split 'train+validation' for folder:{root}; available splits: ['train']. "
                                "To fix it, set data.train_split=train (the data has no 'validation' split).")


def test_evaluating_without_a_test_split_says_so(tmp_path, tiny_spec):
    from efficientnetv2_keras.models import build_model
    from efficientnetv2_keras.training.evaluation import evaluate_model

    root = image_folder(tmp_path / "images")
    model = build_model(tiny_spec, classes=3)
    with pytest.raises(ValueError, match=r"Nothing to evaluate: no test split \(folder:.* has no 'test' split; its "
                                         r"splits: \['train'\]\). Name one with data.eval_split=SPLIT."):
        evaluate_model(model, folder_recipe(root))
    with pytest.raises(ValueError, match=r"no test split \(data.eval_split is null\)"):
        evaluate_model(model, folder_recipe(root, "data.eval_split=null"))


def test_a_failed_weights_download_is_one_line_naming_the_url_the_cache_file_and_the_alternatives(
        tmp_path, monkeypatch, capsys):
    """Offline (urllib's name resolution fails, as without a network or behind a proxy): one line, exit 2."""
    import keras
    from absl import flags
    from keras.src.applications import efficientnet_v2
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    from efficientnetv2_keras import cli
    from efficientnetv2_keras.training.recipe import build_model_from_config

    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))  # nothing cached there

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    config = load_config("finetune_imagenet", ["model.name=efficientnetv2-b0", "model.init_checkpoint=imagenet"])
    flags.FLAGS.unparse_flags()
    monkeypatch.setattr(sys, "argv", ["effnetv2-train"])
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda argv: build_model_from_config(config, num_classes=3))
    flags.FLAGS.unparse_flags()
    keras.backend.clear_session()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (
        "effnetv2-train: error: Could not download the ImageNet weights of efficientnetv2-b0 from "
        f"{efficientnet_v2.BASE_WEIGHTS_PATH}efficientnetv2-b0.h5 ([Errno -3] Temporary failure in name resolution). Keras looks "
        f"for that file in {home}/models/efficientnetv2-b0.h5 ($KERAS_HOME/models when KERAS_HOME is set) before "
        "downloading it: copy it there (behind a proxy, set https_proxy), set model.init_checkpoint to a local "
        "weights file (.weights.h5, .keras or a keras.applications .h5), or model.init_checkpoint=null to train from "
        "scratch. (--verbose shows the traceback)")


def test_the_readme_command_trains_a_folder_without_a_test_split(tmp_path):
    """The README's command (plus: the tiny model table from scratch, 32 px, a few steps): it trains, validates
    on the minival, and says that no test split was evaluated."""
    root = image_folder(tmp_path / "images", per_class=12)
    model_dir = tmp_path / "runs" / "mine"
    short = "model.init_checkpoint=null,data.eval_size=32,train.batch_size=8,train.epochs=1,train.min_steps=0"
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "train_runner.py"), "--hparams=finetune_folder",
         f"--override=data.source=folder:{root}", f"--override={short}", f"--model_dir={model_dir}"],
        capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "there is no test split" in run.stdout
    note = (f"No test split (folder:{root} has no 'test' split; its splits: ['train']): the run trains and validates "
            "on the minival only")
    assert note in run.stdout and "test split '" not in run.stdout
    results = json.loads((model_dir / "results.json").read_text())
    assert "evaluations" not in results and any(n.startswith(note) for n in results["notes"])
    assert results["minival"]["carved_from"] == "train" and (model_dir / "last.keras").exists()
