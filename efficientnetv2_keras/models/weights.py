"""Weights transfer by layer name: from keras.applications models and files, and between our models.

The official checkpoints cannot be downloaded at run time here, and Keras hosts the ImageNet
weights of B0-B3/S/M/L as keras.applications files. Our layer names equal keras.applications' for
every layer that holds weights, so weights transfer by name. Every transfer is validated in full
before anything is assigned: a failed load leaves the model as it was.

The `weights=` argument of the constructors (`builder.load_weights`) picks among these; this module
never builds one of our models itself.
"""

import collections
import http.client
import json
import os
import re
import tempfile
import urllib.error

import numpy as np

import keras

from efficientnetv2_keras.models.family import MODEL_SPECS, get_model_spec

# Layers of keras.applications models that hold preprocessing constants, not learned weights.
_PREPROCESSING_LAYERS = ("rescaling", "normalization")
HEAD = "predictions"
# keras.applications constructors by variant (XL was never added to keras.applications).
KERAS_APPLICATIONS = {
    "efficientnetv2-b0": "EfficientNetV2B0",
    "efficientnetv2-b1": "EfficientNetV2B1",
    "efficientnetv2-b2": "EfficientNetV2B2",
    "efficientnetv2-b3": "EfficientNetV2B3",
    "efficientnetv2-s": "EfficientNetV2S",
    "efficientnetv2-m": "EfficientNetV2M",
    "efficientnetv2-l": "EfficientNetV2L",
}
# Where keras.applications downloads these weights from, as <variant>.h5 (<variant>_notop.h5 without the
# classifier): BASE_WEIGHTS_PATH in keras/src/applications/efficientnet_v2.py.
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
# Class names of our own layers, as Keras 3 writes them into .weights.h5 files.
_OUR_LAYER_GROUPS = ("stochastic_depth", "adjustable_dropout")


class WeightsMismatchError(ValueError):
    """The weights do not fit the model (another variant, another class count, ...)."""


class WeightsDownloadError(OSError):
    """keras.applications' weights could not be downloaded (no network, a proxy, the server).

    `problem`: what failed and where Keras looks for the file; the message adds the `alternatives`.
    """

    def __init__(self, problem, alternatives="or pass the path of a local weights file instead of 'imagenet'"):
        super().__init__(f"{problem}, {alternatives}.")
        self.problem = problem


def _arrays_by_layer_from_model(source):
    arrays = {}
    for layer in source._flatten_layers(include_self=False, recursive=True):
        if layer.weights and not isinstance(layer, keras.Model):
            arrays[layer.name] = [keras.ops.convert_to_numpy(w) for w in layer.weights]
    return arrays


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _arrays_by_layer_from_legacy_h5(path):
    """Reads a legacy (Keras 2 style) .h5 weights or model file: groups keyed by layer name."""
    import h5py

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            return None
        arrays = {}
        for layer_name in (_decode(n) for n in root.attrs["layer_names"]):
            group = root[layer_name]
            names = [_decode(n) for n in group.attrs.get("weight_names", [])]
            if names:
                arrays[layer_name] = [np.asarray(group[n]) for n in names]
        return arrays


def keras3_weights_layout(path):
    """For a Keras 3 .weights.h5 file: (is it ours?, head class count or None)."""
    import h5py

    with h5py.File(path, "r") as f:
        groups = list(f["layers"].keys()) if "layers" in f else []
        ours = any(g.startswith(_OUR_LAYER_GROUPS) for g in groups)
        classes = None
        if "dense" in groups and "vars" in f["layers/dense"] and "0" in f["layers/dense/vars"]:
            classes = int(f["layers/dense/vars/0"].shape[-1])
        return ours, classes


def layout_mismatch(model, path):
    """None when the Keras 3 weights file `path` holds an array of every shape `model`'s weights have, else
    what differs. Checked before `model.load_weights(path)`: on a mismatch Keras warns once per layer
    ("Skipping nested container ...", ~150 lines for B0) before raising."""
    import h5py

    saved = collections.Counter()
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, item: saved.update([tuple(item.shape)]) if isinstance(item, h5py.Dataset) else None)
    have = collections.Counter(tuple(w.shape) for w in model.weights)
    if not have - saved:  # the file may hold more (e.g. layers' seed-generator state), never fewer
        return None

    def values(counter):
        return sum(int(np.prod(shape)) * count for shape, count in counter.items())

    return (f"the file holds {sum(saved.values())} arrays with {values(saved):,} values, {model.name!r} has "
            f"{sum(have.values())} with {values(have):,}")


def load_checked(model, path):
    """`model.load_weights(path)` for a Keras 3 weights file, after `layout_mismatch`: a file of another
    layout raises a ValueError saying what differs (without Keras' per-layer warnings first)."""
    mismatch = layout_mismatch(model, path)
    if mismatch:
        raise ValueError(mismatch)
    model.load_weights(path)


