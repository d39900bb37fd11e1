"""What every export shares: the inference function, EMA weights, the image size, the target path.

The most reported export failure of the released code (google/automl issues 994 and 1012) was a graph
traced in training mode: batch norm updating its statistics and the random drop-connect op, which TFLite rejects or turns
into TF-Select ops. Every export here traces one function, `model(images, training=False)`, so the
inference graph has no dropout, no stochastic-depth sampling and batch norm reading its moving
statistics; `graph_check` then verifies that on what was written. A model that computes in
float16/bfloat16 (mixed precision) is served as its float32 rebuild (`precision`, `model_to_serve`).
"""

import contextlib
import dataclasses
import os

import keras
import numpy as np

from efficientnetv2_keras.export import parity
from efficientnetv2_keras.export.precision import float32_rebuild, lower_precision_policy
from efficientnetv2_keras.limits import MIN_MODEL_IMAGE_SIZE
from efficientnetv2_keras.models.family import get_model_spec
from efficientnetv2_keras.models.layers import _VariableRateDropout

EMA_CHOICES = ("auto", True, False)
# The input and output names of every exported signature / graph.
INPUT_NAME = "images"
OUTPUT_NAME = "predictions"


def run_in_chunks(run, inputs, batch_size=None, chunk=32):
    """`run(part)` over `inputs` in chunks, outputs concatenated; the runtimes' shared batching.

    batch_size: the exported model's fixed batch (the last chunk is padded by repeating its last
    item, the padding's outputs dropped), or None for a dynamic-batch model, run `chunk` at a time.
    """
    step = batch_size or chunk
    outputs = []
    for start in range(0, len(inputs), step):
        part = inputs[start : start + step]
        count = len(part)
        if batch_size and count < batch_size:
            part = np.concatenate([part, np.repeat(part[-1:], batch_size - count, axis=0)])
        outputs.append(np.asarray(run(part))[:count])
    return np.concatenate(outputs)


def require_tensorflow_backend(what="Export"):
    """SavedModel, TFLite and ONNX are written from TensorFlow graphs: the TensorFlow backend only."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} traces the model with TensorFlow, but KERAS_BACKEND is {keras.backend.backend()!r}. Run it "
            "with KERAS_BACKEND=tensorflow (the default): a .keras file trained on JAX or PyTorch loads there "
            "unchanged."
        )


# -- image size and batch -----------------------------------------------------------------------


def resolve_image_size(model, image_size=None):
    """The square input side the export is traced for.

    A model built for a fixed size exports at that size (asking for another one is an error: the
    weights do not care, but the user's intent does). A model that takes any size (the default
    `input_shape=(None, None, 3)`) exports at `image_size`, else at the variant's eval size (the
    released code's `effnetv2_configs.py`: B0 224 ... XL 512), found from the model name the builder gives.
    """
    if len(model.inputs) != 1:
        raise ValueError(
            f"Export expects a model with one image input, got {len(model.inputs)} inputs."
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"Export expects channels-last RGB images [batch, height, width, 3]; the model input is "
            f"{shape}. Build the model with keras.config.set_image_data_format('channels_last')."
        )
    height, width = shape[1], shape[2]
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_MODEL_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be an int >= {MIN_MODEL_IMAGE_SIZE} (pixels per side), got {image_size!r}."
            )
    if height is not None or width is not None:
        if height != width:
            raise ValueError(
                f"Export supports square inputs; the model takes {height}x{width} images. Build it "
                "with input_shape=(None, None, 3) or a square size."
            )
        if image_size is not None and image_size != height:
            raise ValueError(
                f"The model was built for {height}x{height} images, but image_size={image_size} was "
                f"asked for. Leave image_size out (export at {height}), or rebuild the model with "
                f"input_shape=({image_size}, {image_size}, 3) (or (None, None, 3)) and load its weights."
            )
        return height
    if image_size is not None:
        return image_size
    try:
        return get_model_spec(model.name).eval_size
    except (ValueError, KeyError):
        raise ValueError(
            f"The model {model.name!r} takes any image size and is not named after a variant, so "
            "there is no default eval size: pass image_size (e.g. image_size=224)."
        ) from None


def resolve_crop_padding(crop_padding=None):
    """The evaluation centre-crop padding (None: the official 32; 0: resize the whole image)."""
    from efficientnetv2_keras.data.preprocessing import CROP_PADDING

    if crop_padding is None:
        return CROP_PADDING
    if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"crop_padding must be None or an int >= 0 (pixels), got {crop_padding!r}.")
    return crop_padding


def check_batch_size(batch_size):
    """None = dynamic batch (any batch at serving time); an int fixes it (some accelerators need it)."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be None (dynamic) or a positive int, got {batch_size!r}.")
    return batch_size


