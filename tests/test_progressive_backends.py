"""`ProgressiveLearning` on the JAX and PyTorch backends: one 2-stage `fit` of a tiny model on digits.

Each backend runs in a subprocess (the backend is fixed when keras is first imported; the test session
runs TensorFlow, where tests/test_progressive.py checks the same in process). The script checks, from inside the compiled train step: the image size of every
batch, that the stage switches at its epoch, and that the dropout rate the callback sets changes the loss.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.data import DigitsSource, build_dataset
    from efficientnetv2_keras.progressive import ProgressiveLearning, progressive_schedule
    sys.path.insert(0, {tests!r})
    from conftest import TINY_SPEC

    backend = keras.backend.backend()
    assert backend == {backend!r}, backend


    class Recorder(keras.layers.Layer):
        # Identity; stores in variables what the compiled train step saw in its last batch.
        def build(self, input_shape):
            self.height = self.add_weight(shape=(), initializer="zeros", trainable=False, name="height")
            self.zero_fraction = self.add_weight(shape=(), initializer="zeros", trainable=False, name="zeros")

        def call(self, inputs, training=False):
            if training:
                if len(inputs.shape) == 4:
                    self.height.assign(keras.ops.cast(keras.ops.shape(inputs)[1], "float32"))
                else:
                    self.zero_fraction.assign(keras.ops.mean(keras.ops.cast(keras.ops.equal(inputs, 0), "float32")))
            return inputs


    class BatchLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []

        def on_train_batch_end(self, batch, logs=None):
            # self.model (not a saved layer reference): on JAX this syncs the train step's state into
            # the variables first.
            images, head = self.model.get_layer("images"), self.model.get_layer("head")
            self.rows.append((int(keras.ops.convert_to_numpy(images.height)),
                              float(keras.ops.convert_to_numpy(head.zero_fraction)), float(logs["loss"])))


    keras.utils.set_random_seed(0)
    source = DigitsSource(image_size=40)
    # Stage 1: 32 px, no dropout; stage 2: 40 px, head dropout 0.6. Two epochs each.
    schedule = progressive_schedule(TINY_SPEC, "paper", total_epochs=4, num_stages=2, image_size=(32, 40),
                                    randaug_magnitude=0, mixup_alpha=0, dropout_rate=(0.0, 0.6))
    steps = 4

    def dataset_fn(stage):
        # The evaluation pipeline: the same batches every epoch of a stage, so with a zero learning rate
        # two epochs of a stage give the same losses unless dropout draws differ.
        return build_dataset(source, "train", stage.image_size, 32, training=False).take(steps)

    inputs = keras.Input((None, None, 3))
    features = ev2.build_model(TINY_SPEC, include_top=False, pooling="avg", survival_prob=1.0)(Recorder(name="images")(inputs))
    features = Recorder(name="head")(ev2.AdjustableDropout(0.0, name="top_dropout")(features))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(features))
    # Learning rate 0: the weights stay, so a stage's two epochs differ only by the dropout draws.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    progressive = ProgressiveLearning(schedule, dataset_fn, verbose=0)
    log = BatchLog()
    history = model.fit(progressive.dataset, epochs=schedule.total, callbacks=[progressive, log], verbose=0)

    heights = [row[0] for row in log.rows]
    assert heights == [32] * 2 * steps + [40] * 2 * steps, heights
    assert history.history["stage"] == [0, 0, 1, 1], history.history
    assert history.history["image_size"] == [32, 32, 40, 40], history.history
    assert np.allclose(history.history["dropout_rate"], [0, 0, 0.6, 0.6]), history.history
    zeros = np.array([row[1] for row in log.rows]).reshape(2, -1)
    assert zeros[0].max() < 0.02 and 0.5 < zeros[1].mean() < 0.7, zeros  # dropout inside the compiled step
    losses = np.array([row[2] for row in log.rows]).reshape(4, steps)  # epoch x batch (running means)
    assert np.allclose(losses[0], losses[1], atol=1e-5), losses  # no dropout: same batches, same losses
    assert np.abs(losses[2] - losses[3]).max() > 1e-3, losses  # dropout 0.6: the losses change
    assert abs(ev2.get_regularization(model)["dropout_rate"] - 0.6) < 1e-6
    print("BACKEND OK", backend, losses.round(4).tolist())
    """
)


def _run(backend):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=tests_dir, backend=backend)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"BACKEND OK {backend}" in result.stdout, result.stdout[-2000:]


def test_two_stage_progressive_fit_on_jax():
    pytest.importorskip("jax", reason="the JAX backend needs jax (pip install 'efficientnetv2-keras[jax]')")
    _run("jax")


def test_two_stage_progressive_fit_on_pytorch():
    pytest.importorskip("torch", reason="the PyTorch backend needs torch (pip install torch)")
    _run("torch")