def _guess_variant(arrays):
    """Names the variant whose block structure matches the given weights, or None."""
    try:
        stem = arrays["stem_conv"][0].shape[-1]
        head = arrays["top_conv"][0].shape[-1]
    except (KeyError, IndexError):
        return None
    repeats = {}
    for name in arrays:
        match = re.match(r"block(\d+)([a-z]+)_project_conv$", name)
        if match:
            repeats[int(match.group(1))] = repeats.get(int(match.group(1)), 0) + 1
    signature = (stem, tuple(repeats[k] for k in sorted(repeats)), head)
    for spec in MODEL_SPECS.values():
        stages = spec.scaled_stages()
        if signature == (spec.stem_filters, tuple(s.repeats for s in stages), spec.head_width):
            return spec.name
    return None


def _assign_by_name(model, arrays, source_desc, skip_head=False):
    targets = {
        layer.name: layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if layer.weights and not isinstance(layer, keras.Model)
    }
    arrays = {k: v for k, v in arrays.items() if k not in _PREPROCESSING_LAYERS}

    def variant_error(detail):
        guess = _guess_variant(arrays)
        hint = f" They look like {guess} weights." if guess else ""
        return WeightsMismatchError(
            f"The weights in {source_desc} do not fit model {model.name!r}: {detail}.{hint} "
            "Build the matching variant (e.g. EfficientNetV2S for efficientnetv2-s weights)."
        )

    plan = []
    for name, layer in targets.items():
        if name not in arrays:
            if name == HEAD and skip_head:
                continue
            if name == HEAD:
                raise WeightsMismatchError(
                    f"The weights in {source_desc} have no classifier ('{HEAD}' layer) but the "
                    "model has one. Build the model with include_top=False, or pass skip_head=True "
                    "to keep the model's freshly initialized head."
                )
            raise variant_error(f"they have no layer {name!r}")
        source = arrays[name]
        shapes = [tuple(w.shape) for w in layer.weights]
        source_shapes = [tuple(a.shape) for a in source]
        if shapes != source_shapes:
            if name == HEAD:
                if skip_head:
                    continue
                raise WeightsMismatchError(
                    f"The weights in {source_desc} have a classifier for "
                    f"{source_shapes[0][-1]} classes, the model has classes={shapes[0][-1]}. Build "
                    f"with classes={source_shapes[0][-1]}, or include_top=False for a backbone, or "
                    "pass skip_head=True to keep a fresh head (transfer learning)."
                )
            raise variant_error(f"layer {name!r} has shapes {shapes}, the weights {source_shapes}")
        plan.append((layer, source))
    extra = sorted(set(arrays) - set(targets) - {HEAD})
    if extra:
        raise variant_error(f"they have layers the model lacks: {extra[:5]}")
    for layer, source in plan:
        for variable, value in zip(layer.weights, source):
            variable.assign(value)
    return model


def transfer_weights(model, source, source_desc, skip_head=False):
    """Copies the weights of the model `source` into `model` by layer name (all checked before any is set)."""
    return _assign_by_name(model, _arrays_by_layer_from_model(source), source_desc, skip_head)


def keras_applications_model(spec, include_top, classes, weights=None):
    name = KERAS_APPLICATIONS.get(spec.name)
    if name is None:
        raise ValueError(
            f"keras.applications has no {spec.name} model, so there are no keras.applications "
            "weights for it; load weights saved from this package (model.save_weights) instead."
        )
    constructor = getattr(keras.applications, name)
    kwargs = {"include_top": include_top, "weights": weights}
    if include_top:
        kwargs["classes"] = classes
        size = spec.eval_size
        channels_first = keras.config.image_data_format() == "channels_first"
        kwargs["input_shape"] = (3, size, size) if channels_first else (size, size, 3)
    return constructor(**kwargs)


def model_spec_of(model, spec):
    if spec is not None:
        return get_model_spec(spec)
    try:
        return get_model_spec(model.name)
    except ValueError:
        raise ValueError(
            f"Cannot tell which EfficientNetV2 variant model {model.name!r} is; pass spec='s' "
            "(or the variant's name)."
        ) from None


