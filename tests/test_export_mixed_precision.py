"""Export of checkpoints trained under mixed precision (mixed_float16 on GPUs, mixed_bfloat16 on TPUs).

Such a model's layers compute in float16/bfloat16, which TFLite's builtin ops reject ('tf.Conv2D' op
is neither a custom op nor a flex op). Every export serves a float32 rebuild instead (weights cast to
float32), checks parity against that rebuild, and reports how far the mixed-precision model is from it.

The checkpoints: the tiny table trained 20 steps on digits under each policy with an EMA optimizer,
saved compiled (the averages live in the optimizer, wrapped in a LossScaleOptimizer under
mixed_float16), then loaded under float32 as tools/export.py loads them.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

import efficientnetv2_keras as ev2
from efficientnetv2_keras import export
from efficientnetv2_keras.export import common, parity, precision
from efficientnetv2_keras.models import io

from conftest import TINY_SPEC

SIZE = 32
CLASSES = 10
POLICIES = ("mixed_float16", "mixed_bfloat16")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits(split, count):
    dataset = ev2.data.build_dataset("digits", split, SIZE, count, training=False, label_format="sparse")
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def _served_weights(model):
    """The model's weights with the optimizer's averages in place of the averaged ones (numpy)."""
    averages = {id(variable): average for variable, average in common.ema_state_mapping(model)}
    return [keras.ops.convert_to_numpy(averages.get(id(w), w)) for w in model.weights]


def _train_and_save(policy, path):
    """The tiny table trained under `policy`, saved compiled; returns the EMA weights it serves."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = ev2.build_model(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
        model.compile(keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5),
                      loss="sparse_categorical_crossentropy")  # fmt: skip
        images, labels = _digits("train", 256)
        for step in range(20):  # train_on_batch, not fit: fit would copy the averages into the weights
            start = step * 64 % 256
            model.train_on_batch(images[start : start + 64], labels[start : start + 64])
        model.save(path)
        return _served_weights(model)
    finally:
        keras.mixed_precision.set_global_policy(previous)


