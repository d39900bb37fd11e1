"""Converting timm's `tf_efficientnetv2_*` checkpoints into this package's `.weights.h5` files.

timm holds the released TensorFlow checkpoints (ImageNet-1k, ImageNet-21k and 21k-finetuned-on-1k,
B0-B3/S/M/L/XL) as PyTorch state dicts. Their modules map one to one onto our layers:

    timm                                   ours (keras.applications names)
    conv_stem, bn1                         stem_conv, stem_bn
    blocks.{s}.{i}: ConvBnAct              block{s+1}{letters(i)}_ project_conv, project_bn
                    (Fused-MBConv, expand 1)
                    EdgeResidual           expand_conv, expand_bn, project_conv, project_bn
                    (Fused-MBConv)         (conv_exp, bn1, conv_pwl, bn2)
                    InvertedResidual       expand_conv, expand_bn, dwconv2, bn, se_reduce, se_expand,
                    (MBConv)               project_conv, project_bn (conv_pw, bn1, conv_dw, bn2,
                                           se.conv_reduce, se.conv_expand, conv_pwl, bn3)
    conv_head, bn2, classifier             top_conv, top_bn, predictions

Tensors change layout (PyTorch OIHW kernels to Keras HWIO, depthwise to HW C 1, Linear to its
transpose); BatchNorm carries weight, bias, running mean and variance as gamma, beta, moving mean
and variance. Both sides use TensorFlow "SAME" padding and epsilon 1e-3, so the outputs agree
to float32 rounding; `convert_timm` checks that on a random batch whenever timm can be imported.

PyTorch and timm are optional (`pip install efficientnetv2-keras[timm]`): a `.safetensors` file
converts with the `safetensors` package alone; `.pth` files need torch; timm model names and the
numeric check need timm. Reading the checkpoint is `timm_checkpoint`'s.
"""

import datetime
import hashlib
import json
import os
import re

import keras
import numpy as np

from efficientnetv2_keras.files import atomic_output
from efficientnetv2_keras.models.builder import block_letters, build_model
from efficientnetv2_keras.models.family import FUSED_MBCONV, MODEL_SPECS, get_model_spec
from efficientnetv2_keras.models.weights import weights_info_path
from efficientnetv2_keras.weights.catalog import (
    NORMALIZATION_MEAN_STD,
    TAG_MEANINGS,
    TIMM_CHECKPOINTS,
    TIMM_PREFIX,
    find_timm_checkpoint,
    timm_architecture,
)
from efficientnetv2_keras.weights.info import INFO_FORMAT
from efficientnetv2_keras.weights.timm_checkpoint import (
    ConversionError,
    import_timm,
    name_from_text,
    read_timm_checkpoint,
)

# Logits of the converted model may differ from timm's by this much (float32), relative to
# max(1, largest |logit|): real checkpoints have logits of ~10.
DEFAULT_TOLERANCE = 1e-3
_BN = ("weight", "bias", "running_mean", "running_var")


# ------------------------------------------------------------------------------------------------
# Mapping tensors.
# ------------------------------------------------------------------------------------------------


def infer_variant(state):
    """Our variant whose stem width, blocks per stage and head width match the state dict, or None."""
    try:
        stem = state["conv_stem.weight"].shape[0]
        head = state["conv_head.weight"].shape[0]
    except KeyError:
        return None
    blocks = {}
    for key in state:
        match = re.match(r"blocks\.(\d+)\.(\d+)\.", key)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
    repeats = tuple(blocks[s] for s in sorted(blocks))
    for spec in MODEL_SPECS.values():
        if (stem, repeats, head) == (spec.stem_filters, tuple(s.repeats for s in spec.scaled_stages()), spec.head_width):
            return spec.name
    return None


def _conv(kernel):
    return [np.transpose(kernel, (2, 3, 1, 0))]  # OIHW -> HWIO


