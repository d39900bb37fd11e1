"""Loading a `.keras` model file with an error that names what is wrong with it.

`keras.saving.load_model` answers "File not found" for a file that exists but is empty, truncated or
not a zip archive at all, and a raw zip or h5py error for a damaged one. `load_model_file` tells
these apart (missing file, wrong kind of file, truncated or damaged archive, an archive whose model
cannot be rebuilt here) and says how to fix each; evaluate, predict and export load through it.

A compiled model is loaded under the dtype policy it was built with (`saved_dtype_policy`): under
mixed_float16, `compile` wraps the optimizer in a `LossScaleOptimizer`, and a file loaded under another
policy gets a bare optimizer whose variables Keras then skips loading (a warning only), losing the
EMA averages that export and evaluation read from it.
"""

import collections
import contextlib
import json
import os
import zipfile

import keras

# What `model.save("x.keras")` writes (Keras 3): the architecture and the weights are required.
REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
_ZIP_SIGNATURE = b"PK\x03\x04"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# How Keras 3 serializes a layer's (non-quantized) dtype policy in its config: {"class_name": one of
# these, "config": {"name": "mixed_float16"}, ...}.
_DTYPE_POLICY_CLASSES = ("DTypePolicy", "FloatDTypePolicy")


class ModelFileError(ValueError):
    """A model file that exists but cannot be loaded; the message names the problem and the fix."""


class IncompatibleModelFileError(ModelFileError):
    """A sound Keras archive whose model (or training configuration) cannot be rebuilt here."""


def _keras_version(path):
    """The Keras version recorded in the archive's metadata.json, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None


def check_model_file(path):
    """Raises `FileNotFoundError` or `ModelFileError` unless `path` looks like a complete `.keras` archive.

    Cheap: reads the zip directory, not the weights. A damaged member is only found when loading
    (`load_model_file` then checks the CRCs).
    """
    path = os.fspath(path)
    _check_is_keras_file(path)
    _check_is_zip_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelFileError(
            f"{path!r} is a damaged zip archive ({error}). Copy it again, or use another checkpoint."
        ) from None
    missing = [name for name in REQUIRED_MEMBERS if name not in names]
    if missing:
        raise ModelFileError(
            f"{path!r} is a zip archive but not a Keras model: it lacks {', '.join(missing)} (it holds "
            f"{', '.join(sorted(names)[:5]) or 'nothing'}). Give a file written by model.save('x.keras')."
        )
    return path


def _check_is_keras_file(path):
    """A file (not a folder) named .keras."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No model file at {path!r}. Check the path; a training run writes best.keras and "
            "last.keras into its --model_dir."
        )
    if os.path.isdir(path):
        raise ModelFileError(
            f"{path!r} is a directory, not a .keras file. A SavedModel directory cannot be loaded as a "
            "Keras model; give the .keras file that training wrote (e.g. runs/x/best.keras)."
        )
    if not path.endswith(".keras"):
        hint = (
            " It looks like a weights file: build the model and load them (build_model(variant, "
            "weights=PATH), or tools/export.py --variant=NAME --weights=PATH)."
            if path.endswith(".h5")
            else ""
        )
        raise ModelFileError(f"{path!r} is not a .keras file (one written by model.save('x.keras')).{hint}")


def _check_is_zip_archive(path):
    """Not empty and a complete zip archive; an unfinished zip or an HDF5 file each say so."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if size == 0:
        raise ModelFileError(
            f"{path!r} is empty (0 bytes): the save or copy that wrote it did not finish. Use another "
            "checkpoint (best.keras / last.keras) or copy the file again."
        )
    if zipfile.is_zipfile(path):
        return
    if head.startswith(_ZIP_SIGNATURE):
        raise ModelFileError(
            f"{path!r} is truncated ({size:,} bytes; the end of its zip archive is missing): the "
            "save, copy or download that wrote it did not finish. Copy it again, or use another "
            "checkpoint (best.keras / last.keras)."
        )
    if head.startswith(_HDF5_SIGNATURE):
        raise ModelFileError(
            f"{path!r} is an HDF5 file, not a .keras zip archive: a weights file (.weights.h5) or "
            "a legacy .h5 model renamed to .keras? Load weights with build_model(variant, "
            "weights=PATH) under their own name."
        )
    raise ModelFileError(
        f"{path!r} is not a .keras model archive (not a zip file; it starts with {head[:8]!r}). "
        "Give a file written by model.save('x.keras')."
    )


@contextlib.contextmanager
def dtype_policy_scope(policy):
    """Sets Keras' global dtype policy inside the block and restores the previous one, also on errors.

    policy: a policy name ("float32", "mixed_float16", ...), or None to leave the global policy alone.
    """
    if policy is None:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def dtype_policy_configs(config):
    """Every layer dtype policy serialized in a Keras config (dicts; change them to change the policies)."""
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "dtype" and isinstance(value, dict) and value.get("class_name") in _DTYPE_POLICY_CLASSES:
                yield value
            else:
                yield from dtype_policy_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from dtype_policy_configs(value)


def saved_dtype_policy(path):
    """The dtype policy most layers of a `.keras` file compute in (the global policy the model was built
    under; a few layers, e.g. the classifier, are float32 by choice), or None when the file records none."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None
    names = collections.Counter(policy.get("config", {}).get("name") for policy in dtype_policy_configs(config))
    names.pop(None, None)
    return names.most_common(1)[0][0] if names else None


def _damaged_member(path):
    """The first member whose CRC does not match, or the zip error, or None when the archive is sound."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return str(error)


def load_model_file(path, compile=False):
    """`keras.saving.load_model(path, compile=compile)` with errors that name the problem and the fix.

    With compile=True the file is loaded under the dtype policy its layers were built with
    (`saved_dtype_policy`), so a mixed_float16 model gets back its LossScaleOptimizer and the optimizer
    state (EMA averages) in it; the global policy is restored afterwards.

    Raises:
      FileNotFoundError: nothing at `path`.
      ModelFileError: not a `.keras` file, an empty / truncated / damaged archive, or an archive
        that is not a Keras model.
      IncompatibleModelFileError (a ModelFileError): a sound archive whose model (with compile=True:
        or its loss, metrics, optimizer) cannot be rebuilt here; the message gives Keras' reason and
        the Keras version that saved it.
    """
    path = check_model_file(path)
    try:
        # Under the policy it was trained with, a compiled model gets the optimizer it was saved with.
        with dtype_policy_scope(saved_dtype_policy(path) if compile else None):
            return keras.saving.load_model(path, compile=compile)
    except Exception as error:  # noqa: BLE001 - diagnosed below, re-raised with the cause attached
        damaged = _damaged_member(path)
        if damaged is not None:
            raise ModelFileError(
                f"{path!r} is damaged: {damaged!r} does not match its checksum (a copy or download "
                "that changed bytes, or a failing disk). Copy it again, or use another checkpoint."
            ) from error
        saved_with = _keras_version(path)
        versions = f" It was saved with Keras {saved_with}; this is Keras {keras.__version__}." if saved_with else ""
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise IncompatibleModelFileError(
            f"{path!r} is a Keras archive whose model cannot be rebuilt here: {reason}.{versions} "
            "Custom layers, losses or metrics must be imported (registered) before loading; a file "
            "from another package or Keras version may need that version, or rebuild the model and "
            "load only its weights."
        ) from error
