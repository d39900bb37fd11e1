"""The EfficientNetV2 family as data.

Each variant is a stage table (`StageSpec` rows, the block strings of google/automl
`efficientnetv2/effnetv2_configs.py`) plus scaling coefficients and training defaults (`ModelSpec`,
that file's `efficientnetv2_params`). One builder
(`builder.build_model`) turns any spec into a Keras model, so a new variant, or an architecture
emitted by the NAS search, is a new table, not new code.

The architecture is the released code's (google/automl `effnetv2_configs.py`), not the early
Table 4 of the paper: e.g. the paper's V2-S has a 272-channel last stage and a 1792-wide head;
the released S (21.6 M params, 8.4 B FLOPs) has 256 and 1280.
"""

import dataclasses
import math

FUSED_MBCONV = "fused_mbconv"
MBCONV = "mbconv"
BLOCK_TYPES = (FUSED_MBCONV, MBCONV)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: `repeats` blocks of one type; the first block has `stride` and `in_filters`."""

    block: str  # FUSED_MBCONV or MBCONV
    kernel: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int
    repeats: int
    se_ratio: float = 0.0  # 0 = no squeeze-and-excitation

    def __post_init__(self):
        if self.block not in BLOCK_TYPES:
            raise ValueError(f"StageSpec.block must be one of {BLOCK_TYPES}, got {self.block!r}.")
        for field in ("kernel", "stride", "expand_ratio", "in_filters", "out_filters", "repeats"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"StageSpec.{field} must be a positive integer, got {value!r}.")
        if not 0.0 <= self.se_ratio <= 1.0:
            raise ValueError(f"StageSpec.se_ratio must be in [0, 1], got {self.se_ratio!r}.")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A variant: its stage table, scaling coefficients and the official training defaults."""

    name: str
    stages: tuple
    width: float = 1.0
    depth: float = 1.0
    head_filters: int = 1280  # before width scaling
    train_size: int = 224  # final progressive-learning stage size (official configs)
    eval_size: int = 224
    dropout_rate: float = 0.2
    randaug_magnitude: float = 0.0
    mixup_alpha: float = 0.0  # the official configs use the same value for cutmix
    # "imagenet" = ImageNet mean/std (B0-B3, the V1 convention they were trained with, as in
    # keras.applications.EfficientNetV2B*); "symmetric" = (x - 128) / 128 as the official V2 pipeline (S/M/L/XL).
    input_normalization: str = "symmetric"

    def scaled_stages(self):
        """The stage table after width/depth scaling, as the builder uses it."""
        return tuple(
            dataclasses.replace(
                stage,
                in_filters=round_filters(stage.in_filters, self.width),
                out_filters=round_filters(stage.out_filters, self.width),
                repeats=round_repeats(stage.repeats, self.depth),
            )
            for stage in self.stages
        )

    @property
    def stem_filters(self):
        return round_filters(self.stages[0].in_filters, self.width)

    @property
    def head_width(self):
        return round_filters(self.head_filters, self.width)

    @property
    def num_blocks(self):
        return sum(stage.repeats for stage in self.scaled_stages())


def round_filters(filters, width, divisor=8):
    """Width scaling of the released V2 code: no "keep >= 90 %" guard (unlike V1 and timm)."""
    return max(divisor, int(filters * width + divisor / 2) // divisor * divisor)


def round_repeats(repeats, depth):
    return int(math.ceil(depth * repeats))


# The block strings of google/automl efficientnetv2/effnetv2_configs.py (`v2_base_block`, `v2_s_block`, ...),
# one StageSpec per string: "r2_k3_s1_e1_i24_o24_c1" is block=FUSED_MBCONV (c1), kernel=3, stride=1,
# expand_ratio=1, in_filters=24, out_filters=24, repeats=2; "_se0.25" is se_ratio=0.25. All kernels are
# 3x3; fused blocks never have SE in a released config.

BASE_STAGES = (  # V2 "base", scaled by width/depth into B0-B3
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=1, expand_ratio=1, in_filters=32, out_filters=16, repeats=1),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=16, out_filters=32, repeats=2),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=32, out_filters=48, repeats=2),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=48, out_filters=96, repeats=3, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=96, out_filters=112, repeats=5, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=6, in_filters=112, out_filters=192, repeats=8, se_ratio=0.25),
)

S_STAGES = (  # V2-S, "about base x (width 1.4, depth 1.8)"
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=1, expand_ratio=1, in_filters=24, out_filters=24, repeats=2),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=24, out_filters=48, repeats=4),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=48, out_filters=64, repeats=4),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=64, out_filters=128, repeats=6, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=128, out_filters=160, repeats=9, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=6, in_filters=160, out_filters=256, repeats=15, se_ratio=0.25),
)

