"""A checkpoint from a training run is exported and predicted with the run's image size and crop.

A run trained at 48 px with whole-image resizing (`data.eval_crop_padding: 0`, the digits demo)
exported at its variant's 224 px "passed" parity while serving the wrong input. `runs.eval_preprocessing`
reads the run's config.yaml next to the checkpoint; explicit values still win.

The run directory here holds the tiny test model (any size, 3 classes) beside the digits demo's
config.yaml (B0 recipe, eval size 48, crop padding 0): without the config the tools cannot know a
size for it at all, so each test fails loudly when the config is not read.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import efficientnetv2_keras as ev2
from efficientnetv2_keras import hparams, runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import TINY_SPEC

    folder = tmp_path_factory.mktemp("run")
    hparams.to_yaml(hparams.load_config("digits_demo"), folder / runs.CONFIG_FILE)
    (folder / runs.LABELS_FILE).write_text("zero\none\ntwo\n")
    ev2.build_model(TINY_SPEC, classes=3).save(folder / "best.keras")
    return folder


def test_eval_preprocessing_reads_the_run_config(run_dir, tmp_path):
    checkpoint = run_dir / "best.keras"
    found = runs.eval_preprocessing(checkpoint)
    assert (found.image_size, found.crop_padding) == (48, 0)
    assert found.config_path == str(run_dir / "config.yaml") and "from" in found.describe()
    assert runs.eval_preprocessing(run_dir) == found  # the directory itself works too
    explicit = runs.eval_preprocessing(checkpoint, image_size=64, crop_padding=32)
    assert (explicit.image_size, explicit.crop_padding, explicit.config_path) == (64, 32, None)
    mixed = runs.eval_preprocessing(checkpoint, crop_padding=32)
    assert (mixed.image_size, mixed.crop_padding) == (48, 32)
    lone = tmp_path / "model.keras"
    lone.write_bytes(b"")
    assert runs.eval_preprocessing(lone) == runs.EvalPreprocessing(None, None)
    assert runs.eval_preprocessing(None, 96) == runs.EvalPreprocessing(96, None)


def test_unreadable_run_config_names_the_flags(tmp_path):
    (tmp_path / "config.yaml").write_text("model:\n  nmae: efficientnetv2-b0\n")
    with pytest.raises(hparams.ConfigError, match="--image_size, --crop_padding"):
        runs.eval_preprocessing(tmp_path / "best.keras")
    assert runs.eval_preprocessing(tmp_path / "best.keras", 48, 0).image_size == 48  # not read


def _export(run_dir, output, *flags):
    command = [
        sys.executable, os.path.join(REPO, "tools", "export.py"), f"--model={run_dir / 'best.keras'}",
        "--format=tflite", f"--output={output}", "--num_parity_samples=8", *flags,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    from efficientnetv2_keras.export import make_interpreter

    shape = make_interpreter(model_path=str(output)).get_input_details()[0]["shape"]
    return run.stdout, tuple(shape[1:3])


def test_export_tool_takes_size_and_crop_from_the_run(run_dir, tmp_path):
    stdout, shape = _export(run_dir, tmp_path / "from_run.tflite")
    assert shape == (48, 48)
    assert "48x48 px" in stdout and "crop padding 0" in stdout and "config.yaml" in stdout

    stdout, shape = _export(run_dir, tmp_path / "explicit.tflite", "--image_size=40", "--crop_padding=32")
    assert shape == (40, 40) and "crop padding 32" in stdout and "config.yaml" not in stdout


def test_predict_tool_reads_the_run_next_to_a_checkpoint(run_dir, tmp_path):
    import tensorflow as tf

    image = tmp_path / "digit.png"
    image.write_bytes(tf.io.encode_png(np.full((20, 30, 3), 200, np.uint8)).numpy())
    command = [sys.executable, os.path.join(REPO, "tools", "predict.py"), f"--model={run_dir / 'best.keras'}",
               "--top_k=2", str(image)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    line = run.stdout.strip().splitlines()[-1]
    assert line.startswith(str(image)) and any(name in line for name in ("zero", "one", "two")), run.stdout


def test_run_dir_owns_the_folder_layout(tmp_path):
    run = runs.RunDir(tmp_path)
    assert (run.config, run.labels, run.log, run.results) == tuple(
        str(tmp_path / name) for name in ("config.yaml", "labels.txt", "log.csv", "results.json"))
    assert run.checkpoint() == run.best and not run.has_checkpoint()  # the path the "train first" error names
    (tmp_path / "last.keras").write_bytes(b"")
    assert run.checkpoint() == run.last and run.has_checkpoint()
    (tmp_path / "config.yaml").write_text("")
    (tmp_path / "backup").mkdir()
    for epoch in (1, 2):
        open(run.backup_file(epoch), "wb").close()
    assert run.backup_epochs() == [2, 1] and run.backup_file(2).endswith("backup/epoch-0002.weights.h5")
    assert run.finished(2) is None  # no results.json yet: interrupted after its last backup
    (tmp_path / "results.json").write_text('{"epochs": 2}')
    assert run.finished(2) == {"epochs": 2} and run.finished(3) is None
    for name in ("best.keras", "best.json"):
        (tmp_path / name).write_bytes(b"")
    assert run.remove_selection() == ["best.keras", "best.json"] and run.checkpoint() == run.last
    run.clear()  # --overwrite: everything a training run wrote, not the recipe
    assert os.listdir(tmp_path) == ["config.yaml"]