def _module_pairs(spec):
    """(our layer, timm module, kind) for every layer with weights, in network order."""
    pairs = [("stem_conv", "conv_stem", "conv"), ("stem_bn", "bn1", "bn")]
    for s, stage in enumerate(spec.scaled_stages()):
        for i in range(stage.repeats):
            ours, theirs = f"block{s + 1}{block_letters(i)}_", f"blocks.{s}.{i}."
            if stage.block == FUSED_MBCONV and stage.expand_ratio == 1:  # timm ConvBnAct
                pairs += [(ours + "project_conv", theirs + "conv", "conv"), (ours + "project_bn", theirs + "bn1", "bn")]
                continue
            if stage.block == FUSED_MBCONV:  # timm EdgeResidual
                pairs += [(ours + "expand_conv", theirs + "conv_exp", "conv"), (ours + "expand_bn", theirs + "bn1", "bn")]
                project_bn = "bn2"
            elif stage.expand_ratio != 1:  # timm InvertedResidual
                pairs += [
                    (ours + "expand_conv", theirs + "conv_pw", "conv"),
                    (ours + "expand_bn", theirs + "bn1", "bn"),
                    (ours + "dwconv2", theirs + "conv_dw", "depthwise"),
                    (ours + "bn", theirs + "bn2", "bn"),
                ]
                project_bn = "bn3"
            else:
                raise ConversionError(
                    f"{spec.name} stage {s + 1} is an MBConv stage without expansion, which no released "
                    "checkpoint has (timm builds it as a DepthwiseSeparableConv block)."
                )
            if stage.se_ratio > 0:
                pairs += [
                    (ours + "se_reduce", theirs + "se.conv_reduce", "conv_bias"),
                    (ours + "se_expand", theirs + "se.conv_expand", "conv_bias"),
                ]
            pairs += [(ours + "project_conv", theirs + "conv_pwl", "conv"), (ours + "project_bn", theirs + project_bn, "bn")]
    pairs += [("top_conv", "conv_head", "conv"), ("top_bn", "bn2", "bn"), ("predictions", "classifier", "dense")]
    return pairs


def timm_to_keras(state, spec):
    """{our layer name: [arrays in Keras weight order]} from a timm state dict of `spec`'s variant.

    Every tensor of the state dict must be used and every layer found (BatchNorm's
    `num_batches_tracked` counters excepted); shapes are checked when the model takes them.
    """
    spec = get_model_spec(spec)
    used, arrays, missing = set(), {}, []

    def take(key):
        if key not in state:
            missing.append(key)
            return None
        used.add(key)
        return np.asarray(state[key], dtype=np.float32)

    for ours, theirs, kind in _module_pairs(spec):
        if kind == "bn":
            values = [take(f"{theirs}.{field}") for field in _BN]
            used.add(f"{theirs}.num_batches_tracked")
        elif kind == "depthwise":
            values = [take(theirs + ".weight")]
            values = [np.transpose(values[0], (2, 3, 0, 1))] if values[0] is not None else values  # O1HW -> HWO1
        elif kind == "dense":
            weight, bias = take(theirs + ".weight"), take(theirs + ".bias")
            values = [weight.T if weight is not None else None, bias]
        else:
            weight = take(theirs + ".weight")
            values = _conv(weight) if weight is not None else [None]
            if kind == "conv_bias":
                values.append(take(theirs + ".bias"))
        arrays[ours] = values
    unused = sorted(set(state) - used)
    if missing or unused:
        guess = infer_variant(state)
        hint = f" The tensors look like {guess}'s." if guess and guess != spec.name else ""
        raise ConversionError(
            f"The checkpoint does not fit timm's {timm_architecture(spec)} ({spec.name}): missing "
            f"{missing[:4]}{'...' if len(missing) > 4 else ''}, unused {unused[:4]}"
            f"{'...' if len(unused) > 4 else ''}.{hint}"
        )
    return arrays


