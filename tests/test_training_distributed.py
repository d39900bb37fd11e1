"""The recipe pieces under tf.distribute.MirroredStrategy over two logical CPUs (in its own process).

Logical devices must be configured before TensorFlow initializes, hence the subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    sys.path.insert(0, "tests")
    from conftest import TINY_SPEC
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras import training
    from efficientnetv2_keras.hparams import load_config

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = load_config(None, ["train.optimizer=momentum", "train.ema_decay=0.9", "train.batch_size=8",
                                "train.lr_warmup_epochs=0", "train.lr_base=0.1"])
    with strategy.scope():
        model = ev2.build_model(TINY_SPEC, classes=3, input_shape=(32, 32, 3))
        training.compile_from_config(model, config, steps_per_epoch=2, total_steps=6)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 3, 3).astype("float32")
    per_replica = training.per_replica_batch_size(config.train.batch_size, strategy)

    def dataset_fn(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(ctx.get_per_replica_batch_size(8)).repeat()

    train = training.distribute_dataset(strategy, dataset_fn)
    differences = []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            differences.append(training.max_ema_difference(self.model))

    history = model.fit(train, epochs=3, steps_per_epoch=2, validation_data=(x, y), validation_batch_size=16,
                        callbacks=[training.EMACallback(), Probe()], verbose=0)
    def same_on_replicas(variable):
        copies = getattr(variable.value, "values", (variable.value,))
        return all(np.array_equal(c.numpy(), copies[0].numpy()) for c in copies)

    replicas_equal = all(same_on_replicas(v) and same_on_replicas(a) for v, a in training.ema_variables(model))
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "per_replica": per_replica,
        "differences": differences,
        "last_val_loss": history.history["val_loss"][-1],
        "ema_eval_loss": model.evaluate(x, y, batch_size=16, verbose=0)[0],
        "l2_weight_decay": model.optimizer.l2_weight_decay,
        "averaged_statistics": len(model.optimizer.ema_statistic_pairs()),
        "statistics_averaged": bool(np.allclose(
            model.get_layer("top_bn").moving_mean.numpy(),
            dict((id(v), a) for v, a in model.optimizer.ema_statistic_pairs())[
                id(model.get_layer("top_bn").moving_mean)].numpy())),
        "replicas_equal": replicas_equal,
    }))
    """
)


def test_mirrored_strategy_two_replicas():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["per_replica"] == 4
    assert all(d > 0 for d in report["differences"])  # EMA != raw weights during training
    assert report["ema_eval_loss"] == pytest.approx(report["last_val_loss"], rel=1e-5)  # validated with EMA
    # The L2 term is in the optimizer (not the loss); the BN statistics are averaged on every replica alike
    # (the pairs checked by replicas_equal include them) and copied into the model at the end of fit.
    assert report["l2_weight_decay"] == 1e-5 and report["replicas_equal"]
    assert report["averaged_statistics"] > 0 and report["statistics_averaged"]


SYNC_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    sys.path.insert(0, "tests")
    from conftest import TINY_SPEC
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.training.strategy import synchronize_batch_norm, wants_synchronized_batch_norm

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # Replica 0 sees dark images, replica 1 bright ones: local batch statistics differ.
    x = np.concatenate([np.full((4, 32, 32, 3), 10.0), np.full((4, 32, 32, 3), 240.0)]).astype("float32")
    x += np.random.default_rng(0).uniform(0, 5, x.shape).astype("float32")
    y = keras.utils.to_categorical(np.arange(8) % 3, 3).astype("float32")
    report = {"auto": wants_synchronized_batch_norm(strategy), "forced": wants_synchronized_batch_norm(strategy, True)}
    for synchronized in (False, True):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = ev2.build_model(TINY_SPEC, classes=3, input_shape=(32, 32, 3))
            model.compile(optimizer="sgd", loss="categorical_crossentropy")
        if synchronized:
            report["layers"] = synchronize_batch_norm(model)
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
        bn = model.get_layer("top_bn")
        copies = [c.numpy() for c in bn.moving_mean.value.values]
        report[str(synchronized)] = float(np.max(np.abs(copies[0] - copies[1])))
        if synchronized:
            model.save(sys.argv[1])
            report["saved_synchronized"] = keras.models.load_model(sys.argv[1]).get_layer("top_bn").synchronized
    print(json.dumps(report))
    """
)


@pytest.mark.slow  # 37 s; the two-worker test (slow too) checks the same end to end
def test_synchronized_batch_norm_keeps_every_replica_s_statistics_identical(tmp_path):
    # Multi-worker training keeps one model per worker: with each replica's own batch statistics the
    # BatchNorm moving averages drift apart (the two-worker test found it). Synchronized, they are the
    # global batch's on every replica; the saved file still loads on every backend.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", SYNC_SCRIPT, str(tmp_path / "m.keras")], cwd=root,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["False"] > 1e-3  # plain BatchNorm: the replicas' statistics differ
    assert report["True"] < 1e-6 and report["layers"] > 5
    assert report["saved_synchronized"] is False
    assert report["auto"] is False and report["forced"] is True  # auto: TPU and multi-worker only


def test_synchronized_batch_norm_needs_tensorflow():
    import keras

    from efficientnetv2_keras.training.strategy import synchronize_batch_norm

    if keras.backend.backend() == "tensorflow":
        model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
        assert synchronize_batch_norm(model) == 1 and synchronize_batch_norm(model, False) == 1
        assert not model.layers[0].synchronized and model.layers[0].get_config()["synchronized"] is False
