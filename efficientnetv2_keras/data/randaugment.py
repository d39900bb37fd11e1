"""RandAugment on the paper's magnitude scale, one op per image, in TensorFlow ops on uint8.

The paper (section 4, Table 6) schedules RandAugment magnitude per progressive stage: 5 at the first
stage, up to 15 (S), 20 (M) or 25 (L) at the last. The magnitude is the level of the released code
(google/automl `efficientnetv2/autoaugment.py`, `distort_image_with_randaugment` and `level_to_arg`):
level 10 (`_MAX_LEVEL`) is the nominal maximum, and the paper's levels above 10 extrapolate its formulas.

Why not `keras.layers.RandAugment(factor=...)`
-----------------------------------------------
Keras' layer cannot express this scale (measured with Keras 3 on 2 CPU cores):

* It samples the magnitude uniformly in [0, factor] for every image; the paper uses one fixed magnitude
  per stage. `factor` is also a fraction of the op's range in [0, 1], so magnitudes above 10 do not exist.
* It has 11 ops; the released RandAugment has 16 (no Invert, Posterize-at-level, SolarizeAdd, Cutout, ...).
* Its magnitude cannot change after construction (setting `.factor` does not reach its sub-layers and a
  `tf.Variable` factor is rejected), so a stage change needs a new layer anyway.
* It computes every sub-op for every image and then picks: 27 img/s at 300 px on 2 CPU cores against
  486 img/s when one op is chosen with `tf.switch_case` (18x).

So this module implements the released op set with `tf.switch_case` (only the chosen op runs), a fixed
magnitude given as a Python float per pipeline build (the progressive callback rebuilds the pipeline
per stage), and stateless randomness (reproducible from a seed).

Magnitude mapping (m = magnitude, l = m / 10, side = image side in pixels)
--------------------------------------------------------------------------
The released code's `level_to_arg`, with caps (last column) only where its formula would erase the
image or stop meaning anything. Values at m = 5, 10 and 20 are for a 300 px image; +- is a random sign
per image. "id" marks an identity.

============  ======================================  =======  =======  =======  ==================
op            parameter at magnitude m                m = 5    m = 10   m = 20   cap
============  ======================================  =======  =======  =======  ==================
AutoContrast  none (magnitude-free)                   --       --       --       --
Equalize      none (magnitude-free)                   --       --       --       --
Invert        none (magnitude-free)                   --       --       --       --
Rotate        +-30 l degrees                          15       30       60       --
Posterize     keep int(4 l) bits                      2        4        8 (id)   1 <= bits <= 8
Solarize      invert pixels >= int(256 l)             128      256 (id) 256 (id) threshold <= 256
SolarizeAdd   add int(110 l) to pixels < 128          55       110      128      <= 128
Color         blend factor 0.1 + 1.8 l                1.0 (id) 1.9      3.7      --
Contrast      blend factor 0.1 + 1.8 l                1.0 (id) 1.9      3.7      --
Sharpness     blend factor 0.1 + 1.8 l                1.0 (id) 1.9      3.7      --
Brightness    blend factor 0.1 + 1.8 l                1.0 (id) 1.9      1.9      <= 1.9 (m = 10)
ShearX, -Y    +-0.3 l                                 0.15     0.3      0.6      --
TranslateX,-Y +-100 l px (x side/224 below 224 px)    50 px    100 px   135 px   <= 0.45 side
Cutout        square of side 2 int(40 l) px (same)    40 px    80 px    150 px   half side <= side/4
============  ======================================  =======  =======  =======  ==================

Unlike the "increasing" variants of other libraries, the released mapping is not monotone: Posterize
and Solarize are strongest at low levels (identity from m = 20 and m = 10), the enhance ops weaken
images below m = 5 (factor 0.1 at level 0), are the identity at 5 and strengthen them above. Below
the paper's 5, Posterize, Solarize and the enhance ops are therefore strong (enhance factor 0.28 at
m = 1).

Where and why we differ from the released code. Uncapped, the released formulas with N = 2 leave
25-37 % of 128 px images one flat colour from m = 15 on, 25-31 % of 300 px images at m = 30 and up to
6 % at 300/380 px for m = 15-25 (synthetic images and photo crops, 400 per cell); with the caps below,
none at m = 5-30 and 128/300/380 px (`tests/test_data_augment.py` sweeps this).

* Magnitude 0 turns RandAugment off (an exact identity for the whole layer): our recipes and schedules
  use 0 to mean "no RandAugment". The released code at level 0 would still apply strong ops (Posterize
  to 0 bits = black, Solarize inverting every pixel, enhance factor 0.1).
* Translate and Cutout: the released constants are absolute pixels (`translate_const=100`,
  `cutout_const=40`) chosen at ImageNet's 224 px. Below 224 px (the small early progressive stages, a
  32 px digit) they scale with the side (x side/224), so augmentation does not get *stronger* as images
  get smaller, against the premise of progressive learning (100 px is 78 % of a 128 px image). From
  224 px up they are the released absolute pixels. `reference_size=None` keeps absolute pixels at every
  size.
* Translate is capped at 0.45 side (the released level-10 shift at 224 px, 100/224): the released
  100 l px reaches the whole side at m = 13 on 128 px or m = 30 on 300 px, shifting the image out of
  the frame. The cap keeps at least 55 % of the content in view.
* Cutout's half side is capped at side/4 (a square of at most half the side, the size the released
  finetuning Cutout uses): the released 40 l px covers a whole 224 px image from m = 28.
* Brightness stops at factor 1.9 (m = 10). Larger factors only push more pixels to white: on random
  crops of photos (scikit-learn's sample images, 1000 crops of 5-100 % area) the share of images left at
  least 90 % white grows from 2.4 % at 1.9 to 8.9 % at 5.5 (m = 30); Contrast, Color and Sharpness keep
  the released extrapolation (Contrast at 5.5 binarises an image around its mean; 0.5 % of crops end
  90 % saturated).
* SolarizeAdd adds at most 128 (m >= 11.6), the largest addition that keeps every pixel below 128
  distinct; the released 110 l turns an image darker than 128 everywhere into a flat white one (from
  m = 23 at the latest).
* Posterize keeps at least 1 bit (released int(4 l) = 0 bits below m = 2.5: a black image) and at most
  8 (released int(4 l) > 8 from m = 22.5, a negative bit shift).

Other released details kept: N = 2 layers, each picks one of the 16 ops uniformly per image and always
applies it; geometric ops use nearest-neighbour sampling (translations move whole pixels) and fill with
128 (gray). Two released quirks are fixed: Contrast blends towards the mean gray level as PIL does (the
released code uses pixel count / 256), and blends round instead of truncating.
"""

