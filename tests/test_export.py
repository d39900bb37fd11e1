"""Export: SavedModel and TFLite parity, inference-only graphs, the bytes signature, atomic writes, the tool.

The exports are made once per module (fixtures) from one B0 at 64 px with 10 classes and random
conv weights. A random B0 straight from its initializers returns near-uniform probabilities, which
make top-1 agreement meaningless, and amplifies any rounding chaotically, unlike a trained network.
So the fixture conditions it the way a short training would, without training: batch-norm
statistics from a batch of digits, residual branches scaled down (as zero-init-residual training
starts), and a nearest-class-mean head on the random features (76 % accurate). Measured (360 test
digits, 100 calibration images): float16 100 %, dynamic int8 96.4 %, int8 90.3 % top-1 agreement
with Keras; the trained digits demo (98.3 % accurate) gives 100, 100 and 99.2 %.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

import efficientnetv2_keras as ev2
from efficientnetv2_keras import export, files
from efficientnetv2_keras.data import preprocess_for_eval
from efficientnetv2_keras.export import common, graph_check, parity

SIZE = 64
CLASSES = 10
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _conditioned_b0():
    keras.utils.set_random_seed(0)
    model = ev2.EfficientNetV2B0(input_shape=(SIZE, SIZE, 3), classes=CLASSES, bn_momentum=0.0)
    train, labels = _digits("train", 256, with_labels=True)
    model(train[:128], training=True)  # momentum 0: the moving statistics become this batch's
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        if layer.name.endswith("project_bn") and layer.name.replace("project_bn", "add") in names:
            layer.gamma.assign(layer.gamma * 0.1)
            layer.beta.assign(layer.beta * 0.1)
    features = keras.Model(model.input, model.get_layer("avg_pool").output).predict(train, verbose=0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    standardized = (features - mean) / std
    centroids = np.stack([standardized[labels == c].mean(0) for c in range(CLASSES)])
    scale = 4.0 / (standardized @ centroids.T).std()
    head = model.get_layer("predictions")
    head.kernel.assign(centroids.T / std[:, None] * scale)
    head.bias.assign(-(mean / std) @ centroids.T * scale)
    return model


def _digits(split, count, with_labels=False):
    dataset = ev2.data.build_dataset("digits", split, SIZE, count, training=False, label_format="sparse")
    images, labels = next(iter(dataset))
    return (images.numpy(), labels.numpy()) if with_labels else images.numpy()


@pytest.fixture(scope="module")
def model():
    return _conditioned_b0()


@pytest.fixture(scope="module")
def test_images():
    return _digits("test", 64)


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved_model") / "b0"
    path.mkdir()
    (path / "old_model_file").write_text("replaced by the export")
    result = export.export_saved_model(model, path, overwrite=True)
    return result, tf.saved_model.load(str(path))


class _TFLiteExports(dict):
    """The model's TFLite exports by mode, each converted on first use (a conversion takes ~15 s: the fast
    suite converts fp32 and int8, `make test-all` every mode)."""

    def __init__(self, model, folder):
        super().__init__()
        self.model, self.folder = model, folder
        (folder / "b0_none.tflite").write_bytes(b"an older file, replaced with overwrite=True")

    def __missing__(self, mode):
        self[mode] = export.export_tflite(
            self.model, self.folder / f"b0_{mode}.tflite", mode, representative_data="digits", num_calibration=64,
            overwrite=(mode == "none"),
        )  # fmt: skip
        return self[mode]

    def every_mode(self):
        return {mode: self[mode] for mode in export.QUANTIZATIONS}


@pytest.fixture(scope="module")
def tflite_exports(model, tmp_path_factory):
    return _TFLiteExports(model, tmp_path_factory.mktemp("tflite"))


def _keras(model, images):
    return model(images, training=False).numpy()


def _tflite(result, images):
    return export.run_tflite(export.make_interpreter(model_path=result.path), images)


# -- SavedModel -----------------------------------------------------------------------------------


def test_saved_model_reload_gives_keras_outputs(model, saved_model, test_images):
    result, loaded = saved_model
    outputs = loaded.signatures[export.FLOAT_SIGNATURE](images=tf.constant(test_images))["predictions"]
    assert np.abs(outputs.numpy() - _keras(model, test_images)).max() < 1e-5
    assert all(report.passed for report in result.parity)
    assert not os.path.exists(os.path.join(result.path, "old_model_file"))  # replaced, not merged


def test_bytes_signature_classifies_a_jpeg_like_the_float_signature(model, saved_model):
    _, loaded = saved_model
    # A digit on a larger, non-square colour canvas, so decode, centre crop and resize all matter.
    digit = tf.image.resize(_digits("test", 1)[0], [80, 80]).numpy()
    canvas = np.full((96, 120, 3), 30.0, np.float32)
    canvas[8:88, 20:100] = digit * np.array([1.0, 0.8, 0.6])
    jpeg = tf.io.encode_jpeg(tf.constant(np.round(canvas).astype(np.uint8)), quality=95)

    from_bytes = loaded.signatures[export.BYTES_SIGNATURE](image_bytes=tf.stack([jpeg]))["predictions"].numpy()
    decoded = tf.io.decode_jpeg(jpeg, channels=3)
    image = preprocess_for_eval(decoded, SIZE)[None]
    from_floats = loaded.signatures[export.FLOAT_SIGNATURE](images=image)["predictions"].numpy()
    assert from_bytes.argmax() == from_floats.argmax()
    np.testing.assert_allclose(from_bytes, from_floats, atol=1e-5)
    assert from_floats.max() > 2.0 / CLASSES  # a decided prediction, not a tie


def test_bytes_signature_reads_png_batches(saved_model, test_images):
    _, loaded = saved_model
    files = [tf.io.encode_png(tf.cast(image, tf.uint8)) for image in test_images[:3]]
    outputs = loaded.signatures[export.BYTES_SIGNATURE](image_bytes=tf.stack(files))["predictions"]
    assert outputs.shape == (3, CLASSES)


# -- TFLite ---------------------------------------------------------------------------------------


def test_tflite_fp32_matches_keras(model, tflite_exports, test_images):
    outputs = _tflite(tflite_exports["none"], test_images)
    assert np.abs(outputs - _keras(model, test_images)).max() < 1e-4


@pytest.mark.parametrize("mode", [pytest.param("float16", marks=pytest.mark.slow),
                                  pytest.param("dynamic_int8", marks=pytest.mark.slow), "int8"])
def test_tflite_quantized_within_documented_bounds(model, tflite_exports, test_images, mode):
    result = tflite_exports[mode]
    report = parity.compare(_keras(model, test_images), _tflite(result, test_images),
                            signature=mode, mode=mode)  # fmt: skip
    limits = export.PARITY_THRESHOLDS[mode]
    assert report.max_abs_diff <= limits.max_abs_diff and report.mean_tv <= limits.max_mean_tv
    assert report.top1_agreement >= limits.min_top1_agreement
    assert report.top1_agreement > 0.5  # int8: "agrees on top-1 for most inputs"
    assert result.parity[0].passed


def _with_scaled_weights(content, op_name, factor, which=0):
    """A copy of an int8 TFLite model whose `which`-th `op_name` op has its weight scales multiplied."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    graph = flat.subgraphs[0]
    ops = [op for op in graph.operators if flatbuffer_utils.opcode_to_name(flat, op.opcodeIndex) == op_name]
    weights = graph.tensors[ops[which].inputs[1]]
    weights.quantization.scale = np.asarray(weights.quantization.scale) * factor
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