M_STAGES = (  # V2-M, "about base x (1.6, 2.2)"
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=1, expand_ratio=1, in_filters=24, out_filters=24, repeats=3),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=24, out_filters=48, repeats=5),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=48, out_filters=80, repeats=5),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=80, out_filters=160, repeats=7, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=160, out_filters=176, repeats=14, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=6, in_filters=176, out_filters=304, repeats=18, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=304, out_filters=512, repeats=5, se_ratio=0.25),
)

L_STAGES = (  # V2-L, "about base x (2.0, 3.1)"
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=1, expand_ratio=1, in_filters=32, out_filters=32, repeats=4),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=32, out_filters=64, repeats=7),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=64, out_filters=96, repeats=7),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=96, out_filters=192, repeats=10, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=192, out_filters=224, repeats=19, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=6, in_filters=224, out_filters=384, repeats=25, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=384, out_filters=640, repeats=7, se_ratio=0.25),
)

XL_STAGES = (  # V2-XL, "only for 21k pretraining"
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=1, expand_ratio=1, in_filters=32, out_filters=32, repeats=4),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=32, out_filters=64, repeats=8),
    StageSpec(block=FUSED_MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=64, out_filters=96, repeats=8),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=4, in_filters=96, out_filters=192, repeats=16, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=192, out_filters=256, repeats=24, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=2, expand_ratio=6, in_filters=256, out_filters=512, repeats=32, se_ratio=0.25),
    StageSpec(block=MBCONV, kernel=3, stride=1, expand_ratio=6, in_filters=512, out_filters=640, repeats=8, se_ratio=0.25),
)

# google/automl efficientnetv2/effnetv2_configs.py `efficientnetv2_params` (mixup_alpha is also the cutmix
# alpha there). B0-B3 were trained with the V1 AutoAugment pipeline in the official code, hence RandAugment
# magnitude 0 there.
MODEL_SPECS = {
    spec.name: spec
    for spec in (
        ModelSpec(name="efficientnetv2-b0", stages=BASE_STAGES, width=1.0, depth=1.0, train_size=192, eval_size=224,
                  dropout_rate=0.2, randaug_magnitude=0, mixup_alpha=0, input_normalization="imagenet"),
        ModelSpec(name="efficientnetv2-b1", stages=BASE_STAGES, width=1.0, depth=1.1, train_size=192, eval_size=240,
                  dropout_rate=0.2, randaug_magnitude=0, mixup_alpha=0, input_normalization="imagenet"),
        ModelSpec(name="efficientnetv2-b2", stages=BASE_STAGES, width=1.1, depth=1.2, train_size=208, eval_size=260,
                  dropout_rate=0.3, randaug_magnitude=0, mixup_alpha=0, input_normalization="imagenet"),
        ModelSpec(name="efficientnetv2-b3", stages=BASE_STAGES, width=1.2, depth=1.4, train_size=240, eval_size=300,
                  dropout_rate=0.3, randaug_magnitude=0, mixup_alpha=0, input_normalization="imagenet"),
        ModelSpec(name="efficientnetv2-s", stages=S_STAGES, width=1.0, depth=1.0, train_size=300, eval_size=384,
                  dropout_rate=0.2, randaug_magnitude=10, mixup_alpha=0, input_normalization="symmetric"),
        ModelSpec(name="efficientnetv2-m", stages=M_STAGES, width=1.0, depth=1.0, train_size=384, eval_size=480,
                  dropout_rate=0.3, randaug_magnitude=15, mixup_alpha=0.2, input_normalization="symmetric"),
        ModelSpec(name="efficientnetv2-l", stages=L_STAGES, width=1.0, depth=1.0, train_size=384, eval_size=480,
                  dropout_rate=0.4, randaug_magnitude=20, mixup_alpha=0.5, input_normalization="symmetric"),
        ModelSpec(name="efficientnetv2-xl", stages=XL_STAGES, width=1.0, depth=1.0, train_size=384, eval_size=512,
                  dropout_rate=0.4, randaug_magnitude=20, mixup_alpha=0.5, input_normalization="symmetric"),
    )
}
VARIANTS = tuple(MODEL_SPECS)