from __future__ import annotations

import math

import tensorflow as tf

from efficientnetv2_keras.data.image_ops import (
    FILL_VALUE,
    autocontrast,
    brightness,
    color,
    contrast,
    cutout,
    equalize,
    invert,
    posterize,
    random_seed,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    solarize_add,
    translate_x,
    translate_y,
)
from efficientnetv2_keras.limits import MAX_RANDAUG_MAGNITUDE, RANDAUGMENT_OP_NAMES

MAX_LEVEL = 10.0  # released autoaugment.py `_MAX_LEVEL`: level 10 = each op's nominal maximum.
RELEASED_CONSTANTS_SIZE = 224  # image side at which the released pixel constants below were chosen.
TRANSLATE_CONST = 100.0  # released RandAugment `translate_const` (pixels at level 10).
CUTOUT_CONST = 40.0  # released RandAugment `cutout_const` (half side, pixels at level 10).
# Caps where the released formulas would erase an image (module docstring, "Where and why we differ").
MAX_TRANSLATE_FRACTION = 0.45  # of the side: the released level-10 shift at 224 px (100/224).
MAX_CUTOUT_FRACTION = 0.25  # half side of the Cutout square, of the side (released finetuning Cutout).
MAX_BRIGHTNESS_FACTOR = 1.9  # the released level-10 factor.
MAX_SOLARIZE_ADD = 128  # the largest addition that keeps pixels below 128 distinct.