def test_int8_parity_fails_a_corrupted_quantization(model, tflite_exports, test_images):
    """One corrupted scale must fail the int8 check, also when it keeps the top-1 class."""
    content = open(tflite_exports["int8"].path, "rb").read()
    reference = _keras(model, test_images)

    def report(flatbuffer):
        outputs = export.run_tflite(export.make_interpreter(model_content=flatbuffer), test_images)
        return parity.compare(reference, outputs, signature="int8", mode="int8")

    assert report(content).passed
    stem = report(_with_scaled_weights(content, "CONV_2D", 2.0))  # the first conv's weights x2
    assert not stem.passed and stem.top1_agreement < 0.5
    # The classifier's weights / 4: flatter probabilities, mostly the same argmax. Top-1 agreement
    # and the worst sample stay within their limits; the mean total-variation distance catches it.
    head = report(_with_scaled_weights(content, "FULLY_CONNECTED", 0.25, which=-1))
    limits = export.PARITY_THRESHOLDS["int8"]
    assert head.top1_agreement >= limits.min_top1_agreement and head.max_abs_diff <= limits.max_abs_diff
    assert len(head.failures) == 1 and head.failures[0].startswith("mean TV")
    assert not head.passed and "FAILED: mean TV" in str(head)


@pytest.mark.slow
def test_int8_export_calibrated_on_wrong_pixel_range_fails(model, tmp_path):
    """The common calibration mistake: [0, 1] images for a model that takes [0, 255] pixels, caught
    by parity on real images (given as sample_images: by default parity runs on the calibration data)."""
    images = _digits("train", 64) / 255.0
    target = tmp_path / "b0_int8.tflite"
    with pytest.raises(export.ExportParityError, match="mean TV"):
        export.export_tflite(model, target, "int8", representative_data=images, sample_images=_digits("test", 64))
    assert not target.exists() and _leftovers(tmp_path) == []


