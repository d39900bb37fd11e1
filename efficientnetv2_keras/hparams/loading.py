"""Loading recipes: YAML files with `base:` inheritance, "section.key=value" overrides, and the resolved
recipe written back as YAML.

Recipe files live in the repository's `hparams/` folder, which an installed package carries as
`efficientnetv2_keras/recipes/` (RECIPES_DIR is whichever exists).
"""

import os

import yaml

from efficientnetv2_keras.files import atomic_write_text
from efficientnetv2_keras.hparams.checks import (
    BASE_KEY,
    check_consistency,
    check_section,
    check_value,
    fields_of,
    type_hints_of,
    nearest_name,
    unknown_key_error,
    unknown_section_error,
)
from efficientnetv2_keras.hparams.schema import SECTION_TYPES, Config, ConfigError


def _recipes_dir():
    """The recipes shipped in an installed package (setup.py: package data), else a checkout's hparams/."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(package, "recipes")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "hparams")


RECIPES_DIR = _recipes_dir()


def list_recipes(directory=RECIPES_DIR):
    """Names of the recipes in `directory` (default: RECIPES_DIR, the recipes shipped with the package)."""
    if not os.path.isdir(directory):
        return []
    return sorted(f[: -len(".yaml")] for f in os.listdir(directory) if f.endswith(".yaml"))


def _resolve_path(name, relative_to=None):
    """A path, or a recipe name ('imagenet_s' or 'imagenet_s.yaml') in `relative_to` or hparams/."""
    name = os.fspath(name)
    candidates = []
    if os.path.isabs(name):
        candidates.append(name)
    else:
        for folder in ([relative_to] if relative_to else []) + [os.getcwd(), RECIPES_DIR]:
            candidates.append(os.path.join(folder, name))
            if not name.endswith((".yaml", ".yml")):
                candidates.append(os.path.join(folder, name + ".yaml"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    recipes = list_recipes()
    nearest = nearest_name(os.path.basename(name).replace(".yaml", ""), recipes)
    hint = f" Did you mean '{nearest}'?" if nearest else ""
    raise ConfigError(f"Recipe {name!r} not found (looked in {sorted(set(os.path.dirname(c) for c in candidates))})."
                      f"{hint} Recipes in {RECIPES_DIR}: {', '.join(recipes) or 'none'}.")


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model:, train:, ...), got {type(data).__name__}.")
    return data


def _load_file(path, chain=()):
    """Reads a recipe and its bases (recursively); returns ([(section_values, origin)], files)."""
    if path in chain:
        raise ConfigError(f"Recipe bases form a cycle: {' -> '.join(list(chain) + [path])}.")
    data = _read_yaml(path)
    layers, files = [], []
    base = data.pop(BASE_KEY, None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"'{BASE_KEY}' in {path} must be a recipe name or a path, got {base!r}.")
        base_layers, base_files = _load_file(_resolve_path(base, os.path.dirname(path)), chain + (path,))
        layers += base_layers
        files += base_files
    for section, values in data.items():
        if section not in SECTION_TYPES:
            raise unknown_section_error(str(section), path)
        layers.append((section, check_section(section, values or {}, path), path))
    return layers, files + [path]


def split_overrides(overrides):
    """A list of "a.b=c" strings, or one string with comma-separated pairs (commas inside [] kept)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        overrides = [overrides]
    pairs = []
    for item in overrides:
        depth, current, pieces = 0, "", []
        for char in str(item):
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            if char == "," and depth == 0:
                pieces.append(current)
                current = ""
            else:
                current += char
        pieces.append(current)
        pieces = [p.strip() for p in pieces if p.strip()]
        for previous, piece in zip(pieces, pieces[1:]):
            if "=" not in piece and "=" in previous:  # "a.b=1,2": a list value without its brackets
                key, _, value = previous.partition("=")
                raise ConfigError(
                    f"Override {str(item)!r}: {piece!r} after the comma is not section.key=value. A list value "
                    f"needs brackets: {key.strip()}=[{value.strip()},{piece}]; separate overrides: "
                    f"{key.strip()}=..., other.key=...")
        pairs += pieces
    return pairs


