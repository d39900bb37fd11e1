"""Loading .keras files for evaluate, predict and export: each broken file gets its own message.

Keras answers "File not found" for a file that exists but is empty, truncated or no zip at all;
`models.io.load_model_file` names the real problem, and every loading path goes through it.
"""

import json
import os
import subprocess
import sys
import zipfile

import pytest

import keras

import efficientnetv2_keras as ev2
from efficientnetv2_keras import export
from efficientnetv2_keras.hparams import load_config
from efficientnetv2_keras.models.io import IncompatibleModelFileError, ModelFileError, load_model_file
from efficientnetv2_keras.training.evaluation import load_for_evaluation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    from tests.conftest import TINY_SPEC

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    ev2.build_model(TINY_SPEC, input_shape=(32, 32, 3), classes=3).save(path)
    return path


def _truncated(keras_file, tmp_path):
    data = keras_file.read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    return path


def _rewritten(keras_file, path, edit):
    """A copy of the archive with `edit(name, bytes) -> bytes or None (dropped)` applied to each member."""
    with zipfile.ZipFile(keras_file) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            data = edit(name, source.read(name))
            if data is not None:
                target.writestr(name, data)
    return path


def test_a_sound_file_loads(keras_file):
    model = load_model_file(keras_file)
    assert model.output_shape == (None, 3)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file at"):
        load_model_file(tmp_path / "nothing.keras")


def test_truncated_file_is_called_truncated(keras_file, tmp_path):
    with pytest.raises(ModelFileError, match="is truncated") as error:
        load_model_file(_truncated(keras_file, tmp_path))
    assert "File not found" not in str(error.value) and "Copy it again" in str(error.value)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b"not a model, just some text\n", r"not a \.keras model archive \(not a zip file"),
        (b"\x89HDF\r\n\x1a\n" + bytes(64), "is an HDF5 file"),
    ],
)
def test_files_that_are_no_archive(tmp_path, content, match):
    path = tmp_path / "x.keras"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        load_model_file(path)


def test_wrong_kind_of_path(keras_file, tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        load_model_file(tmp_path)
    weights = tmp_path / "tiny.weights.h5"
    weights.write_bytes(b"h5")
    with pytest.raises(ModelFileError, match="not a .keras file.*weights file"):
        load_model_file(weights)


def test_damaged_member_is_named(keras_file, tmp_path):
    data = bytearray(keras_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside model.weights.h5, stored uncompressed
    path = tmp_path / "flipped.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="is damaged: 'model.weights.h5'"):
        load_model_file(path)


def test_zip_that_is_not_a_keras_model(keras_file, tmp_path):
    path = _rewritten(keras_file, tmp_path / "no_config.keras", lambda name, data: None if name == "config.json" else data)
    with pytest.raises(ModelFileError, match="lacks config.json"):
        load_model_file(path)


def test_archive_whose_model_cannot_be_rebuilt(keras_file, tmp_path):
    def edit(name, data):
        if name == "config.json":
            config = json.loads(data)
            config["class_name"] = "SomeoneElsesModel"
            config["registered_name"] = "other_package>SomeoneElsesModel"
            return json.dumps(config)
        return data

    path = _rewritten(keras_file, tmp_path / "foreign.keras", edit)
    with pytest.raises(IncompatibleModelFileError, match="cannot be rebuilt here.*saved with Keras"):
        load_model_file(path)


# -- every loading path uses it ---------------------------------------------------------------------


def test_evaluate_and_export_paths_name_the_problem(keras_file, tmp_path):
    truncated = _truncated(keras_file, tmp_path)
    with pytest.raises(ModelFileError, match="is truncated"):
        load_for_evaluation(load_config("digits_demo"), str(truncated))
    with pytest.raises(ModelFileError, match="is truncated"):
        export.load_model_for_export(truncated)
    with pytest.raises(FileNotFoundError, match="No model file"):
        export.load_model_for_export(tmp_path / "missing.keras")
    assert isinstance(export.load_model_for_export(keras_file), keras.Model)


# Each run starts TensorFlow in a subprocess; evaluate and export share the library paths above.
@pytest.mark.parametrize(
    "tool", ["predict", pytest.param("evaluate", marks=pytest.mark.slow), pytest.param("export", marks=pytest.mark.slow)]
)
def test_tools_report_a_truncated_file_without_a_traceback(keras_file, tmp_path, tool):
    truncated = _truncated(keras_file, tmp_path)
    arguments = {
        "predict": [f"--model={truncated}", "--image_size=32", "image.png"],
        "evaluate": ["--hparams=digits_demo", f"--checkpoint={truncated}"],
        "export": [f"--model={truncated}", f"--output={tmp_path / 'out.tflite'}", "--format=tflite"],
    }[tool]
    command = [sys.executable, os.path.join(REPO, "tools", f"{tool}.py"), *arguments]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "is truncated" in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