# The released op list, in the released order (`limits`: the recipe schema validates data.randaug_ops
# against the same tuple without importing TensorFlow).
RANDAUGMENT_OPS = RANDAUGMENT_OP_NAMES


def validate_magnitude(magnitude) -> float:
    """Returns `magnitude` as a float, or raises a ValueError that says what range is valid."""
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)):
        raise ValueError(
            f"RandAugment magnitude must be a Python number in [0, {MAX_RANDAUG_MAGNITUDE:g}] (the paper uses "
            f"5-25, Table 6), got {magnitude!r}. The pipeline is rebuilt per progressive stage, so pass "
            "the stage's magnitude as a float."
        )
    magnitude = float(magnitude)
    if not 0.0 <= magnitude <= MAX_RANDAUG_MAGNITUDE or math.isnan(magnitude):
        raise ValueError(
            f"RandAugment magnitude must be in [0, {MAX_RANDAUG_MAGNITUDE:g}] (the paper uses 5-25, Table 6; "
            f"10 is the released code's maximum level, above 10 extrapolates), got {magnitude}."
        )
    return magnitude


# The ops by how the layer calls them (image_ops.py holds the ops themselves).
_PLAIN_OPS = {"AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert}
_ENHANCE_OPS = {"Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness}
_GEOMETRIC_OPS = {"Rotate": rotate, "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x,
                  "TranslateY": translate_y}  # fmt: skip
_PIXEL_OPS = {"Posterize": posterize, "Solarize": solarize, "SolarizeAdd": solarize_add}
# Parameter values at which an op is an exact identity (the rest: 0, e.g. Rotate 0 or Cutout 0).
_IDENTITY_VALUES = {"Posterize": 8, "Solarize": 256, "Color": 1.0, "Contrast": 1.0, "Brightness": 1.0,
                    "Sharpness": 1.0}  # fmt: skip


def _random_sign(seed):
    return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


class RandAugment:
    """Callable `(uint8 image [H, W, 3], seed [2]) -> uint8 image` with the paper's magnitude scale.

    Args:
      magnitude: Python float in [0, 30], the released code's level (10 = its nominal maximum; see the
        module docstring's table). 0 disables the layer.
      num_layers: ops applied in sequence per image (released N = 2).
      ops: op names to choose from (default: the released 16).
      fill_value: pixel value for areas uncovered by geometric ops and Cutout (released 128).
      reference_size: image side at which the released pixel constants of Translate and Cutout apply;
        below it they scale with the image side. None = the released absolute pixels at every size.
        Both stay capped (Translate <= 0.45 side, Cutout half side <= side/4).
    """

    def __init__(self, magnitude, num_layers=2, *, ops=RANDAUGMENT_OPS, fill_value=FILL_VALUE,
                 reference_size=RELEASED_CONSTANTS_SIZE):  # fmt: skip
        self.magnitude = validate_magnitude(magnitude)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"RandAugment num_layers must be an int >= 0 (released 2), got {num_layers!r}.")
        unknown = [op for op in ops if op not in RANDAUGMENT_OPS]
        if unknown or not ops:
            raise ValueError(f"Unknown RandAugment op(s) {unknown or ops!r}; choose from {list(RANDAUGMENT_OPS)}.")
        if reference_size is not None and reference_size <= 0:
            raise ValueError(f"reference_size must be a positive image side or None, got {reference_size!r}.")
        self.num_layers = num_layers
        self.ops = tuple(ops)
        self.fill_value = fill_value
        self.reference_size = reference_size

    def __repr__(self):
        return f"RandAugment(magnitude={self.magnitude:g}, num_layers={self.num_layers}, ops={len(self.ops)})"

    @property
    def is_identity(self) -> bool:
        return self.magnitude == 0.0 or self.num_layers == 0

    def parameters(self, image_side=RELEASED_CONSTANTS_SIZE) -> dict:
        """The module docstring's table at this magnitude (one source of truth), as unsigned numbers.

        Enhance ops give the blend factor; Posterize the bits kept; Solarize the threshold; SolarizeAdd
        the addition; Translate the shift in pixels; Cutout the half side in pixels. Rotate, Shear and
        Translate get a random sign per image.
        """
        level = self.magnitude / MAX_LEVEL
        side = float(image_side)
        # Released pixel constants from `reference_size` up; proportionally smaller below it.
        pixel_scale = 1.0 if self.reference_size is None else min(1.0, side / self.reference_size)
        enhance = 0.1 + 1.8 * level  # released `_enhance_level_to_arg`
        translate = min(MAX_TRANSLATE_FRACTION * side, TRANSLATE_CONST * level * pixel_scale)
        return {
            "Rotate": 30.0 * level,
            "Posterize": min(8, max(1, int(4 * level))),
            "Solarize": min(256, int(256 * level)),
            "SolarizeAdd": min(MAX_SOLARIZE_ADD, int(110 * level)),
            "Color": enhance,
            "Contrast": enhance,
            "Brightness": min(MAX_BRIGHTNESS_FACTOR, enhance),
            "Sharpness": enhance,
            "ShearX": 0.3 * level,
            "ShearY": 0.3 * level,
            "TranslateX": translate,
            "TranslateY": translate,
            "Cutout": min(int(MAX_CUTOUT_FRACTION * side), int(CUTOUT_CONST * level * pixel_scale)),
        }

    def apply_op(self, image, name, seed):
        """Applies one op at this layer's magnitude (signs and positions drawn from `seed`)."""
        image = tf.convert_to_tensor(image)
        if image.dtype != tf.uint8:
            raise TypeError(f"RandAugment works on uint8 images, got {image.dtype.name}.")
        height, width = image.shape[0], image.shape[1]
        if image.shape.rank != 3 or height is None or width is None:
            raise ValueError(f"RandAugment needs one image [H, W, 3] of known H and W, got shape {image.shape}.")
        if name not in RANDAUGMENT_OPS:
            raise ValueError(f"Unknown RandAugment op {name!r}; choose from {list(RANDAUGMENT_OPS)}.")
        if name in _PLAIN_OPS:
            return _PLAIN_OPS[name](image)
        value = self.parameters(min(height, width))[name]
        if abs(value - _IDENTITY_VALUES.get(name, 0)) < 1e-9:
            return image  # e.g. enhance factor 1 at m = 5, Solarize from m = 10: skip the work
        if name in _ENHANCE_OPS:
            return _ENHANCE_OPS[name](image, value)  # released: no random sign
        if name in _GEOMETRIC_OPS:
            return _GEOMETRIC_OPS[name](image, _random_sign(seed) * value, self.fill_value)
        if name == "Cutout":
            return cutout(image, value, tf.random.fold_in(seed, 1), self.fill_value)
        return _PIXEL_OPS[name](image, value)  # Posterize, Solarize, SolarizeAdd

    def _layer(self, image, seed):
        """One RandAugment layer: pick one op uniformly, run only that one."""
        choice_seed, op_seed = tf.unstack(tf.random.split(seed, 2))
        index = tf.random.stateless_uniform([], choice_seed, 0, len(self.ops), dtype=tf.int32)
        branches = [lambda name=name: self.apply_op(image, name, op_seed) for name in self.ops]
        return tf.ensure_shape(tf.switch_case(index, branches), image.shape)

    def __call__(self, image, seed=None):
        image = tf.convert_to_tensor(image)
        if self.is_identity:
            return image
        seed = random_seed() if seed is None else seed
        seeds = tf.random.split(seed, self.num_layers)
        # The layers run in a loop, so the 16-branch switch is built once, not once per layer (half
        # the graph-building time). A loop, not a nested tf.function: a function traced inside the
        # input pipeline is not found by a remote worker under MultiWorkerMirroredStrategy.
        _, image = tf.while_loop(
            lambda i, _: i < self.num_layers,
            lambda i, image: (i + 1, self._layer(image, seeds[i])),
            (tf.constant(0), image),
            maximum_iterations=self.num_layers,
        )
        return image