def test_parity_thresholds_overrides():
    assert parity.thresholds_for("int8") == export.PARITY_THRESHOLDS["int8"]
    assert parity.thresholds_for("int8", (1, 0)) == (1.0, 0.0, export.PARITY_THRESHOLDS["int8"].max_mean_tv)
    assert parity.thresholds_for("none", {"none": export.NO_LIMITS}) == export.NO_LIMITS
    with pytest.raises(ValueError, match="max_mean_tv"):
        parity.thresholds_for("int8", (1, 0, -1))


@pytest.mark.slow  # converts every mode (~30 s more); fp32 and int8 are checked in the fast suite
def test_tflite_files_shrink_with_quantization_and_keep_inference_ops(tflite_exports):
    for mode, tflite in tflite_exports.every_mode().items():
        names = export.tflite_op_names(open(tflite.path, "rb").read())
        assert "CONV_2D" in names and not set(names) & set(graph_check.TFLITE_FORBIDDEN_OPS), (mode, names)
    sizes = {mode: os.path.getsize(result.path) for mode, result in tflite_exports.items()}
    assert sizes["float16"] < 0.6 * sizes["none"]
    assert sizes["dynamic_int8"] < 0.4 * sizes["none"]
    assert sizes["int8"] < 0.4 * sizes["none"]