def parse_override(text):
    """'train.lr_base=0.1' -> ('train', 'lr_base', 0.1, extra_path). Values use YAML scalar typing."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like section.key=value (e.g. train.batch_size=256).")
    path, _, raw = text.partition("=")
    parts = [p.strip() for p in path.strip().split(".")]
    if len(parts) < 2 or not all(parts):
        section = parts[0] if parts else ""
        if section and section not in SECTION_TYPES:
            raise unknown_section_error(section, f"override {text!r}")
        raise ConfigError(f"Override {text!r} must name section.key (e.g. train.batch_size=256).")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts[0], parts[1], value, parts[2:]


def load_config(path_or_name=None, overrides=None):
    """Loads a recipe: defaults <- base files <- the file <- overrides; validated.

    Args:
      path_or_name: a YAML path, a recipe name in hparams/ ("imagenet_s"), a dict of sections, or None
        (the defaults: the paper's ImageNet recipe for EfficientNetV2-S).
      overrides: "section.key=value" strings (a list, or one string with comma-separated pairs); values
        are read as YAML scalars ("0.1" -> float, "true" -> bool, "null" -> None, "[128, 300]" -> list).
        Keys of mapping-valued entries nest: "data.source_options.image_size=64".
    Raises:
      ConfigError: unknown section/key (naming the nearest valid one), wrong type, out-of-range value,
        inconsistent keys, missing file.
    """
    values = {section: {} for section in SECTION_TYPES}
    sources = _read_recipe(path_or_name, values)
    for text in split_overrides(overrides):
        _apply_override(text, values)
        sources.append(f"override {text!r}")
    config = Config(**{section: SECTION_TYPES[section](**values[section]) for section in SECTION_TYPES},
                    sources=tuple(sources))
    return check_consistency(config)


def _read_recipe(path_or_name, values):
    """Layers the recipe (its bases first) onto `values` ({section: {key: value}}); returns where it came from."""
    sources = []
    if isinstance(path_or_name, dict):
        data = dict(path_or_name)
        base = data.pop(BASE_KEY, None)
        if base is not None:
            layers, files = _load_file(_resolve_path(base))
            for section, section_values, _ in layers:
                values[section].update(section_values)
            sources += files
        for section, section_values in data.items():
            if section not in SECTION_TYPES:
                raise unknown_section_error(str(section), "dict")
            values[section].update(check_section(section, section_values or {}, "dict"))
        sources.append("<dict>")
    elif path_or_name is not None:
        layers, files = _load_file(_resolve_path(path_or_name))
        for section, section_values, _ in layers:
            values[section].update(section_values)
        sources += files
    return sources


def _apply_override(text, values):
    """Sets one "section.key=value" (or "section.key.nested=value" in a mapping) in `values`, checked."""
    section, key, value, extra = parse_override(text)
    origin = f"override {text!r}"
    if section not in SECTION_TYPES:
        raise unknown_section_error(section, origin)
    if key not in fields_of(section):
        raise unknown_key_error(section, key, origin)
    if extra:
        if type_hints_of(section)[key] is not dict:
            raise ConfigError(f"{section}.{key} is not a mapping; {origin} cannot set "
                              f"{'.'.join([section, key] + extra)}.")
        current = dict(values[section].get(key, getattr(SECTION_TYPES[section](), key)))
        target = current
        for part in extra[:-1]:
            target = target.setdefault(part, {})
        target[extra[-1]] = value
        value = current
    values[section][key] = check_value(section, key, value, origin)


class _RecipeDumper(yaml.SafeDumper):
    """Sections and keys in block style, [min, max] pairs in flow style."""


_RecipeDumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def to_yaml(config, path=None):
    """The resolved recipe as YAML text; with `path`, also written there atomically (`files.atomic_write_text`)."""
    header = "# Resolved EfficientNetV2 recipe"
    if config.sources:
        header += " from: " + ", ".join(os.path.basename(s) if os.path.isfile(s) else s for s in config.sources)
    text = header + "\n" + yaml.dump(config.to_dict(), Dumper=_RecipeDumper, sort_keys=False, width=100)
    if path is not None:
        atomic_write_text(path, text)
    return text