# -- EMA weights ----------------------------------------------------------------------------------


def ema_state_mapping(model, use_ema="auto"):
    """(model variable, EMA variable) pairs to serve instead of the model's current values.

    The pairs come from `training.ema.ema_variables`, the package's one EMA lookup: the optimizer's
    average of every trainable variable and, when the recipe averages them (`train.ema_bn_statistics`),
    of the BatchNorm moving statistics, seen through the `LossScaleOptimizer` that wraps the optimizer
    under mixed_float16. `fit` copies the averages into the model only when it ends, so a model
    exported from a callback or a restored mid-training checkpoint still holds the raw weights. The
    pairs are applied with `keras.StatelessScope` inside the traced function, which reads the EMA
    variables instead of the model's: the user's model is never modified.

    use_ema: "auto" = the EMA values when the model's optimizer keeps them, else the weights;
      True = the EMA values, an error if there are none; False = the model's weights.
    """
    from efficientnetv2_keras.training.ema import ema_optimizer, ema_variables  # keras only, no cycle

    if use_ema not in EMA_CHOICES:
        raise ValueError(f"use_ema must be one of {EMA_CHOICES}, got {use_ema!r}.")
    if use_ema is False:
        return []
    pairs = ema_variables(model) if ema_optimizer(model) is not None else []
    if not pairs:
        if use_ema is True:
            raise ValueError(
                "use_ema=True, but the model's optimizer keeps no moving averages (compile with an "
                "optimizer created with use_ema=True and train, or load a .keras file saved with one). "
                "Use use_ema='auto' or False to export the weights as they are."
            )
        return []
    model_variables = {id(v) for v in model.variables}
    pairs = [(variable, average) for variable, average in pairs if id(variable) in model_variables]
    if not pairs and use_ema is True:
        raise ValueError(
            "use_ema=True, but the optimizer's moving averages belong to other variables than this "
            "model's variables (was the optimizer built for another model?)."
        )
    return pairs


def regularization_rate_variables(model):
    """The dropout / stochastic-depth rate variables: an inference graph must never read them."""
    return [
        layer._rate
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, _VariableRateDropout)
    ]


# -- the inference function -----------------------------------------------------------------------


def inference_function(model, ema_mapping=()):
    """`images -> model(images, training=False)`, reading EMA values when `ema_mapping` is given.

    The StatelessScope is entered inside the function, so when it is traced the EMA variables are
    captured as variables (read ops), not baked in as eager constants.
    """
    ema_mapping = list(ema_mapping)

    def infer(images):
        scope = keras.StatelessScope(state_mapping=ema_mapping) if ema_mapping else contextlib.nullcontext()
        with scope:
            outputs = model(images, training=False)
        if isinstance(outputs, (list, tuple, dict)):
            raise ValueError(
                "Export expects a model with one output (classifier probabilities or features); "
                f"this one returns a {type(outputs).__name__}. Export a single-output model."
            )
        return outputs

    return infer


