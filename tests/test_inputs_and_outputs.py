"""Inputs and outputs a user gets wrong, and what they are told: empty class folders, image formats,
recipe keys, source options; files written with the user's umask. Property-based tests (hypothesis)
feed malformed recipe overrides and odd image folders: each is refused with a message naming the key
or the path, never a traceback from deep inside."""

import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efficientnetv2_keras.data import get_source
from efficientnetv2_keras.data.sources import IMAGE_EXTENSIONS, ImageFolderSource
from efficientnetv2_keras.files import atomic_write, atomic_write_text
from efficientnetv2_keras.hparams import ConfigError, load_config


def _png(path, value=0):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.full((4, 4, 3), value, np.uint8)).numpy())


def test_an_empty_class_folder_is_refused_with_its_path(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    (tmp_path / "bird").mkdir()
    with pytest.raises(ValueError, match=f"The class folder '{tmp_path / 'bird'}' holds no image files"):
        ImageFolderSource(tmp_path, validate=None)
    (tmp_path / "bird" / "c.webp").write_bytes(b"RIFF0000WEBPVP8 ")
    with pytest.raises(ValueError, match=r"holds no image files .* \(it has 1 other file\(s\), e.g. 'c.webp'\)"):
        ImageFolderSource(tmp_path, validate=None)


def test_one_list_of_image_formats_for_folders_and_predict(tmp_path, tiny_spec):
    assert ".webp" not in IMAGE_EXTENSIONS
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    (tmp_path / "dog" / "c.webp").write_bytes(b"RIFF0000WEBPVP8 ")
    source = ImageFolderSource(tmp_path, validate=None)
    assert source.num_examples("train") == 2  # the .webp is left out (and logged)
    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.predict import predict_files

    model = ev2.build_model(tiny_spec, classes=2, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"Not an accepted image format \(\.jpg, .*\): .*c\.webp"):
        predict_files(model, [str(tmp_path / "dog" / "c.webp")])


def test_image_size_below_32_names_the_recipe_key():
    with pytest.raises(ConfigError, match=r"progressive\.image_size values must be >= 32, got 16"):
        load_config("digits_demo", ["progressive.image_size=[16,48]"])


def test_a_source_option_the_source_does_not_take_is_named(tmp_path):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    with pytest.raises(ValueError, match=r"takes no option 'image_size' \(data\.source_options="):
        get_source(f"folder:{tmp_path}", image_size=48)


def test_written_files_respect_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write(tmp_path / "b.bin", lambda path: open(path, "wb").close())
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


# ------------------------------------------------------------------------------------------------
# Property-based: malformed recipes and odd folders are refused with a message naming what is wrong.
# ------------------------------------------------------------------------------------------------

_KEYS = ["train.epochs", "train.batch_size", "train.lr_base", "progressive.image_size", "progressive.num_stages",
         "data.minival", "eval.validation_freq", "runtime.strategy", "train.optimizer", "model.dropout_rate"]
_BAD_VALUES = st.one_of(
    st.sampled_from(["-1", "0", "abc", "[1,2,3]", "{}", "nan", "1e999", "[5,1]", "true", "''", "[", "]]"]),
    st.text(alphabet="[]{},:-.e0123456789abc'\" ", min_size=1, max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(_KEYS), value=_BAD_VALUES)
def test_malformed_overrides_are_refused_naming_the_key(key, value):
    try:
        load_config("digits_demo", [f"{key}={value}"])
    except ConfigError as error:
        assert key in str(error) or key.split(".")[0] in str(error), str(error)
    # Values that happen to be valid load; nothing else may escape (TypeError, KeyError, ...).


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(layout=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                 st.sampled_from(["x.png", "y.jpg", "z.webp", "e.png", ".hidden"]),
                                 st.sampled_from(["png", "garbage", "empty"])), max_size=6))
def test_odd_image_folders_are_refused_naming_the_path(tmp_path_factory, layout):
    root = tmp_path_factory.mktemp("folder")
    for cls, name, content in layout:
        path = root / cls / name
        if content == "png" and name.endswith(".png"):
            _png(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"" if content == "empty" else b"not an image")
    try:
        source = ImageFolderSource(root, validate="decode")
    except (ValueError, FileNotFoundError) as error:
        assert str(root) in str(error), str(error)
    else:
        assert source.num_classes >= 2 and source.num_examples("train") > 0