def load_weights_from_keras_applications(model, source, skip_head=False, spec=None):
    """Copies weights from a keras.applications EfficientNetV2 into `model`, by layer name.

    Args:
      model: one of our EfficientNetV2 models (any include_top/pooling).
      source: a `keras.applications.EfficientNetV2*` model instance, or the path of its weights:
        a legacy `.h5` (the files keras.applications downloads), a Keras 3 `.weights.h5` written by
        `model.save_weights`, or a `.keras` model file.
      skip_head: keep `model`'s own classifier when the source has none or another class count
        (transfer learning). A source head is ignored anyway when `model` has include_top=False.
      spec: the variant of `model`, when its name is not the variant's (only needed for
        Keras 3 `.weights.h5` sources, which are read through a keras.applications model).
    Raises:
      WeightsMismatchError: the weights belong to another variant or class count; nothing assigned.
    """
    if isinstance(source, keras.Model):
        return transfer_weights(model, source, f"model {source.name!r}", skip_head)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    if path.endswith(".keras"):
        source_model = keras.saving.load_model(path, compile=False)
        return transfer_weights(model, source_model, repr(path), skip_head)
    if path.endswith(".weights.h5"):
        _, classes = keras3_weights_layout(path)
        reference = keras_applications_model(model_spec_of(model, spec), classes is not None, classes)
        try:
            load_checked(reference, path)
        except ValueError as error:
            raise WeightsMismatchError(
                f"{path!r} does not fit {reference.name}, the keras.applications counterpart of "
                f"model {model.name!r}; it probably belongs to another variant ({error})"
            ) from None
        return transfer_weights(model, reference, repr(path), skip_head)
    arrays = _arrays_by_layer_from_legacy_h5(path)
    if arrays is None:
        raise ValueError(
            f"{path!r} is not a weights file this package can read: pass a keras.applications "
            ".h5 file, a .weights.h5 file or a .keras model file."
        )
    return _assign_by_name(model, arrays, repr(path), skip_head)


def load_imagenet_weights(model, spec, skip_head=False):
    """keras.applications' ImageNet-1k weights of `spec` (downloaded and cached by Keras), by layer name."""
    has_top = any(layer.name == HEAD for layer in model.layers)
    classes = model.get_layer(HEAD).units if has_top else None
    if has_top and classes != 1000 and not skip_head:
        raise WeightsMismatchError(
            f"ImageNet weights have 1000 classes, the model has classes={classes}. Use "
            "classes=1000, or include_top=False and add your own head."
        )
    try:
        reference = keras_applications_model(spec, has_top, 1000, weights="imagenet")
    except Exception as error:  # keras.utils.get_file raises urllib's errors as a bare Exception
        if not isinstance(error, (OSError, http.client.HTTPException)) and not str(error).startswith("URL fetch"):
            raise
        raise download_error(spec, has_top, error) from error
    return transfer_weights(model, reference, "keras.applications ImageNet weights", skip_head)


def keras_cache_path(file_name):
    """Where keras.utils.get_file looks for a keras.applications weights file before downloading it:
    <Keras home>/models/<file>, Keras home being $KERAS_HOME, else ~/.keras, else (not writable) /tmp/.keras
    (keras/src/backend/config.py and keras/src/utils/file_utils.py get_file)."""
    try:
        from keras.src.backend.config import keras_home  # private: how Keras read $KERAS_HOME at import

        home = keras_home()
    except ImportError:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(home, "models", file_name)


def download_error(spec, include_top, error):
    """A WeightsDownloadError for `spec`'s keras.applications weights: the URL, the reason, the cache file."""
    file_name = spec.name + (".h5" if include_top else "_notop.h5")
    cause = error.__context__ if isinstance(error.__context__, urllib.error.URLError) else error
    reason = getattr(cause, "reason", None) or cause
    if isinstance(cause, urllib.error.HTTPError):
        reason = f"HTTP {cause.code} {cause.reason}"
    return WeightsDownloadError(
        f"Could not download the ImageNet weights of {spec.name} from {KERAS_WEIGHTS_URL}{file_name} ({reason}). "
        f"Keras looks for that file in {keras_cache_path(file_name)} ($KERAS_HOME/models when KERAS_HOME is set) "
        "before downloading it: copy it there (behind a proxy, set https_proxy)"
    )


def weights_info_path(path):
    """The JSON written beside a converted weights file: `x.weights.h5` -> `x.json`."""
    path = os.fspath(path)
    stem = path[: -len(".weights.h5")] if path.endswith(".weights.h5") else os.path.splitext(path)[0]
    return stem + ".json"


def _model_input_normalization(model):
    """What the model's preprocessing layers apply: "imagenet", "symmetric", or None (none inside)."""
    names = {layer.name for layer in model.layers}
    if "normalization" in names:
        return "imagenet"
    return "symmetric" if "rescaling" in names else None


def check_input_normalization(model, path):
    """Weights whose JSON names another input normalization than the model applies are refused."""
    info_path = weights_info_path(path)
    if not os.path.exists(info_path):
        return
    try:
        with open(info_path, encoding="utf-8") as f:
            wanted = json.load(f).get("input_normalization")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"Cannot read the weights information {info_path!r}: {error}. Fix or remove it.") from None
    have = _model_input_normalization(model)
    if wanted and have and wanted != have:
        raise WeightsMismatchError(
            f"{path!r} was trained on inputs normalized {wanted!r} (see {info_path!r}), but model "
            f"{model.name!r} normalizes {have!r}. Build it with input_normalization={wanted!r}, or with "
            "include_preprocessing=False and normalize the inputs yourself."
        )
