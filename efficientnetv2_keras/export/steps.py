"""The steps every export takes, in order: settle what is exported, compute the parity reference,
trace the inference function, and describe the written file.

    settings = prepare(model, path, mode, ...)          # fails before any work on a bad target or argument
    checked = parity_samples(settings, sample_images)   # images and the served model's outputs on them
    concrete = traced_inference(settings)               # model(images, training=False), checked
    ... convert, write through files.atomic_output, compare with `checked.reference` ...
    return export_result(settings, checked, format=..., ...)
"""

import dataclasses

from efficientnetv2_keras.export import common, graph_check, parity, samples
from efficientnetv2_keras.export.common import INPUT_NAME, OUTPUT_NAME


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What an export writes and traces: the checked target, input size and batch, the model to serve."""

    path: str
    image_size: int
    crop_padding: int
    batch_size: object  # int, or None for a dynamic batch
    served: common.ServedModel


@dataclasses.dataclass(frozen=True)
class ParitySamples:
    """The images a written file is checked on, and what the served Keras model outputs for them."""

    images: object
    source: str
    reference: object
    precision_gap: object  # ParityReport of a mixed-precision model against its float32 rebuild, or None


def prepare(model, path, mode, *, image_size=None, crop_padding=None, batch_size=None, use_ema="auto",
            thresholds=None, overwrite=False):
    """The choices every export makes first, in this order: the target (an existing one is refused
    before any work), the image size, the crop padding, the batch, the model to serve (the model, or
    the float32 rebuild of a mixed-precision one: `common.model_to_serve`) and the parity thresholds of
    `mode` (validated here, used after writing)."""
    path = common.check_target(path, overwrite)
    image_size = common.resolve_image_size(model, image_size)
    crop_padding = common.resolve_crop_padding(crop_padding)
    batch_size = common.check_batch_size(batch_size)
    served = common.model_to_serve(model, use_ema)
    parity.thresholds_for(mode, thresholds)
    return ExportSettings(path, image_size, crop_padding, batch_size, served)


def parity_samples(settings, sample_images, representative_data=None, limit=64):
    """The parity images (`samples.parity_images`) and the served model's outputs on them."""
    images, source = samples.parity_images(
        sample_images, representative_data, settings.image_size, limit, settings.crop_padding
    )
    reference = settings.served.outputs(images)
    return ParitySamples(images, source, reference, settings.served.precision_gap(images, reference))


def image_spec(settings, name=INPUT_NAME):
    """The traced input: float32 pixels [batch, S, S, 3]."""
    import tensorflow as tf

    return tf.TensorSpec([settings.batch_size, settings.image_size, settings.image_size, 3], tf.float32, name=name)


def traced_inference(settings):
    """The served model's inference function traced for `image_spec`, checked for training, random and
    rate-variable ops (`graph_check.check_inference_graph`); outputs {"predictions": ...}."""
    import tensorflow as tf

    infer = settings.served.inference_function()
    function = tf.function(lambda images: {OUTPUT_NAME: infer(images)}, input_signature=[image_spec(settings)])
    concrete = function.get_concrete_function()
    check_traced(settings, concrete)
    return concrete


def check_traced(settings, traced):
    """No dropout, stochastic-depth or BatchNorm-update ops, and no read of the rate variables."""
    graph_check.check_inference_graph(
        traced, common.regularization_rate_variables(settings.served.model), what="traced inference function"
    )


def export_result(settings, checked, *, format, quantization, size_bytes, reports, op_types):
    """The `ExportResult` of a file written and checked from `settings` against `checked`."""
    return common.ExportResult(
        path=settings.path,
        format=format,
        quantization=quantization,
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        size_bytes=size_bytes,
        used_ema=settings.served.used_ema,
        sample_source=checked.source,
        parity=tuple(reports),
        op_types=tuple(op_types),
        crop_padding=settings.crop_padding,
        source_dtype_policy=settings.served.source_dtype_policy,
        precision_gap=checked.precision_gap,
    )
