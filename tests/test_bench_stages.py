"""The per-stage cost benchmark (benchmarks/stages.py) on the tiny table: a row per stage, the epoch
column from a finished run, and the ops of the traced step by what made them."""

from types import SimpleNamespace

import pytest

OVERRIDES = ["train.epochs=2", "train.steps_per_epoch=2", "progressive.num_stages=2", "progressive.image_size=[32,40]",
             "data.source_options.image_size=40", "data.eval_size=32", "eval.batch_size=180"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from conftest import TINY_SPEC

    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.models.family import save_model_spec
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    folder = tmp_path_factory.mktemp("stages")
    table = save_model_spec(TINY_SPEC, folder / "tiny.yaml")
    overrides = OVERRIDES + [f"model.name={table}"]
    results = train_and_evaluate(load_config("digits_demo", overrides), str(folder / "run"), verbose=0)
    return overrides, folder / "run", results


def test_the_run_records_each_epochs_steps_validation_and_epoch_end(tiny_run):
    _, _, results = tiny_run
    epochs = results["epoch_times"]
    assert [entry["epoch"] for entry in epochs] == [0, 1]
    for entry in epochs:
        assert entry["step_cpu"] > 0 and entry["epoch_end_cpu"] > 0 and entry["validation_cpu"] >= 0


def test_a_row_per_stage_with_step_pipeline_and_epoch_costs(tiny_run):
    from efficientnetv2_keras.benchmarks import stages

    overrides, run_dir, _ = tiny_run
    flags = SimpleNamespace(quick=True, stages_recipe="digits_demo", stages_overrides=overrides, stages_batch=None,
                            stages_steps=1, stages_rounds=1, stages_run=str(run_dir), stages_pipeline=True)
    report = stages.run(flags).splitlines()
    rows = [line for line in report if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert [row.split(" | ")[1:3] for row in rows] == [["32", "32"], ["40", "32"]]
    assert all(" - " not in row for row in rows)  # step, pipeline and epoch columns all measured
    assert "(1 epochs," in rows[0] and "(1 epochs," in rows[1]
    assert any(line.startswith("The run's fit:") for line in report)
    ops = next(line for line in report if line.startswith("Ops in the traced train step"))
    assert "BatchNormalization" in ops and "optimizer (update, EMA)" in ops
