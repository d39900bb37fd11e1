"""Validation of recipe values against the schema: types (YAML scalars converted), ranges, choices, and the
rules that involve more than one key. Every error is a `ConfigError` naming the key, where the value came
from and, for an unknown key, the nearest valid one."""

import dataclasses
import difflib
import math
import typing
from typing import Union

from efficientnetv2_keras.hparams.schema import SECTION_TYPES, ConfigError
from efficientnetv2_keras.limits import REGULARIZERS as _PAIR_KEYS

BASE_KEY = "base"  # a recipe file's key naming the recipe it inherits from (loading.py)


def fields_of(section):
    return {f.name: f for f in dataclasses.fields(SECTION_TYPES[section])}


def type_hints_of(section):
    return typing.get_type_hints(SECTION_TYPES[section])


def nearest_name(word, candidates):
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return match[0] if match else None


def _where(origin):
    return f" (in {origin})" if origin else ""


def unknown_key_error(section, key, origin):
    valid = list(fields_of(section))
    message = f"Unknown key '{section}.{key}'{_where(origin)}."
    elsewhere = [s for s in SECTION_TYPES if s != section and key in fields_of(s)]
    nearest = nearest_name(key, valid)
    if elsewhere:
        message += f" '{key}' is a key of section '{elsewhere[0]}': did you mean '{elsewhere[0]}.{key}'?"
    elif nearest:
        message += f" Did you mean '{section}.{nearest}'?"
    message += f" Valid keys of '{section}': {', '.join(valid)}."
    return ConfigError(message)


def unknown_section_error(name, origin):
    message = f"Unknown section '{name}'{_where(origin)}."
    owners = [s for s in SECTION_TYPES if name in fields_of(s)]
    nearest = nearest_name(name, list(SECTION_TYPES) + [BASE_KEY])
    if owners:
        message += f" '{name}' is a key, not a section: did you mean '{owners[0]}.{name}'?"
    elif nearest:
        message += f" Did you mean '{nearest}'?"
    message += f" Valid sections: {', '.join(SECTION_TYPES)} (and '{BASE_KEY}' to inherit a recipe)."
    return ConfigError(message)