def get_model_spec(name):
    """Looks up a variant by name: "efficientnetv2-s", "s", "EfficientNetV2S" all work.

    A path ending in .yaml, .yml or .json is a model-table file (`save_model_spec`, e.g. a table found
    by `efficientnetv2_keras.nas`): `model.name: runs/nas/best_model.yaml` in a recipe.
    """
    if isinstance(name, ModelSpec):
        return name
    if is_model_table_path(name):
        return load_model_spec(name)
    key = str(name).strip().lower().replace("_", "-")
    if key.startswith("efficientnetv2") and not key.startswith("efficientnetv2-"):
        key = "efficientnetv2-" + key[len("efficientnetv2"):]
    if not key.startswith("efficientnetv2-"):
        key = "efficientnetv2-" + key
    if key not in MODEL_SPECS:
        raise ValueError(
            f"Unknown EfficientNetV2 variant {name!r}. Valid variants: "
            f"{', '.join(VARIANTS)} (short forms like 's' or 'b0' also work)."
        )
    return MODEL_SPECS[key]


# ------------------------------------------------------------------------------------------------
# Model tables as files (YAML or JSON): a stage table that is not one of the variants above.
# ------------------------------------------------------------------------------------------------

TABLE_EXTENSIONS = (".yaml", ".yml", ".json")


def is_model_table_path(name):
    """Whether `name` names a model-table file (by its extension) rather than a variant."""
    return hasattr(name, "__fspath__") or (isinstance(name, str) and name.strip().lower().endswith(TABLE_EXTENSIONS))


def spec_to_dict(spec):
    """A `ModelSpec` as plain data (stages as keyword rows); `spec_from_dict` inverts it."""
    data = dataclasses.asdict(spec)
    data["stages"] = [dataclasses.asdict(stage) for stage in spec.stages]
    return data


def spec_from_dict(data, origin="model table"):
    """A `ModelSpec` from `spec_to_dict`'s form; errors name the bad key or stage and `origin`."""
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: expected a mapping with 'name' and 'stages', got {type(data).__name__}.")
    spec_fields = {f.name for f in dataclasses.fields(ModelSpec)}
    stage_fields = [f.name for f in dataclasses.fields(StageSpec)]
    unknown = sorted(set(data) - spec_fields)
    if unknown:
        raise ValueError(f"{origin}: unknown key(s) {unknown}; valid keys: {sorted(spec_fields)}.")
    missing = [key for key in ("name", "stages") if key not in data]
    if missing:
        raise ValueError(f"{origin}: missing key(s) {missing} (a model table needs 'name' and 'stages').")
    rows = data["stages"]
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"{origin}: 'stages' must be a non-empty list of stage rows, got {rows!r}.")
    stages = []
    for index, row in enumerate(rows):
        where = f"{origin}: stage {index + 1}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a mapping of {stage_fields}, got {row!r}.")
        unknown = sorted(set(row) - set(stage_fields))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {stage_fields}.")
        try:
            stages.append(StageSpec(**row))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None
    try:
        return ModelSpec(**{**data, "name": str(data["name"]), "stages": tuple(stages)})
    except TypeError as error:
        raise ValueError(f"{origin}: {error}") from None


def load_model_spec(path):
    """Reads a model-table file (.yaml/.yml/.json, as `save_model_spec` writes it)."""
    import json
    import os

    path = os.fspath(path).strip()
    origin = f"model table {path!r}"
    if not os.path.isfile(path):
        raise ValueError(
            f"{origin} does not exist (a model name ending in {', '.join(TABLE_EXTENSIONS)} is read as a "
            "model-table file, e.g. the best_model.yaml written by effnetv2-nas; relative paths are "
            "relative to the working directory)."
        )
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        if path.lower().endswith(".json"):
            data = json.loads(text)
        else:
            import yaml  # only for YAML tables: the model code itself needs keras alone

            data = yaml.safe_load(text)
    except ValueError as error:  # json.JSONDecodeError
        raise ValueError(f"{origin} is not valid JSON: {error}") from None
    except Exception as error:  # yaml.YAMLError
        raise ValueError(f"{origin} is not valid YAML: {error}") from None
    return spec_from_dict(data, origin)


def save_model_spec(spec, path):
    """Writes `spec` as a model-table file (JSON for .json, else YAML) that `get_model_spec(path)` reads."""
    import json

    path = str(path)
    data = spec_to_dict(spec)
    if path.lower().endswith(".json"):
        text = json.dumps(data, indent=2) + "\n"
    else:
        import yaml

        header = f"# EfficientNetV2 model table {spec.name!r}: use it as model.name in a recipe, or build_model(path).\n"
        stages = data.pop("stages")
        text = header + yaml.safe_dump(data, sort_keys=False) + "stages:\n" + "".join(
            "  - " + yaml.safe_dump(row, default_flow_style=True, sort_keys=False, width=1000) for row in stages
        )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
