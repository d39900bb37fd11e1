"""Reading timm's `tf_efficientnetv2_*` checkpoints: a file, a timm model or name, or a state dict.

PyTorch and timm are optional (`pip install efficientnetv2-keras[timm]`): a `.safetensors` file reads
with the `safetensors` package alone; `.pth` files need torch; timm model names need timm (and a network).
"""

import os
import re

import numpy as np

from efficientnetv2_keras.weights.catalog import TIMM_CHECKPOINTS, TIMM_PREFIX, find_timm_checkpoint

# A file name or timm name -> (variant, tag); old timm file names spelled the tags differently.
_NAME_PATTERN = re.compile(
    r"tf_efficientnetv2_(b0|b1|b2|b3|s|m|l|xl)(?:[._-]?(in21k_ft_in1k|in21ft1k|21ft1k|in21k|21k|in1k))?(?![a-z0-9])"
)
_LEGACY_TAGS = {"in21ft1k": "in21k_ft_in1k", "21ft1k": "in21k_ft_in1k", "21k": "in21k", "in21k": "in21k"}


class ConversionError(ValueError):
    """The checkpoint cannot be converted (another architecture, missing tensors, failed check)."""


def import_timm():
    """(timm, torch), or ImportError saying how to install them."""
    try:
        import timm
        import torch
    except Exception as error:  # also RuntimeError: a torchvision built for another torch
        raise ImportError(
            f"timm and torch are needed for this but could not be imported ({type(error).__name__}: "
            f"{error}). Install them with `pip install 'efficientnetv2-keras[timm]'` (torch, timm and "
            "torchvision builds must match), or convert a downloaded .safetensors file, which needs "
            "only the safetensors package."
        ) from error
    return timm, torch


def _numpy(tensor):
    if isinstance(tensor, np.ndarray):
        return tensor
    return tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.cpu().numpy()


def _unwrap(state, where):
    """A bare state dict from a torch.load result: timm training checkpoints nest it."""
    if isinstance(state, dict) and "conv_stem.weight" not in state:
        for key in ("state_dict_ema", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ConversionError(f"{where} holds a {type(state).__name__}, not a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_timm_checkpoint(source):
    """(state dict of numpy arrays, description, name or None) for a checkpoint `source`.

    `source`: a `.safetensors` file, a `.pth`/`.pt`/`.bin` file (torch), a timm model instance, a
    state dict, or a timm model name such as "tf_efficientnetv2_s.in21k" (downloaded by timm).
    """
    if isinstance(source, dict):
        return {k: _numpy(v) for k, v in _unwrap(source, "the state dict").items()}, "a state dict", None
    if hasattr(source, "state_dict") and hasattr(source, "pretrained_cfg"):  # a timm model
        architecture = (source.pretrained_cfg or {}).get("architecture")
        state = {k: _numpy(v) for k, v in source.state_dict().items()}
        return state, f"timm model {architecture}", architecture
    path = os.fspath(source)
    if os.path.isfile(path):
        return {k: _numpy(v) for k, v in _unwrap(_read_file(path), repr(path)).items()}, os.path.abspath(path), None
    if os.sep in path or path.endswith((".safetensors", ".pth", ".pt", ".bin")):
        raise FileNotFoundError(f"Checkpoint file not found: {path!r}.")
    if find_timm_checkpoint(path) is None:  # also a clear error for names that are not released checkpoints
        tags = [n for n in TIMM_CHECKPOINTS if n.startswith(path + ".")]
        raise ConversionError(f"Name the checkpoint with its tag: one of {', '.join(tags)}.")
    timm, _ = import_timm()
    try:
        model = timm.create_model(path, pretrained=True)
    except Exception as error:  # no network, hub errors: say how to do it by hand
        raise ConversionError(
            f"timm could not download {path} ({type(error).__name__}: {error}). Download model.safetensors "
            f"from https://huggingface.co/timm/{path} and pass that file (with name={path!r})."
        ) from error
    return {k: _numpy(v) for k, v in model.state_dict().items()}, f"timm {path}", path


def _read_file(path):
    """The raw state of a checkpoint file, by its extension."""
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as error:
            raise ImportError(
                "Reading .safetensors needs the safetensors package: pip install 'efficientnetv2-keras[timm]'."
            ) from error
        return load_file(path)
    if path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as error:
            raise ImportError(f"Reading {path!r} needs torch: pip install 'efficientnetv2-keras[timm]'.") from error
        return torch.load(path, map_location="cpu", weights_only=True)
    raise ConversionError(f"{path!r}: expected a .safetensors, .pth, .pt or .bin file.")


def name_from_text(text):
    """The timm name (with tag, if any) a file name or path spells, or None."""
    match = _NAME_PATTERN.search(str(text).lower())
    if not match:
        return None
    variant, tag = match.groups()
    name = TIMM_PREFIX + variant
    if tag:
        name += "." + _LEGACY_TAGS.get(tag, tag)
    return name