def assign(model, arrays):
    """Assigns `timm_to_keras` arrays to our model, after checking every shape (nothing is half-done)."""
    plan = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not layer.weights or layer.name not in arrays:
            if layer.weights:
                raise ConversionError(f"No tensors for layer {layer.name!r} of {model.name}.")
            continue
        values = arrays[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        if expected != [tuple(v.shape) for v in values]:
            raise ConversionError(
                f"Layer {layer.name!r} has shapes {expected}, the checkpoint "
                f"{[tuple(v.shape) for v in values]}: another variant or class count?"
            )
        plan.append((layer, values))
    for layer, values in plan:
        for variable, value in zip(layer.weights, values):
            variable.assign(value)
    return model


# ------------------------------------------------------------------------------------------------
# Metadata, the numeric check, the whole conversion.
# ------------------------------------------------------------------------------------------------


def _released_eval_crop(size):
    """The released code's eval crop: size/(size+32) below 320 px, else the whole image."""
    return round(size / (size + 32), 3) if size < 320 else 1.0


def _metadata(spec, name, classes):
    """Training facts of the checkpoint: from the catalogue when its tag is known, else the variant's."""
    entry = find_timm_checkpoint(name) if name else None
    tag = entry.tag if entry else None
    if entry is None and classes == 21843:
        tag = "in21k"
        entry = TIMM_CHECKPOINTS.get(f"{timm_architecture(spec)}.in21k")
    if entry is not None:
        if entry.classes != classes:
            raise ConversionError(
                f"{entry.name} has {entry.classes} classes but the checkpoint's classifier has {classes}: "
                "is `name` right?"
            )
        facts = {
            "train_size": entry.train_size, "eval_size": entry.eval_size, "crop_pct": entry.crop_pct,
            "crop_mode": entry.crop_mode, "input_normalization": entry.input_normalization,
            "timm_top1": entry.timm_top1, "released_top1": entry.released_top1,
        }
    else:
        ambiguous = [c for c in TIMM_CHECKPOINTS.values() if c.variant == spec.name and c.classes == classes]
        if len({c.input_normalization for c in ambiguous}) > 1:
            raise ConversionError(
                f"Cannot tell which {spec.name} checkpoint this is, and its {classes}-class checkpoints "
                "were trained on differently normalized inputs: pass name= one of "
                f"{', '.join(c.name for c in ambiguous)}."
            )
        facts = {
            "train_size": spec.train_size, "eval_size": spec.eval_size,
            "crop_pct": _released_eval_crop(spec.eval_size), "crop_mode": "center",
            "input_normalization": spec.input_normalization, "timm_top1": None, "released_top1": None,
        }
    mean, std = NORMALIZATION_MEAN_STD[facts["input_normalization"]]
    return {
        "timm_name": entry.name if entry else (name.split(".")[0] if name else timm_architecture(spec)),
        "tag": tag,
        "pretrained_on": TAG_MEANINGS.get(tag),
        "classes": int(classes),
        **facts,
        "timm_mean": list(mean),
        "timm_std": list(std),
    }


def compare_with_timm(state, spec, model, image_size=96, batch=2, seed=0):
    """Max |logit difference| between timm's model holding `state` and our converted `model`.

    `model` must be built with include_preprocessing=False and classifier_activation=None: both
    networks get the same already-normalized random batch. Returns (max abs difference, max |logit|).
    """
    timm, torch = import_timm()
    spec = get_model_spec(spec)
    classes = int(state["classifier.weight"].shape[0])
    reference = timm.create_model(timm_architecture(spec), pretrained=False, num_classes=classes)
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    reference.eval()
    images = np.random.default_rng(seed).standard_normal((batch, image_size, image_size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    got = keras.ops.convert_to_numpy(model(images, training=False))  # eager: no tracing of a deep graph
    return float(np.max(np.abs(got - expected))), float(np.max(np.abs(expected)))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_output_name(name):
    return f"{name}.weights.h5"


def convert_timm(source, output, *, name=None, variant=None, verify="auto", tolerance=DEFAULT_TOLERANCE,
                 verify_size=96, overwrite=False):
    """Converts a timm `tf_efficientnetv2_*` checkpoint into our `.weights.h5` plus a JSON beside it.

    Args:
      source: a `.safetensors` or `.pth` file, a timm model name with its tag
        ("tf_efficientnetv2_s.in21k": timm downloads it), a timm model, or a state dict.
      output: the `.weights.h5` path to write, or a folder (the file is then named after the
        checkpoint, e.g. `tf_efficientnetv2_s.in21k.weights.h5`). The JSON goes beside it
        (`x.weights.h5` -> `x.json`).
      name: the timm name with tag, when `source` does not spell it (a file called
        `model.safetensors`): it selects the recorded sizes, crop and normalization.
      variant: ours ("s", "efficientnetv2-xl"); None = inferred from the tensors' shapes.
      verify: compare our logits with timm's on a random batch: True, False, or "auto" (when timm
        can be imported). A difference above `tolerance` x max(1, largest |logit|) is an error and
        nothing is written.
      verify_size: the random batch's image size.
      overwrite: replace existing output files (otherwise an error).
    Returns:
      The information written to the JSON (a dict).
    Raises:
      ConversionError (not a released EfficientNetV2 checkpoint, or the check failed),
      FileExistsError, FileNotFoundError, ImportError (an optional package is missing).
    """
    if verify not in (True, False, "auto"):
        raise ValueError(f"verify must be True, False or 'auto', got {verify!r}.")
    state, description, spec, name = _read_checkpoint(source, name, variant)
    arrays = timm_to_keras(state, spec)
    classes = int(arrays["predictions"][0].shape[1])
    info = _metadata(spec, name, classes)
    path, json_path = _output_paths(output, info["timm_name"], overwrite)
    model = build_model(spec, include_top=True, classes=classes, classifier_activation=None,
                        include_preprocessing=False)
    assign(model, arrays)
    check = _verify(state, spec, model, verify, tolerance, verify_size)
    info = {
        "format": INFO_FORMAT,
        "variant": spec.name,
        "source": description,
        **info,
        "weights_file": os.path.basename(path),
        "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "check": check,
    }
    # Both renamed into place only once both are written: the weights file first, then its JSON.
    with atomic_output(json_path) as json_temporary, atomic_output(path) as weights_temporary:
        model.save_weights(weights_temporary)
        info["sha256"] = _sha256(weights_temporary)
        with open(json_temporary, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
    info["weights_path"] = os.path.abspath(path)
    return info


def _read_checkpoint(source, name, variant):
    """(state dict, description, our variant's spec, timm name or None); the variant is inferred from
    the tensors when not given, and must agree with the name."""
    state, description, source_name = read_timm_checkpoint(source)
    name = name or source_name or name_from_text(description)
    if name:
        find_timm_checkpoint(name)
    inferred = infer_variant(state)
    if variant is None:
        if inferred is None:
            raise ConversionError(
                f"{description} is not an EfficientNetV2 checkpoint of timm's tf_efficientnetv2_* "
                "models (its stem, blocks per stage and head match none of B0-B3/S/M/L/XL); timm's "
                "efficientnetv2_rw_* models are other architectures."
            )
        variant = inferred
    spec = get_model_spec(variant)
    if name and get_model_spec(name.split(".")[0][len(TIMM_PREFIX):]).name != spec.name:
        raise ConversionError(f"name={name!r} is not a {spec.name} checkpoint.")
    return state, description, spec, name


def _output_paths(output, timm_name, overwrite):
    """(the .weights.h5 path, its JSON path): `output`, or a file named after the checkpoint in the
    folder `output`; existing files only with `overwrite`."""
    path = os.fspath(output)
    if os.path.isdir(path) or not path.endswith(".weights.h5"):
        if not os.path.isdir(path) and os.path.splitext(path)[1]:
            raise ValueError(f"output must end in .weights.h5 or be a folder, got {path!r}.")
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, default_output_name(timm_name))
    json_path = weights_info_path(path)
    for existing in (path, json_path):
        if os.path.exists(existing) and not overwrite:
            raise FileExistsError(f"{existing!r} exists: remove it or pass overwrite=True (--overwrite).")
    return path, json_path


def _verify(state, spec, model, verify, tolerance, verify_size):
    """The JSON's "check": our logits against timm's on a random batch (when asked, or "auto" and timm
    imports); a difference beyond `tolerance` is an error and nothing is written."""
    if not verify:
        return {"verified": False}
    try:
        timm_module, torch = import_timm()
    except ImportError:
        if verify is True:
            raise
        return {"verified": False, "reason": "timm could not be imported"}
    difference, scale = compare_with_timm(state, spec, model, image_size=verify_size)
    if difference > tolerance * max(1.0, scale):
        raise ConversionError(
            f"The converted {spec.name} differs from timm's by {difference:.3g} (largest logit "
            f"{scale:.3g}, tolerance {tolerance:g} relative): nothing was written."
        )
    return {"verified": True, "max_abs_logit_difference": difference, "max_abs_logit": scale,
            "image_size": verify_size, "timm": timm_module.__version__, "torch": torch.__version__}
