"""The training system end to end: tools/train.py on the bundled digits, then evaluation."""

import json
import os
import subprocess
import sys

import pytest

from efficientnetv2_keras.runs import backup_epochs as resume_backups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # 98 s; tools/train.py runs in the fast suite through tests/test_resume.py (train_runner)
def test_train_py_traineval_runs_one_tiny_epoch_on_digits(tmp_path):
    model_dir = tmp_path / "run"
    overrides = ",".join(
        [
            "train.epochs=2",
            "train.steps_per_epoch=3",
            "progressive.num_stages=2",
            "progressive.image_size=[32,40]",
            "data.source_options.image_size=40",
            "data.eval_size=32",
            "eval.batch_size=180",
            "eval.validation_freq=2",  # the last epoch only: best.keras = last.keras, evaluated once
        ]
    )
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--hparams=digits_demo",
         f"--model_dir={model_dir}", f"--override={overrides}", "--mode=traineval"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for name in ("config.yaml", "labels.txt", "schedule.txt", "schedule.png", "last.keras", "best.keras",
                 "last.json", "best.json", "log.csv", "training_curves.png", "results.json"):
        assert (model_dir / name).exists(), name
    assert resume_backups(model_dir / "backup") == [2, 1]  # kept after the run (a rerun reports it finished)
    results = json.loads((model_dir / "results.json").read_text())
    assert [row["image_size"] for row in results["stages"]] == [32, 40]
    # Selection on a minival carved from the training digits; the test split once, after training, for
    # the final model and for best.keras, each labelled.
    assert results["minival"] == {"split": "minival", "carved_from": "train", "size": 0.1, "examples": 144,
                                  "train_examples": 1293}
    final, best = results["evaluations"]
    assert (final["role"], best["role"], final["eval_split"], best["eval_split"]) == ("final", "best", "test", "test")
    assert final["checkpoint"] == "last.keras: EMA weights after epoch 2"
    assert best["checkpoint"].startswith("best.keras: EMA weights after epoch 2, best val_accuracy ")
    assert best["checkpoint"].endswith(" on minival (144 examples carved from 'train') (the final weights)")
    assert best["accuracy"] == final["accuracy"] and 0.0 <= final["accuracy"] <= 1.0 and final["l2_loss"] > 0
    assert "minival: 144 examples carved from 'train'" in result.stdout
    assert "test split 'test' at 32 px:" in result.stdout
    assert "| final | last.keras: EMA weights after epoch 2 |" in result.stdout
    assert "| best | best.keras: EMA weights after epoch 2, best val_accuracy" in result.stdout
    log = (model_dir / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    assert {"image_size", "val_accuracy", "loss", "l2_loss"} <= set(header) and len(log) == 3

    # Checkpoints hold the model alone (no optimizer or compile config to restore).
    import keras

    assert not keras.models.load_model(str(model_dir / "best.keras")).compiled

    from efficientnetv2_keras.data import get_source
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.evaluation import load_for_evaluation
    from efficientnetv2_keras.training.recipe import eval_dataset, minival_split
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    # Eval mode: the saved checkpoints give the test numbers the run printed (both are the EMA weights),
    # with the same labels.
    config = load_config(str(model_dir / "config.yaml"))
    again = train_and_evaluate(config, str(model_dir), mode="eval", verbose=0)["evaluations"]
    assert [(e["role"], e["checkpoint"]) for e in again] == [(e["role"], e["checkpoint"]) for e in (final, best)]
    assert again[0]["accuracy"] == pytest.approx(final["accuracy"], abs=1e-6)
    # The validation metrics of the run were the minival's, not the test split's.
    model = load_for_evaluation(config, str(model_dir / "last.keras"))
    source = get_source(config.data.source, **config.data.source_options)
    _, minival, _ = minival_split(config, source)
    on_minival = model.evaluate(eval_dataset(config, source, minival), verbose=0, return_dict=True)
    last_epoch = dict(zip(header, log[-1].split(",")))
    assert float(last_epoch["val_accuracy"]) == pytest.approx(on_minival["accuracy"], abs=1e-6)
    assert float(last_epoch["val_loss"]) == pytest.approx(on_minival["loss"], rel=1e-5)

    # tools/predict.py on image files gives the model's own top-1 for the same (decoded) images.
    import numpy as np
    import tensorflow as tf

    from efficientnetv2_keras.data import DigitsSource, build_dataset

    images, _ = next(iter(build_dataset(DigitsSource(image_size=32), "test", 32, 3, training=False, eval_crop_padding=0)))
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"digit{i}.png"))
        tf.io.write_file(paths[-1], tf.io.encode_png(tf.cast(tf.round(image), tf.uint8)))
    expected = np.argmax(model.predict(images, verbose=0), axis=-1)  # predict.py picks best.keras: the same weights
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "predict.py"), f"--model_dir={model_dir}", "--top_k=2", *paths],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [str(label) for label in expected]


def test_bad_mode_and_missing_checkpoint_errors(tmp_path):
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import load_for_evaluation, train_and_evaluate

    config = load_config("digits_demo")
    with pytest.raises(ValueError, match="mode must be one of"):
        train_and_evaluate(config, str(tmp_path), mode="fit")
    with pytest.raises(FileNotFoundError, match="train first"):
        load_for_evaluation(config, str(tmp_path / "best.keras"))


def test_batch_scaled_progressive_run_trains_every_stage_at_its_batch_and_reports_costs(tmp_path, tiny_spec):
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.models.family import save_model_spec
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    table = save_model_spec(tiny_spec, tmp_path / "tiny.yaml")  # the trainer's path, not B0's cost
    config = load_config("digits_demo", overrides=[
        "train.epochs=4", "train.steps_per_epoch=2", "progressive.num_stages=2", "progressive.image_size=[32,48]",
        "progressive.batch_scaling=true", "eval.batch_size=180", "eval.validation_freq=2", f"model.name={table}",
    ])
    results = train_and_evaluate(config, str(tmp_path / "run"), mode="traineval", verbose=0)
    # Stage 0 (32 px) trains at batch 32 * (48/32)^2 = 72 with LR x sqrt(2.25) = 1.5 (Adam: the
    # square-root rule): its 2 epochs of data in 1 epoch.
    schedule = (tmp_path / "run" / "schedule.txt").read_text()
    assert "|    72 | 1.50 |" in schedule and "|    32 | 1.00 |" in schedule and "Malladi" in schedule
    assert results["epochs"] == 3
    assert [(row["image_size"], row["epochs"]) for row in results["stages"]] == [(32, 1), (48, 2)]
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    assert [row.split(",")[header.index("batch_size")] for row in log[1:]] == ["72.0", "32.0", "32.0"]
    # Validation where the data seen crosses 2 epochs' worth: after epoch 1 (2.25) and epoch 3 (4.25).
    # log.csv is the whole run's (training/run_log.RunLog): an epoch without validation has an empty cell.
    assert [row.split(",")[header.index("val_accuracy")] not in ("", "NA") for row in log[1:]] == [True, False, True]
    costs = results["costs"]
    assert set(costs) >= {"first_step", "train", "validation", "epoch_end", "fit", "test_evaluation", "traces"}
    assert costs["traces"] == {"iterator": 1, "step": 1}  # one trace for every stage, batch and size
    assert costs["validation"]["wall"] > 0 and costs["epoch_end"]["wall"] > 0
    assert len(results["epoch_times"]) == 3