def keras_outputs(model, images, ema_mapping=(), batch_size=32):
    """The Keras model's own outputs on `images` (numpy), the reference for parity checks."""
    import numpy as np

    infer = inference_function(model, ema_mapping)
    chunks = [
        keras.ops.convert_to_numpy(infer(keras.ops.convert_to_tensor(images[i : i + batch_size])))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(chunks).astype("float32")


# -- what is served --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What an export traces (`model` with `ema_mapping`) and the user's model it stands for.

    For a model that computes in float16/bfloat16, `model` is its float32 rebuild holding the served
    (EMA) values, `ema_mapping` is empty, and `source` / `source_ema_mapping` / `source_dtype_policy`
    describe the user's model; otherwise `model` is the user's model and `source` is None.
    """

    model: object
    ema_mapping: tuple
    used_ema: bool
    source: object = None
    source_ema_mapping: tuple = ()
    source_dtype_policy: object = None  # e.g. "mixed_float16" when `model` is a float32 rebuild

    def outputs(self, images):
        """The outputs of what is served on `images` (numpy): the parity reference."""
        return keras_outputs(self.model, images, self.ema_mapping)

    def inference_function(self):
        return inference_function(self.model, self.ema_mapping)

    def precision_gap(self, images, reference):
        """The mixed-precision model against `reference` (the rebuild's outputs on `images`), a
        `ParityReport` with no limits; None when the user's model is served as it is."""
        if self.source is None:
            return None
        original = keras_outputs(self.source, images, self.source_ema_mapping)
        return parity.compare(reference, original, signature=f"{self.source_dtype_policy} model",
                              mode="none", thresholds=parity.NO_LIMITS)  # fmt: skip


def model_to_serve(model, use_ema="auto"):
    """The `ServedModel` for `model`: the model itself (with its EMA mapping) when every layer is
    float32, else its float32 rebuild (`precision.float32_rebuild`); `model` is never modified."""
    ema = tuple(ema_state_mapping(model, use_ema))
    policy = lower_precision_policy(model)
    if policy is None:
        return ServedModel(model, ema, bool(ema))
    return ServedModel(float32_rebuild(model, ema), (), bool(ema), model, ema, policy)


# -- the target -----------------------------------------------------------------------------------


def check_target(path, overwrite):
    """Fails before any work when the target exists and may not be replaced.

    Exports then write through `files.atomic_output`: a failed export leaves nothing at the target.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (tools/export.py: --overwrite) to replace "
            "it, or choose another output path."
        )
    return path


def path_size(path):
    """Bytes in a file, or in all files under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(path) for f in files
    )


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What was written and how well it matches the Keras model."""

    path: str
    format: str  # "saved_model", "tflite" or "onnx"
    quantization: str
    image_size: int
    batch_size: object  # int, or None for dynamic
    size_bytes: int
    used_ema: bool
    sample_source: str
    parity: tuple  # ParityReport per checked signature
    op_types: tuple
    crop_padding: object = None  # int: of the sample images read from sources and of the bytes signature
    source_dtype_policy: object = None  # "mixed_float16" / "mixed_bfloat16": served as its float32 rebuild
    precision_gap: object = None  # ParityReport: that mixed-precision model against the float32 rebuild

    def __str__(self):
        batch = "dynamic" if self.batch_size is None else self.batch_size
        lines = [
            f"Exported {self.format} ({self.quantization}) to {self.path}: "
            f"{self.size_bytes / 2**20:.1f} MiB, {self.image_size}x{self.image_size} px"
            f"{'' if self.crop_padding is None else f' (eval crop padding {self.crop_padding})'}, batch {batch}, "
            f"{'EMA' if self.used_ema else 'model'} weights.",
            f"Parity vs Keras on {self.parity[0].num_samples} images from {self.sample_source} "
            f"({self.parity[0].compared}):",
        ]
        lines += [f"  {report}" for report in self.parity]
        if self.precision_gap is not None:
            gap, policy = self.precision_gap, self.source_dtype_policy
            lines.append(
                f"The model computes in {policy}; the export serves its float32 rebuild (weights cast to "
                f"float32), the Keras reference above. On the same images the {policy} model differs from "
                f"the rebuild by max|dp|={gap.max_abs_diff:.2e}, mean TV={gap.mean_tv:.1e}, top-1 agree="
                f"{gap.top1_agreement:.1%}."
            )
        return "\n".join(lines)