def _type_name(annotation):
    origin = typing.get_origin(annotation)
    if origin is Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    return {float: "a number", int: "an integer", bool: "true/false", str: "a string", list: "[min, max]",
            dict: "a mapping"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _in_range(value, meta):
    low, high = meta["low"], meta["high"]
    if low is not None and (value < low or (meta["low_open"] and value == low)):
        return False
    if high is not None and (value > high or (meta["high_open"] and value == high)):
        return False
    return True


def _range_text(meta):
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    return f"{'<' if meta['high_open'] else '<='} {high:g}"


_NO_MATCH = object()


def _coerce(value, annotation):
    """`value` as `annotation` (one member of a Union), or _NO_MATCH."""
    if annotation is type(None):
        return None if value is None else _NO_MATCH
    if annotation is bool:
        return value if isinstance(value, bool) else _NO_MATCH
    if annotation is int:
        if isinstance(value, bool):
            return _NO_MATCH
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _NO_MATCH
    if annotation is float:
        if isinstance(value, bool):
            return _NO_MATCH
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                return _NO_MATCH
        return _NO_MATCH
    if annotation is str:
        return value if isinstance(value, str) else _NO_MATCH
    if annotation is list:
        return list(value) if isinstance(value, (list, tuple)) else _NO_MATCH
    if annotation is dict:
        return dict(value) if isinstance(value, dict) else _NO_MATCH
    return _NO_MATCH


def check_value(section, key, value, origin=None):
    """Returns the value converted to the key's type; raises ConfigError naming the key otherwise."""
    name = f"{section}.{key}"
    field = fields_of(section)[key]
    annotation = type_hints_of(section)[key]
    meta = field.metadata
    members = typing.get_args(annotation) if typing.get_origin(annotation) is Union else (annotation,)
    # bool before int/float (YAML true is not 1); float before str (so "1e-5" is a number when allowed).
    order = sorted(members, key=lambda a: {type(None): 0, bool: 1, int: 2, float: 3, list: 4, dict: 5}.get(a, 6))
    converted = _NO_MATCH
    for member in order:
        converted = _coerce(value, member)
        if converted is not _NO_MATCH:
            break
    if converted is _NO_MATCH:
        raise ConfigError(
            f"{name} must be {_type_name(annotation)}, got {value!r} ({type(value).__name__}){_where(origin)}. "
            f"{name}: {meta['doc']}"
        )
    if converted is None:
        return None

    if section == "progressive" and key in _PAIR_KEYS:
        return _check_pair(name, converted, meta, origin)
    if key == "train_size" and isinstance(converted, str):
        if converted != "eval":
            raise ConfigError(f"{name} must be null, a size in pixels or 'eval', got {converted!r}{_where(origin)}.")
        return converted
    if key == "minival":
        return _check_minival(name, converted, origin)
    if key == "jit_compile" and isinstance(converted, str) and converted != "auto":
        raise ConfigError(f"{name} must be 'auto', true or false, got {converted!r}{_where(origin)}.")
    if meta["choices"] is not None and isinstance(converted, list):  # a list of choices
        for item in converted:
            if item not in meta["choices"]:
                nearest = nearest_name(str(item), meta["choices"])
                hint = f" Did you mean {nearest!r}?" if nearest else ""
                raise ConfigError(f"{name}: {item!r} is not one of {list(meta['choices'])}{_where(origin)}.{hint}")
        if not converted:
            raise ConfigError(f"{name} must name at least one op, or be null for all{_where(origin)}.")
        return converted
    if meta["choices"] is not None and converted not in meta["choices"]:
        nearest = nearest_name(str(converted), meta["choices"])
        hint = f" Did you mean {nearest!r}?" if nearest else ""
        raise ConfigError(
            f"{name} must be one of {list(meta['choices'])}, got {converted!r}{_where(origin)}.{hint}"
        )
    if isinstance(converted, (int, float)) and not isinstance(converted, bool):
        if not math.isfinite(converted) or not _in_range(converted, meta):
            raise ConfigError(f"{name} must be {_range_text(meta)}, got {converted!r}{_where(origin)}.")
    if isinstance(converted, dict) and not all(isinstance(k, str) for k in converted):
        raise ConfigError(f"{name} must be a mapping with string keys, got {converted!r}{_where(origin)}.")
    return converted


def _check_minival(name, value, origin):
    """A count (int >= 1), a fraction in (0, 1) or a split name."""
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{name} must not be empty; give a count, a fraction or a split name{_where(origin)}.")
        return value.strip()
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1 examples, a fraction in (0, 1), a split name or null (no "
                              f"minival), got {value!r}{_where(origin)}.")
        return value
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ConfigError(f"{name} as a fraction of train_split must be in (0, 1), got {value!r}{_where(origin)} "
                          "(a whole number is a count of examples).")
    return value




def _check_pair(name, value, meta, origin):
    """null | constant | [min, max]: numbers in range; image sizes are integers."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and len(value) != 2:
        raise ConfigError(f"{name} must be a number or a [min, max] pair, got {value!r}{_where(origin)}.")
    checked = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ConfigError(f"{name} must hold numbers, got {item!r}{_where(origin)}.")
        if name.endswith("image_size"):
            if not float(item).is_integer():
                raise ConfigError(f"{name} must hold integer pixel sizes, got {item!r}{_where(origin)}.")
            item = int(item)
        if not _in_range(item, meta):
            raise ConfigError(f"{name} values must be {_range_text(meta)}, got {item!r}{_where(origin)}.")
        checked.append(item)
    return checked if isinstance(value, list) else checked[0]


def check_section(section, values, origin=None):
    if not isinstance(values, dict):
        raise ConfigError(f"Section '{section}' must be a mapping of keys, got {values!r}{_where(origin)}.")
    fields = fields_of(section)
    checked = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in fields:
            raise unknown_key_error(section, str(key), origin)
        checked[key] = check_value(section, key, value, origin)
    return checked


def check_consistency(config):
    """Rules that involve more than one key."""
    from efficientnetv2_keras.models.family import get_model_spec

    try:
        get_model_spec(config.model.name)
    except ValueError as error:
        raise ConfigError(f"model.name: {error}") from None
    train, data = config.train, config.data
    if train.loss == "sigmoid" and data.label_format == "multi_hot_normalized":
        raise ConfigError(
            "train.loss=sigmoid needs 0/1 targets: set data.label_format=multi_hot (multi_hot_normalized "
            "is for the softmax loss)."
        )
    if data.label_format == "sparse":
        if train.label_smoothing:
            raise ConfigError("data.label_format=sparse cannot be label-smoothed: use one_hot, or "
                              "train.label_smoothing=0.")
        if train.loss == "sigmoid":
            raise ConfigError("train.loss=sigmoid needs one_hot or multi_hot labels, not sparse.")
    if isinstance(data.minival, str) and data.minival == data.eval_split:
        raise ConfigError(
            f"data.minival is the test split ({data.eval_split!r}): model selection on the test split reports "
            "an optimistic accuracy. Carve one from the training data (e.g. data.minival=0.05) or name another "
            "split."
        )
    progressive = config.progressive
    if progressive.enabled and progressive.batch_scaling:
        if progressive.random_resize_every:
            raise ConfigError("progressive.batch_scaling does not combine with progressive.random_resize_every "
                              "(stages drawn at random cannot each have their own epoch length): turn one off.")
        if progressive.max_batch_size is not None and progressive.max_batch_size < train.batch_size:
            raise ConfigError(f"progressive.max_batch_size ({progressive.max_batch_size}) is below train.batch_size "
                              f"({train.batch_size}), the last stage's batch: raise it or set it to null.")
    for key in _PAIR_KEYS:
        value = getattr(config.progressive, key)
        if isinstance(value, list) and key != "image_size" and key != "survival_prob" and value[0] > value[1]:
            raise ConfigError(
                f"progressive.{key} goes from {value[0]} down to {value[1]}; regularization grows with the "
                "image size (Algorithm 1): give [min, max]."
            )
    return config


def validate_config(config):
    """Re-checks every key of a (possibly edited) Config; returns it with values converted."""
    for section in SECTION_TYPES:
        obj = getattr(config, section)
        for key in fields_of(section):
            setattr(obj, key, check_value(section, key, getattr(obj, key)))
    return check_consistency(config)