def test_tflite_runs_on_both_interpreters(tflite_exports, test_images):
    """LiteRT (preferred) and the deprecated tf.lite.Interpreter give the same outputs, silently."""
    import warnings

    path = tflite_exports["none"].path
    litert = export.run_tflite(export.make_interpreter(model_path=path), test_images[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our fallback silences the deprecation warning
        import efficientnetv2_keras.export.interpreter as interpreter_module

        original = interpreter_module.interpreter_backend
        interpreter_module.interpreter_backend = lambda: "tf.lite"
        try:
            fallback = export.run_tflite(export.make_interpreter(model_path=path), test_images[:4])
        finally:
            interpreter_module.interpreter_backend = original
    np.testing.assert_allclose(litert, fallback, atol=1e-6)


# -- ONNX -----------------------------------------------------------------------------------------

ONNX_MISSING = [m for m in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING),
    reason=f"ONNX export needs {', '.join(ONNX_MISSING)}: pip install 'efficientnetv2-keras[onnx]'",
)


@pytest.fixture(scope="module")
def onnx_export(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "b0.onnx"
    # Through export_model, as tools/export.py --format=onnx calls it.
    return export.export_model(model, path, format="onnx", representative_data="digits")


@needs_onnx
def test_onnx_matches_keras_with_a_dynamic_batch(model, onnx_export, test_images):
    assert onnx_export.format == "onnx" and onnx_export.parity[0].passed
    assert onnx_export.parity[0].max_abs_diff <= export.PARITY_THRESHOLDS["onnx"][0]
    session = export.make_session(onnx_export.path)
    (image_input,), (output,) = session.get_inputs(), session.get_outputs()
    assert (image_input.name, image_input.shape) == ("images", ["batch", SIZE, SIZE, 3])
    assert (output.name, output.shape) == ("predictions", ["batch", CLASSES])
    outputs = export.run_onnx(session, test_images)
    assert np.abs(outputs - _keras(model, test_images)).max() < 1e-4
    one_at_a_time = np.concatenate([export.run_onnx(session, test_images[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(one_at_a_time, outputs[:5], atol=1e-5)


@needs_onnx
def test_onnx_graph_is_an_inference_graph(onnx_export):
    import onnx

    proto = onnx.load(onnx_export.path)
    op_types = export.check_onnx_ops(proto)
    assert "Conv" in op_types and tuple(op_types) == onnx_export.op_types
    assert not set(op_types) & {"BatchNormalization", "Dropout", *graph_check.ONNX_RANDOM_OPS}
    assert os.path.getsize(onnx_export.path) == onnx_export.size_bytes


@needs_onnx
def test_onnx_checker_rejects_training_and_custom_ops():
    from onnx import TensorProto, helper

    def model_with(*nodes):
        graph = helper.make_graph(
            list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        )  # fmt: skip
        return helper.make_model(graph)

    random = helper.make_node("RandomUniformLike", ["x"], ["r"])
    custom = helper.make_node("FlexConv", ["x"], ["y"], domain="org.example")
    with pytest.raises(export.InferenceGraphError, match="random op.*\n.*custom op"):
        export.check_onnx_ops(model_with(random, custom))
    train_bn = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "m2", "v2"], training_mode=1)
    with pytest.raises(export.InferenceGraphError, match="batch norm in training mode"):
        export.check_onnx_ops(model_with(train_bn))
    assert export.check_onnx_ops(model_with(helper.make_node("Relu", ["x"], ["y"]))) == ["Relu"]


def test_onnx_export_without_its_packages_says_what_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    with pytest.raises(ImportError, match=r"efficientnetv2-keras\[onnx\]"):
        export.export_onnx(model, tmp_path / "b0.onnx")
    assert not (tmp_path / "b0.onnx").exists()


@pytest.mark.slow
@needs_onnx
def test_onnx_export_of_s_passes_parity(tmp_path):
    keras.utils.set_random_seed(0)
    size = 128
    s = ev2.EfficientNetV2S(input_shape=(None, None, 3), classes=CLASSES, bn_momentum=0.0)
    images, _ = export.load_images("digits", size, 32)
    s(images, training=True)  # momentum 0: realistic batch-norm statistics from a batch of digits
    result = export.export_onnx(s, tmp_path / "s.onnx", image_size=size, num_parity_samples=32)
    assert result.parity[0].passed and result.parity[0].max_abs_diff <= export.PARITY_THRESHOLDS["onnx"][0]
    assert result.size_bytes > 4 * 20e6  # float32 weights: S has 20+ M parameters


# -- inference graphs -------------------------------------------------------------------------------

RANDOM_OR_TRAINING = ("Random", "StatelessRandom", "AssignVariableOp", "AssignAddVariableOp", "RngReadAndSkip")


def test_exported_graphs_have_no_random_or_training_ops(saved_model, tflite_exports):
    result, loaded = saved_model
    op_types = export.check_inference_graph(loaded)
    assert "Conv2D" in op_types and any(op.startswith("Decode") for op in op_types)
    assert not [op for op in op_types if op.startswith(RANDOM_OR_TRAINING)]
    for fn in loaded.signatures.values():
        for node in fn.graph.as_graph_def().node:
            if node.op.startswith("FusedBatchNorm"):
                assert not node.attr["is_training"].b
    for mode in ("none", "int8"):  # every mode: test_tflite_files_shrink_with_quantization_and_keep_...
        names = export.tflite_op_names(open(tflite_exports[mode].path, "rb").read())
        assert "CONV_2D" in names, mode
        assert not set(names) & set(graph_check.TFLITE_FORBIDDEN_OPS), (mode, names)
        assert not [n for n in names if n.startswith("Flex")], (mode, names)


def test_checker_rejects_a_training_mode_graph(model):
    """What the official project exported by mistake: drop-connect + batch-norm updates."""
    traced = tf.function(lambda images: model(images, training=True)).get_concrete_function(
        tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    )
    with pytest.raises(export.InferenceGraphError) as error:
        export.check_inference_graph(traced, common.regularization_rate_variables(model))
    message = str(error.value)
    assert "random op" in message and "state-changing op" in message and "rate" in message
    inference = tf.function(lambda images: model(images, training=False)).get_concrete_function(
        tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    )
    export.check_inference_graph(inference, common.regularization_rate_variables(model))


def test_tflite_checker_rejects_unfrozen_variables(tiny_spec):
    """Converting with the Keras model attached to the converter's trackable keeps its weights as
    resource variables (VAR_HANDLE/READ_VARIABLE ops, no weights in the file): a "mutable variable" model."""
    tiny = ev2.build_model(tiny_spec, input_shape=(32, 32, 3), classes=3)
    function = tf.function(lambda x: {"y": tiny(x, training=False)}).get_concrete_function(
        tf.TensorSpec([None, 32, 32, 3], tf.float32)
    )
    holder = tf.Module()
    holder.model = tiny
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    with pytest.raises(export.InferenceGraphError, match="READ_VARIABLE|VAR_HANDLE"):
        export.check_tflite_ops(converter.convert())


# -- failures leave nothing behind ----------------------------------------------------------------


def _leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_parity_failure_leaves_no_file_and_keeps_the_old_one(tiny_spec, tmp_path):
    tiny = ev2.build_model(tiny_spec, input_shape=(32, 32, 3), classes=3)
    target = tmp_path / "tiny.tflite"
    target.write_bytes(b"the previous export")
    with pytest.raises(export.ExportParityError) as error:
        # An impossible request: float16 weights with outputs identical to float32.
        export.export_tflite(tiny, target, "float16", thresholds=(0.0, 1.0), overwrite=True, num_parity_samples=8)
    assert error.value.reports and not error.value.reports[0].passed
    assert target.read_bytes() == b"the previous export"
    assert _leftovers(tmp_path) == []
    with pytest.raises(export.ExportParityError):
        export.export_saved_model(tiny, tmp_path / "new", thresholds=(0.0, 1.0), num_parity_samples=8)
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantization": "int4"}, "none, float16, dynamic_int8, int8"),
        ({"quantization": "int8"}, "representative_data"),
        ({"quantization": "int8", "representative_data": np.zeros((4, 32, 32, 3))}, r"\(64, 64, 3\)"),
        ({"image_size": 96}, "built for 64x64"),
        ({"batch_size": 0}, "batch_size"),
        ({"use_ema": "yes"}, "use_ema"),
        ({"use_ema": True}, "keeps no moving averages"),
    ],
)
def test_bad_requests_fail_early_with_clear_errors(model, tmp_path, kwargs, match):
    target = tmp_path / "b0.tflite"
    with pytest.raises(ValueError, match=match):
        export.export_tflite(model, target, **kwargs)
    assert not target.exists() and _leftovers(tmp_path) == []


def test_existing_target_is_not_overwritten(model, tmp_path):
    target = tmp_path / "b0"
    target.mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_saved_model(model, target)
    with pytest.raises(ValueError, match="TFLite only"):
        export.export_model(model, tmp_path / "x", format="saved_model", quantization="int8")
    with pytest.raises(ValueError, match="TFLite only"):
        export.export_model(model, tmp_path / "x", format="onnx", quantization="float16")
    with pytest.raises(ValueError, match="saved_model, tflite, onnx"):
        export.export_model(model, tmp_path / "x", format="coreml")


def test_atomic_output_cleans_up_on_error(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_output(target, overwrite=False) as temporary:
            os.makedirs(os.path.join(temporary, "variables"))
            raise RuntimeError("boom")
    assert not target.exists() and _leftovers(tmp_path) == []
    with files.atomic_output(target, overwrite=False) as temporary:
        os.makedirs(temporary)
        open(os.path.join(temporary, "new"), "w").close()
    with files.atomic_output(target, overwrite=True) as temporary:
        open(temporary, "w").write("a file replaces a directory")
    assert target.read_text() == "a file replaces a directory" and _leftovers(tmp_path) == []


# -- image size, EMA --------------------------------------------------------------------------------


def test_image_size_defaults(tiny_spec):
    dynamic_b0 = ev2.EfficientNetV2B0(include_top=False, pooling="avg")
    assert export.resolve_image_size(dynamic_b0) == 224  # the variant's eval size
    assert export.resolve_image_size(dynamic_b0, 96) == 96
    tiny = ev2.build_model(tiny_spec, classes=3)
    with pytest.raises(ValueError, match="pass image_size"):
        export.resolve_image_size(tiny)
    with pytest.raises(ValueError, match="at least|>= 32"):
        export.resolve_image_size(tiny, 16)


def test_ema_weights_are_exported_without_touching_the_model(tiny_spec, tmp_path):
    keras.utils.set_random_seed(1)
    model = ev2.build_model(tiny_spec, input_shape=(32, 32, 3), classes=5, classifier_activation=None)
    model.compile(keras.optimizers.SGD(0.1, use_ema=True), loss="mse")
    model.optimizer.build(model.trainable_variables)
    for average, variable in zip(model.optimizer._model_variables_moving_average, model.trainable_variables):
        average.assign(variable * 0.5 + 0.01)
    images = _digits("test", 8)[:, ::2, ::2]  # 32 px
    before = [w.copy() for w in model.get_weights()]
    raw = _keras(model, images)

    result = export.export_tflite(model, tmp_path / "ema.tflite", sample_images=images, num_parity_samples=8)
    assert result.used_ema
    assert [np.array_equal(a, b) for a, b in zip(before, model.get_weights())] == [True] * len(before)

    averaged = keras.models.clone_model(model)
    averaged.set_weights(model.get_weights())
    for variable, average in zip(averaged.trainable_variables, model.optimizer._model_variables_moving_average):
        variable.assign(average)
    served = _tflite(result, images)
    np.testing.assert_allclose(served, _keras(averaged, images), atol=1e-4)
    assert np.abs(served - raw).max() > 1e-2  # really the averages, not the raw weights

    plain = export.export_tflite(model, tmp_path / "raw.tflite", use_ema=False, sample_images=images)
    np.testing.assert_allclose(_tflite(plain, images), raw, atol=1e-4)

    if not ONNX_MISSING:
        onnx_result = export.export_onnx(model, tmp_path / "ema.onnx", sample_images=images)
        assert onnx_result.used_ema
        served = export.run_onnx(export.make_session(onnx_result.path), images)
        np.testing.assert_allclose(served, _keras(averaged, images), atol=1e-4)

    # The SavedModel holds the optimizer's average variables in place of the weights.
    saved = export.export_saved_model(model, tmp_path / "ema", sample_images=images, num_parity_samples=8)
    signature = tf.saved_model.load(saved.path).signatures[export.FLOAT_SIGNATURE]
    np.testing.assert_allclose(signature(images=tf.constant(images))["predictions"].numpy(),
                               _keras(averaged, images), atol=1e-5)  # fmt: skip


def test_load_model_for_export(model, tmp_path):
    weights = tmp_path / "b0.weights.h5"
    model.save_weights(weights)
    loaded = export.load_model_for_export(variant="b0", weights=weights, classes=CLASSES)
    assert export.resolve_image_size(loaded) == 224  # built for any size: the eval size
    with pytest.raises(ValueError, match="either"):
        export.load_model_for_export(tmp_path / "m.keras", variant="b0")
    with pytest.raises(ValueError, match="not a .keras file"):
        export.load_model_for_export(weights)


# -- the tool ---------------------------------------------------------------------------------------


@pytest.mark.slow  # 21 s; the export tool also runs fast in tests/test_runs.py (size and crop from the run)
def test_tool_exports_a_keras_file_end_to_end(tiny_spec, tmp_path):
    keras.utils.set_random_seed(2)
    model = ev2.build_model(tiny_spec, input_shape=(32, 32, 3), classes=10)
    model.save(tmp_path / "tiny.keras")
    output = tmp_path / "out" / "tiny.tflite"
    command = [
        sys.executable, os.path.join(REPO, "tools", "export.py"), f"--model={tmp_path / 'tiny.keras'}",
        "--format=tflite", "--quantization=none", f"--output={output}", "--num_parity_samples=16",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert output.exists() and "tflite none" in run.stdout and "[ok]" in run.stdout

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "already exists" in again.stderr
