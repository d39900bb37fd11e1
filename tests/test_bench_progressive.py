"""The progressive benchmark's three runs (benchmarks/progressive.py): what each one overrides."""

from efficientnetv2_keras.benchmarks.progressive import run_labels, run_overrides
from efficientnetv2_keras.hparams import load_config


def test_the_fixed_run_is_the_last_stage_and_the_batch_run_names_its_lr_rule():
    config = load_config("digits_demo", ["progressive.image_size=[32,64]"])
    runs = run_overrides(config)
    # The paper's baseline (Table 12): the final size and regularization throughout.
    assert runs["fixed"] == ["progressive.enabled=false", "data.train_size=64", "data.randaug_magnitude=1.5",
                             "data.mixup_alpha=0.0", "data.cutmix_alpha=0.0", "model.dropout_rate=0.2"]
    assert runs["progressive"] == [] and runs["batch"] == ["progressive.batch_scaling=true"]
    labels = run_labels(config)
    assert labels["fixed"] == "fixed 64 px" and labels["progressive"] == "progressive 32->64 px"
    assert labels["batch"] == "progressive + batch scaling (LR sqrt)"  # Adam: the square-root rule
    sgd = load_config("digits_demo", ["train.optimizer=sgd"])
    assert run_labels(sgd)["batch"] == "progressive + batch scaling (LR linear)"


def test_the_report_names_the_recipe_s_data_and_model():
    from efficientnetv2_keras.benchmarks.progressive import describe_runs

    fashion = load_config("fashion_mnist_b0", ["data.train_split=train[:7000]", "data.minival=1000"])
    text = describe_runs(fashion)
    assert "keras:fashion_mnist" in text and "train[:7000]" in text and "minival 1000" in text
    assert "digits" not in text and "EfficientNetV2-B0" in text
    assert "digits" in describe_runs(load_config("digits_demo"))
