"""The training system on the JAX backend: `get_strategy` gives Keras' own distribution
(`keras.distribution.DataParallel`), TensorFlow-only strategies fail with one clear error, and the
recipe pieces (compile_from_config with EMA, ProgressiveLearning, EMA validation and checkpoints)
train a tiny model over two simulated CPU devices. The whole recipe through tools/train.py is slow
(B0 compiles for several image sizes): marked slow.

JAX and its device count are fixed when first imported, hence the subprocesses.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from efficientnetv2_keras.runs import backup_epochs as resume_backups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("jax", reason="the JAX backend needs jax (pip install 'efficientnetv2-keras[jax]')")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    import tensorflow as tf
    sys.path.insert(0, {tests!r})
    from conftest import TINY_SPEC
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras import training
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
    from efficientnetv2_keras.training.strategy import KerasDistribution, distribution_scope, get_strategy
    from efficientnetv2_keras.training.callbacks import BestAndLastCheckpoint

    assert keras.backend.backend() == "jax"
    errors = {{}}
    for name in ("tpu", "multi_worker"):
        try:
            get_strategy(name)
        except RuntimeError as error:
            errors[name] = str(error)
    single = get_strategy("cpu")
    strategy = get_strategy("auto")
    assert isinstance(strategy, KerasDistribution), strategy
    assert training.default_mixed_precision(strategy) == "float32"
    per_replica = training.per_replica_batch_size(16, strategy)
    from efficientnetv2_keras.data import DigitsSource
    from efficientnetv2_keras.training.strategy import check_even_batches
    digits = DigitsSource(image_size=32)
    check_even_batches(strategy, load_config("digits_demo"), digits, "test")  # 360 = 3 x 120
    check_even_batches(single, load_config("digits_demo", ["eval.batch_size=7"]), digits)  # one device: any batch
    try:
        check_even_batches(strategy, load_config("digits_demo", ["eval.batch_size=7"]), digits)
    except ValueError as error:
        errors["uneven"] = str(error)

    keras.utils.set_random_seed(0)
    config = load_config(None, ["train.optimizer=adam", "train.ema_decay=0.9", "train.weight_decay=1e-5",
                                "train.lr_warmup_epochs=0", "train.lr_base=0.08", "train.batch_size=16"])
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 3
    base = rng.uniform(0, 60, (96, 8, 8, 3)).astype("float32")
    base[np.arange(96), :, :, labels] += 150.0  # the class is the bright channel

    def dataset_fn(stage):
        images = tf.image.resize(base, (stage.image_size, stage.image_size))
        onehot = tf.one_hot(labels, 3)
        return tf.data.Dataset.from_tensor_slices((images, onehot)).shuffle(96, seed=stage.index).batch(16, drop_remainder=True)

    schedule = progressive_schedule(TINY_SPEC, "paper", total_epochs=4, num_stages=2, image_size=(32, 40),
                                    randaug_magnitude=0, mixup_alpha=0, dropout_rate=(0.1, 0.3))
    sharded = []
    with distribution_scope(strategy):
        model = ev2.build_model(TINY_SPEC, classes=3)
        training.compile_from_config(model, config, steps_per_epoch=6, total_steps=24, num_classes=3)
        kernel = model.trainable_variables[0].value
        sharded.append(len(kernel.sharding.device_set))
        progressive = ProgressiveLearning(schedule, dataset_fn, verbose=0)
        validation = tf.data.Dataset.from_tensor_slices((tf.image.resize(base[:40], (40, 40)), tf.one_hot(labels[:40], 3))).batch(16)
        checkpoint = BestAndLastCheckpoint({out!r}, monitor="val_accuracy")
        history = model.fit(progressive.dataset, epochs=4, validation_data=validation,
                            callbacks=[progressive, training.EMACallback([checkpoint])], verbose=0)
        evaluation = model.evaluate(validation, return_dict=True, verbose=0)
    saved = keras.models.load_model({out!r} + "/last.keras")
    print("RESULT", json.dumps({{
        "errors": errors, "single": single.num_replicas_in_sync, "replicas": strategy.num_replicas_in_sync,
        "per_replica": per_replica, "sharded_over": sharded[0], "history": history.history,
        "evaluation": evaluation, "regularization": ev2.get_regularization(model),
        "saved_equals_model": bool(np.allclose(saved.predict(base[:4].repeat(4, 1).repeat(4, 2), verbose=0),
                                                model.predict(base[:4].repeat(4, 1).repeat(4, 2), verbose=0), atol=1e-5)),
    }}))
    """
)


