"""Atomic writes (`efficientnetv2_keras.files`): the old content or the new one, never a part."""

import os

import pytest

from efficientnetv2_keras import files


def _leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "deep" / "results.json"
    files.atomic_write_text(target, "first\n")  # the parent is created
    assert target.read_text() == "first\n"
    files.atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"

    def fails(temporary):
        with open(temporary, "w") as handle:
            handle.write("half")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError, match="crash"):
        files.atomic_write(target, fails)
    assert target.read_text() == "second\n" and _leftovers(target.parent) == []
    with pytest.raises(FileExistsError, match="overwrite=True"):
        files.atomic_write_text(target, "third\n", overwrite=False)
    assert target.read_text() == "second\n" and _leftovers(target.parent) == []


def test_the_temporary_keeps_the_target_extension(tmp_path):
    # Keras' save() and save_weights() check the extension of the path they are given.
    seen = []
    files.atomic_write(tmp_path / "last.keras", lambda temporary: (seen.append(temporary), open(temporary, "w").close()))
    files.atomic_write(tmp_path / "x.weights.h5", lambda temporary: (seen.append(temporary), open(temporary, "w").close()))
    assert seen[0].endswith("last.keras") and seen[1].endswith(".weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["last.keras", "x.weights.h5"]