class _Checkpoints(dict):
    """policy -> (.keras path, its EMA weights, the model loaded for export), trained on first use."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def __missing__(self, policy):
        path = self.folder / f"tiny_{policy}.keras"
        weights = _train_and_save(policy, path)
        assert keras.mixed_precision.global_policy().name == "float32"
        self[policy] = (path, weights, export.load_model_for_export(path))
        return self[policy]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return _Checkpoints(tmp_path_factory.mktemp("mixed_precision"))


@pytest.fixture
def restore_global_policy():
    previous = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(scope="module")
def test_images():
    return _digits("test", 64)[0]


def _float32_twin(weights):
    """The same network built under float32 from the served weights: what the export must reproduce."""
    model = ev2.build_model(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    model.set_weights(weights)
    return model


def _run_export(result, images):
    if result.format == "saved_model":
        signature = tf.saved_model.load(result.path).signatures[export.FLOAT_SIGNATURE]
        return signature(images=tf.constant(images))["predictions"].numpy()
    if result.format == "onnx":
        return export.run_onnx(export.make_session(result.path), images)
    return export.run_tflite(export.make_interpreter(model_path=result.path), images)


@pytest.mark.parametrize("policy", POLICIES)
def test_loading_a_compiled_checkpoint_keeps_its_optimizer_averages(checkpoints, policy):
    """Loaded under float32, a mixed_float16 file's optimizer came back without its LossScaleOptimizer:
    Keras skipped the whole optimizer state (a UserWarning), and the export served zero averages."""
    _, weights, model = checkpoints[policy]
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.get_layer("stem_conv").dtype_policy.name == policy
    for saved, loaded in zip(weights, _served_weights(model)):
        np.testing.assert_array_equal(saved, loaded)


FORMATS = [("saved_model", "none"), ("tflite", "none"), ("tflite", "float16"), ("tflite", "dynamic_int8"),
           ("tflite", "int8"), ("onnx", "none")]  # fmt: skip
# The fast suite exports the float16 checkpoint as test_export.py does the B0 (every format but the
# float16 and dynamic-int8 TFLite conversions) and the bfloat16 one to TFLite fp32 and ONNX: each takes
# a few seconds, training a checkpoint ~20 s. `make test-all` exports both to every format.
FAST = {
    "mixed_float16": {"saved_model", "tflite none", "tflite int8", "onnx"},
    "mixed_bfloat16": {"tflite none", "onnx"},
}
CASES = [
    pytest.param(policy, format, quantization, id=f"{policy}-{format}-{quantization}",
                 marks=() if {format, f"{format} {quantization}"} & FAST[policy] else pytest.mark.slow)
    for policy in POLICIES
    for format, quantization in FORMATS
]  # fmt: skip


@pytest.mark.parametrize("policy, format, quantization", CASES)
def test_every_format_serves_the_float32_rebuild(checkpoints, test_images, tmp_path, policy, format, quantization):
    if format == "onnx":
        pytest.importorskip("tf2onnx")
    _, weights, model = checkpoints[policy]
    result = export.export_model(
        model, tmp_path / f"tiny.{format}", format=format, quantization=quantization,
        representative_data="digits", num_calibration=32,
    )  # fmt: skip
    assert all(report.passed for report in result.parity)
    assert result.used_ema and result.source_dtype_policy == policy

    reference = _float32_twin(weights)(test_images, training=False).numpy()
    outputs = _run_export(result, test_images)
    mode = quantization if format == "tflite" else format
    assert parity.compare(reference, outputs, signature=format, mode=mode).passed
    if quantization == "none":
        np.testing.assert_allclose(outputs, reference, atol=1e-4)
    if format == "tflite":
        assert "CONV_2D" in result.op_types and not [op for op in result.op_types if op.startswith("Flex")]

    gap = result.precision_gap  # the mixed-precision model against the float32 rebuild
    assert gap.num_samples == result.parity[0].num_samples
    assert 0 < gap.max_abs_diff < 0.1 and gap.top1_agreement >= 0.9
    assert f"{policy} model" in str(result) and f"max|dp|={gap.max_abs_diff:.2e}" in str(result)


def test_the_users_model_and_the_global_policy_are_left_as_they_were(checkpoints, tmp_path, restore_global_policy):
    _, _, model = checkpoints["mixed_float16"]
    weights = [w.copy() for w in _served_weights(model)] + [v.numpy() for v in model.optimizer.variables]
    policies = [layer.dtype_policy.name for layer in model.layers]
    keras.mixed_precision.set_global_policy("mixed_float16")  # e.g. exporting right after training
    result = export.export_tflite(model, tmp_path / "tiny.tflite", num_parity_samples=16)
    assert result.source_dtype_policy == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert [layer.dtype_policy.name for layer in model.layers] == policies
    after = _served_weights(model) + [v.numpy() for v in model.optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(weights, after))


def test_the_policy_scope_restores_the_global_policy_on_errors(restore_global_policy):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    with pytest.raises(RuntimeError, match="boom"):
        with io.dtype_policy_scope("float32"):
            assert keras.mixed_precision.global_policy().name == "float32"
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_a_model_that_cannot_be_rebuilt_gets_a_clear_error(restore_global_policy):
    class Subclassed(keras.Model):  # no get_config: its config does not rebuild it
        def __init__(self, classes):
            super().__init__()
            self.head = keras.layers.Dense(classes)

        def call(self, images):
            return self.head(images)

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = Subclassed(3)
    model(np.zeros((1, 4), np.float32))
    keras.mixed_precision.set_global_policy("float32")
    expected = r"computes in mixed_float16.*cannot be rebuilt.*set_global_policy\('float32'\)"
    with pytest.raises(ValueError, match=expected):
        precision.float32_rebuild(model)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_float32_model_takes_the_usual_path(tmp_path):
    keras.utils.set_random_seed(3)
    model = ev2.build_model(TINY_SPEC, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    served = common.model_to_serve(model)
    assert served.model is model and served.source_dtype_policy is None
    result = export.export_tflite(model, tmp_path / "tiny.tflite", num_parity_samples=8)
    assert result.source_dtype_policy is None and result.precision_gap is None
    assert "float32 rebuild" not in str(result)


def test_the_export_command_exports_a_mixed_float16_checkpoint(checkpoints, tmp_path):
    path, _, _ = checkpoints["mixed_float16"]
    output = tmp_path / "tiny.tflite"
    command = [
        sys.executable, "-m", "efficientnetv2_keras.cli.export", f"--model={path}", "--format=tflite",
        f"--output={output}", "--num_parity_samples=16",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert output.exists() and "[ok]" in run.stdout and "mixed_float16 model" in run.stdout