# Slow (a JAX subprocess over two devices, ~35 s; make test runs JAX progressive fit in test_progressive_backends); make test stays under 15 minutes.
@pytest.mark.slow
def test_recipe_pieces_under_keras_data_parallel_on_two_cpu_devices(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    script = SCRIPT.format(tests=os.path.join(ROOT, "tests"), out=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    results = json.loads(line[len("RESULT "):])
    for name, what in (("tpu", "TPUStrategy"), ("multi_worker", "MultiWorkerMirroredStrategy")):
        assert f"({what}) needs the TensorFlow backend" in results["errors"][name]
        assert "runtime.strategy=auto" in results["errors"][name]
    assert "eval.batch_size=7 splits the 360 examples of 'test' into batches ending with one of 3" in results["errors"]["uneven"]
    assert (results["single"], results["replicas"], results["per_replica"], results["sharded_over"]) == (1, 2, 8, 2)
    history = results["history"]
    assert history["image_size"] == [32, 32, 40, 40] and history["dropout_rate"] == pytest.approx([0.1, 0.1, 0.3, 0.3])
    assert results["regularization"]["dropout_rate"] == pytest.approx(0.3)
    assert history["loss"][-1] < history["loss"][0] and history["accuracy"][-1] > 0.6, history
    # After fit the model holds the EMA weights: its evaluation is the EMA validation of the last epoch.
    assert results["evaluation"]["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert results["saved_equals_model"]  # last.keras holds those (EMA) weights
    assert (tmp_path / "best.keras").exists()


INTERRUPTED_RUN = textwrap.dedent(
    """
    import json, sys
    import keras
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training import backup
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    original = backup.RunBackup.on_epoch_end

    def preempted(self, epoch, logs=None):  # the last callback: the backup and log.csv hold epoch 2
        original(self, epoch, logs)
        if epoch == 1:
            raise RuntimeError("simulated preemption")

    backup.RunBackup.on_epoch_end = preempted
    train_and_evaluate(load_config("digits_demo", json.loads(sys.argv[2])), sys.argv[1], "traineval")
    """
)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two B0 trainings and a SavedModel export: ~10 CPU minutes, more on a loaded machine
def test_train_py_runs_the_demo_recipe_on_jax_over_two_devices(tmp_path):
    """The demo recipe, shortened (3 epochs of 4 steps, 3 stages 32 -> 48 px), through the Python API
    (interrupted after epoch 2) and tools/train.py (which resumes it), on two simulated CPU devices;
    then eval mode on one device, and export of the JAX-trained file on TensorFlow."""
    model_dir = tmp_path / "run"
    overrides = ["train.epochs=3", "train.steps_per_epoch=4", "progressive.num_stages=3", "progressive.image_size=[32,48]",
                 "progressive.size_multiple=null", "eval.validation_freq=1"]
    jax_env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    two_devices = dict(jax_env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    interrupted = subprocess.run([sys.executable, "-c", INTERRUPTED_RUN, str(model_dir), json.dumps(overrides)],
                                 env=two_devices, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert interrupted.returncode != 0 and "simulated preemption" in interrupted.stderr, interrupted.stderr[-3000:]
    assert resume_backups(model_dir / "backup") == [2, 1] and json.loads((model_dir / "last.json").read_text())["epoch"] == 2

    train = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--hparams=digits_demo", f"--model_dir={model_dir}"]
    result = subprocess.run(train + [f"--override={o}" for o in overrides] + ["--mode=traineval"],
                            env=two_devices, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert (results["backend"], results["replicas"], results["precision"]) == ("jax", 2, "float32")
    assert "resuming" in result.stdout and "at epoch 3 of 3 (stage 3 of 3, image size 48)" in result.stdout, result.stdout[-2000:]
    assert results["epochs"] == 3 and results["resumed_at_epoch"] == 3
    assert [row["stage"] for row in results["stages"]] == [1, 2, 3]  # the whole run's, from log.csv
    assert [row["image_size"] for row in results["stages"]] == [32, 40, 48]
    log = (model_dir / "log.csv").read_text().splitlines()
    rows = [dict(zip(log[0].split(","), line.split(","))) for line in log[1:]]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [float(r["image_size"]) for r in rows] == [32, 40, 48]
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows) and "l2_loss" in rows[0]
    final, best = results["evaluations"]
    assert (final["role"], best["role"]) == ("final", "best")
    assert final["checkpoint"] == "last.keras: EMA weights after epoch 3"
    assert 0.0 <= final["accuracy"] <= 1.0 and final["l2_loss"] > 0
    record = json.loads((model_dir / "last.json").read_text())
    assert record["weights"] == "EMA" and record["ema_bn_statistics"] is False  # not averaged on JAX
    for name in ("training_curves.png", "schedule.png", "best.keras", "labels.txt", "config.yaml"):
        assert (model_dir / name).exists(), name
    assert resume_backups(model_dir / "backup") == [3, 2]  # kept after the run (a rerun reports it finished)

    # Eval mode, one device: the final model's test numbers again.
    again = subprocess.run(train + ["--mode=eval"], env=jax_env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    evaluations = json.loads((model_dir / "results.json").read_text())["evaluations"]
    assert evaluations[0]["accuracy"] == pytest.approx(final["accuracy"], abs=0.003)  # one of 360 digits
    assert evaluations[0]["loss"] == pytest.approx(final["loss"], rel=1e-3)

    # Export needs TensorFlow: one clear error on JAX; the JAX-trained file exports on TensorFlow.
    export = [sys.executable, os.path.join(ROOT, "tools", "export.py"), f"--model={model_dir / 'best.keras'}",
              "--format=saved_model", "--num_parity_samples=16"]
    on_jax = subprocess.run(export + [f"--output={tmp_path / 'jax_export'}"], env=jax_env, capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert on_jax.returncode != 0 and "Run it with KERAS_BACKEND=tensorflow" in on_jax.stderr, on_jax.stderr[-2000:]
    assert not (tmp_path / "jax_export").exists()
    tf_env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    on_tf = subprocess.run(export + [f"--output={tmp_path / 'export'}"], env=tf_env, capture_output=True, text=True,
                           timeout=900, cwd=ROOT)
    assert on_tf.returncode == 0, on_tf.stdout[-2000:] + on_tf.stderr[-3000:]
    assert (tmp_path / "export" / "saved_model.pb").exists()
