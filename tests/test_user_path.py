"""A new user's path: commands with one-line usage errors, short trial runs, one stage numbering, logs.

The wheel (recipes as package data, console scripts) is tested in test_packaging.py, the notebooks
in test_notebooks.py, the README's samples in test_readme.py.
"""

import csv
import dataclasses
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import efficientnetv2_keras as ev2
from efficientnetv2_keras.hparams import ConfigError, load_config
from efficientnetv2_keras.training import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(name, *arguments, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    command = [sys.executable, "-m", f"efficientnetv2_keras.cli.{name}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=cwd or REPO)


def _our_lines(stderr):
    """stderr without TensorFlow's C++ start-up chatter."""
    return [line for line in stderr.splitlines() if ": error: " in line or "Traceback" in line]


# -- 2. usage errors: one line, exit status 2, --verbose for the traceback; nothing left in model_dir -----


def _run_cli(main, argv, capsys):
    """efficientnetv2_keras.cli.run(main) in this process: (exit status, stderr lines)."""
    from absl import flags

    from efficientnetv2_keras import cli

    flags.FLAGS.unparse_flags()
    old = sys.argv
    sys.argv = ["effnetv2-test", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(main)
    finally:
        sys.argv = old
        flags.FLAGS.unparse_flags()
    return exit_info.value.code, capsys.readouterr().err.splitlines()


def test_cli_errors_are_one_line_with_exit_status_2_and_verbose_reraises(capsys):
    from absl import app

    def bad_recipe(argv):
        load_config("digits_demo", ["train.epochz=2"])

    status, lines = _run_cli(bad_recipe, [], capsys)
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith("effnetv2-test: error: Unknown key 'train.epochz' (in override 'train.epochz=2'). "
                               "Did you mean 'train.epochs'?")
    assert lines[0].endswith("(--verbose shows the traceback)")
    with pytest.raises(ConfigError):  # --verbose: the exception and its traceback
        _run_cli(bad_recipe, ["--verbose"], capsys)

    def usage(argv):
        raise app.UsageError("Pass --model_dir=DIR.")

    assert _run_cli(usage, [], capsys) == (2, ["effnetv2-test: error: Pass --model_dir=DIR. (--help lists the flags)"])
    status, lines = _run_cli(usage, ["--no_such_flag"], capsys)
    assert status == 2 and lines[0].startswith("effnetv2-test: error: Unknown command line flag 'no_such_flag'")
    assert _run_cli(lambda argv: 0, [], capsys) == (0, [])

    def bug(argv):
        raise TypeError("a bug keeps its traceback")

    with pytest.raises(TypeError):
        _run_cli(bug, [], capsys)


def test_the_command_line_reports_a_mistyped_key_in_one_line(tmp_path):
    model_dir = tmp_path / "run"
    run = _tool("train", "--hparams=digits_demo", f"--model_dir={model_dir}", "--override=train.epochz=2")
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    (line,) = _our_lines(run.stderr)
    assert line.startswith("train: error: Unknown key 'train.epochz'") and "Did you mean 'train.epochs'?" in line
    assert not model_dir.exists()


def test_a_failed_start_writes_nothing_into_model_dir(tmp_path):
    """Too few epochs for the stages (the message names the fix), a strategy this machine lacks, eval of a
    missing run: model_dir stays as it was (no config.yaml, labels.txt or schedule files)."""
    import tensorflow as tf

    from efficientnetv2_keras.training.strategy import StrategyUnavailableError
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(load_config("digits_demo", ["train.epochs=2"]), str(model_dir), verbose=0)
    assert str(error.value) == (
        "train.epochs=2 is fewer epochs than progressive.num_stages=3, and every progressive stage needs at "
        "least one epoch. For a short run add --override=progressive.num_stages=2 (or progressive.enabled=false "
        "for no stages), or train for more epochs.")
    assert sorted(os.listdir(model_dir)) == ["notes.txt"]
    fresh = tmp_path / "fresh"
    if not tf.config.list_logical_devices("GPU"):
        with pytest.raises(StrategyUnavailableError, match="strategy 'gpus' was requested but TensorFlow sees no GPU"):
            train_and_evaluate(load_config("digits_demo", ["runtime.strategy=gpus"]), str(fresh), verbose=0)
        assert not fresh.exists()
    with pytest.raises(FileNotFoundError, match="No run directory"):
        train_and_evaluate(load_config("digits_demo"), str(fresh), mode="eval", verbose=0)
    assert not fresh.exists()


@pytest.mark.parametrize("script", ["bench_data.py", pytest.param("bench_export.py", marks=pytest.mark.slow)])
def test_benchmark_sections_honour_help(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", script), "--help"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert "--quick" in run.stdout and "--sections" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
    assert "images/s" not in run.stdout and "EfficientNetV2-B0, 1000 classes" not in run.stdout


# -- 3. short runs ---------------------------------------------------------------------------------------


def test_check_stages_suggests_the_override():
    config = load_config("digits_demo", ["train.epochs=2"])
    with pytest.raises(ConfigError, match=r"--override=progressive.num_stages=2 \(or progressive.enabled=false"):
        plan.check_stages(config, 2)
    plan.check_stages(config, 3)  # enough epochs
    plan.check_stages(load_config("digits_demo", ["train.epochs=2", "progressive.enabled=false"]), 2)


def test_checkpoint_plan_says_what_is_written_and_when():
    lines = plan.checkpoint_plan("runs/x", plan.validated_epochs(24, 8), "val_accuracy", "minival (144 examples)")
    assert lines[0].startswith("Checkpoints in runs/x: last.keras (+ last.json)")
    assert lines[1] == ("best.keras (+ best.json) when val_accuracy on minival (144 examples) improves, validated "
                        "at epochs 8, 16, 24.")
    assert "does not validate" in plan.checkpoint_plan("runs/x", [], None)[1]
    # The last epoch is always validated, so a validating run always selects a best.keras.
    assert plan.validated_epochs(10, 4) == [4, 8, 10] and plan.validated_epochs(2, 8) == [2]
    assert plan.checkpoint_plan("runs/x", plan.validated_epochs(2, 8), "val_accuracy")[1].endswith("validated at epoch 2.")


def test_the_plan_names_the_epochs_fit_validates_also_with_batch_scaling():
    from efficientnetv2_keras.training.recipe import resolve_recipe

    # 6 epochs of data at base batch 32, stages 32 -> 48 px: the 32 px stage trains 72-image batches, so fit runs
    # fewer epochs than train.epochs; validation every 2 epochs of data, and always after the last fit epoch.
    config = load_config("digits_demo", ["train.epochs=6", "progressive.num_stages=2", "progressive.image_size=[32,48]",
                                         "progressive.batch_scaling=true", "eval.validation_freq=2"])
    recipe = resolve_recipe(config)
    assert recipe.fit_epochs < 6
    validated = recipe.validation_freq
    assert isinstance(validated, list) and validated[-1] == recipe.fit_epochs
    assert all(1 <= epoch <= recipe.fit_epochs for epoch in validated) and validated == sorted(set(validated))
    line = plan.checkpoint_plan("runs/x", validated, recipe.monitor)[1]
    assert line.endswith(f"validated at epoch{'s' if len(validated) > 1 else ''} {', '.join(map(str, validated))}.")
    # Without batch scaling: every eval.validation_freq epochs and the last one.
    recipe = resolve_recipe(load_config("digits_demo", ["train.epochs=7", "eval.validation_freq=3"]))
    assert recipe.validation_freq == [3, 6, 7]


# -- 4. numbering and logs -------------------------------------------------------------------------------


def test_schedule_plot_counts_epochs_from_1_and_draws_the_whole_last_stage():
    from efficientnetv2_keras.progressive import progressive_schedule

    schedule = progressive_schedule("s", "paper", 350, 4)
    edges, values = schedule.series("image_size")
    assert edges[0] == 0.5 and edges[-1] == 350.5 and len(values) == 350  # epoch e spans [e - 0.5, e + 0.5]
    last = schedule.stages[-1]
    assert list(values).count(last.image_size) == last.end - last.start == 88  # epochs 263-350


@pytest.mark.slow  # 40 s; 1-based epochs and stages in log.csv are also checked by the fast tests/test_resume.py
def test_log_csv_has_1_based_epochs_and_stages_and_no_meaningless_validation_columns(tiny_spec, tmp_path):
    from efficientnetv2_keras.data import ArraySource, build_dataset
    from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
    from efficientnetv2_keras.training.optimizers import LogL2Loss
    from efficientnetv2_keras.training.callbacks import CSVLogger

    rng = np.random.default_rng(0)
    source = ArraySource({"train": (rng.integers(0, 255, (32, 40, 40, 3), dtype=np.uint8), np.arange(32) % 3)},
                         num_classes=3)
    schedule = progressive_schedule(tiny_spec, "paper", total_epochs=3, num_stages=2, image_size=(32, 40))
    progressive = ProgressiveLearning(
        schedule, lambda stage: build_dataset(source, "train", stage.image_size, 16, training=True), verbose=0)
    validation = build_dataset(source, "train", 32, 16, training=False, eval_crop_padding=0)
    keras.utils.set_random_seed(0)
    model = ev2.build_model(tiny_spec, classes=3)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    with_validation, without = str(tmp_path / "val.csv"), str(tmp_path / "none.csv")
    model.fit(progressive.dataset, epochs=3, validation_data=validation, validation_freq=2, verbose=0,
              callbacks=[progressive, LogL2Loss(), CSVLogger(with_validation, validation=True),
                         CSVLogger(without, validation=False)])
    with open(with_validation) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert [row["stage"] for row in rows] == ["1.0", "2.0", "2.0"] or [row["stage"] for row in rows] == ["1", "2", "2"]
    columns = set(rows[0])
    assert {"val_loss", "val_accuracy", "image_size", "loss", "accuracy"} <= columns
    assert not {"val_stage", "val_image_size", "val_l2_loss", "val_dropout_rate"} & columns
    assert rows[0]["val_accuracy"] == "NA" and rows[1]["val_accuracy"] not in ("", "NA")
    with open(without) as f:
        assert not [name for name in next(csv.reader(f)) if name.startswith("val_")]


def test_a_file_of_another_variant_is_refused_before_keras_loads_it(tiny_spec, tmp_path):
    from efficientnetv2_keras.models import WeightsMismatchError
    from efficientnetv2_keras.models.family import StageSpec

    ev2.build_model(tiny_spec, classes=5).save_weights(tmp_path / "tiny.weights.h5")
    stages = tiny_spec.stages[:-1] + (dataclasses.replace(tiny_spec.stages[-1], repeats=3),)
    other_spec = dataclasses.replace(tiny_spec, name="efficientnetv2-tiny3", stages=stages)
    other = ev2.build_model(other_spec, classes=5)
    assert isinstance(stages[-1], StageSpec)
    before = other.get_weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsMismatchError, match="the file holds .* arrays with .* values"):
            ev2.load_weights(other, str(tmp_path / "tiny.weights.h5"), spec=other_spec)
    assert not [w for w in caught if "Skipping" in str(w.message)]
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_weights()))
