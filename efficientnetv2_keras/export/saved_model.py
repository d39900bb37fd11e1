"""SavedModel export with two serving signatures: float images and encoded image bytes.

`serving_default` takes float32 pixels [batch, S, S, 3] in [0, 255] (what `build_dataset` yields).
`serving_bytes` takes a batch of encoded JPEG/PNG/BMP/GIF files (tf.string) and decodes, centre-crops
and resizes them inside the graph with the package's evaluation preprocessing
(`data.preprocess_for_eval`), so a serving system can post raw files. Both return
{"predictions": model outputs}.

Written with Keras' `ExportArchive`, which keeps only the variables the signatures read (no
optimizer state, no dropout rates); reload with `tf.saved_model.load` or `keras.layers.TFSMLayer`.
"""

import numpy as np

from efficientnetv2_keras.data.preprocessing import decode_and_preprocess
from efficientnetv2_keras.export import common, graph_check, parity, steps
from efficientnetv2_keras.export.common import INPUT_NAME, OUTPUT_NAME
from efficientnetv2_keras.files import atomic_output

FLOAT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
BYTES_INPUT_NAME = "image_bytes"


def _endpoints(infer, image_size, batch_size, crop_padding):
    import tensorflow as tf

    def serve_images(images):
        return {OUTPUT_NAME: infer(images)}

    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda one: decode_and_preprocess(one, image_size, crop_padding),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32),
        )
        return {OUTPUT_NAME: infer(images)}

    image_spec = tf.TensorSpec([batch_size, image_size, image_size, 3], tf.float32, name=INPUT_NAME)
    bytes_spec = tf.TensorSpec([batch_size], tf.string, name=BYTES_INPUT_NAME)
    return [(FLOAT_SIGNATURE, serve_images, image_spec), (BYTES_SIGNATURE, serve_bytes, bytes_spec)]


def _encode_png(images):
    """The samples as PNG files (lossless), to drive the bytes signature."""
    import tensorflow as tf

    pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return np.array([tf.io.encode_png(image).numpy() for image in pixels], dtype=object)


def export_saved_model(
    model,
    path,
    *,
    sample_images=None,
    num_parity_samples=64,
    image_size=None,
    batch_size=None,
    use_ema="auto",
    crop_padding=None,
    thresholds=None,
    overwrite=False,
):
    """Writes the inference graph of `model` as a SavedModel directory, checked before it lands at `path`.

    Args:
      model: a Keras model taking float pixels in [0, 255], with one output.
      path: the SavedModel directory. Never overwritten unless `overwrite=True`; a failed export
        leaves nothing there (written to a temporary sibling, renamed into place when checked).
      sample_images: images for the parity check: a data source name ("digits", "folder:/path"),
        a `Source`, an array [N, S, S, 3] in [0, 255] or a tf.data dataset; default the digits.
      image_size: the square input size; default the model's fixed size or the variant's eval size.
      batch_size: None for a dynamic batch, or an int to fix it.
      use_ema: "auto" | True | False: export the optimizer's EMA weights (see `common.ema_state_mapping`).
      crop_padding: centre-crop padding of the bytes signature's preprocessing (and of sample images
        read from sources); default 32 (official); 0 = resize the whole image.
      thresholds: override the "saved_model" entry of `parity.PARITY_THRESHOLDS`.
    Both signatures are checked: `serving_default` against Keras on the samples, `serving_bytes` on
    the samples PNG-encoded against Keras on the same files decoded and preprocessed eagerly.
    Returns an `ExportResult`.
    """
    common.require_tensorflow_backend()
    settings = steps.prepare(model, path, "saved_model", image_size=image_size, crop_padding=crop_padding,
                             batch_size=batch_size, use_ema=use_ema, thresholds=thresholds, overwrite=overwrite)
    checked = steps.parity_samples(settings, sample_images, None, num_parity_samples)
    encoded = _encode_png(checked.images)
    decoded = np.stack([decode_and_preprocess(e, settings.image_size, settings.crop_padding).numpy() for e in encoded])
    reference_bytes = settings.served.outputs(decoded)
    archive = _archive(settings)
    with atomic_output(settings.path, overwrite) as temporary:
        # Custom gradients are saved (TF's default) although serving needs none: without them,
        # the export is ~2x faster but every tf.saved_model.load warns about them.
        archive.write_out(temporary, verbose=False)
        op_types, outputs, outputs_bytes = _run_written(temporary, checked.images, encoded, settings.batch_size)
        reports = [
            parity.compare(checked.reference, outputs, signature=f"saved_model {FLOAT_SIGNATURE}",
                           mode="saved_model", thresholds=thresholds),  # fmt: skip
            parity.compare(reference_bytes, outputs_bytes, signature=f"saved_model {BYTES_SIGNATURE}",
                           mode="saved_model", thresholds=thresholds),  # fmt: skip
        ]
        parity.raise_if_failed(reports, f"the SavedModel export to {settings.path}")
        size = common.path_size(temporary)
    return steps.export_result(settings, checked, format="saved_model", quantization="none", size_bytes=size,
                               reports=reports, op_types=op_types)


def _archive(settings):
    """A Keras `ExportArchive` with both signatures, traced and checked for training ops."""
    import keras
    import tensorflow as tf

    infer = settings.served.inference_function()
    # Not archive.track(model): that stores every variable a second time (measured: 2x the size)
    # and adds the rate and seed variables; the endpoints' own variables are all a model needs.
    archive = keras.export.ExportArchive()
    traced = []
    for name, function, spec in _endpoints(infer, settings.image_size, settings.batch_size, settings.crop_padding):
        function = tf.function(function, input_signature=[spec], autograph=False)
        traced.append(function.get_concrete_function())
        archive.add_endpoint(name, function)
    steps.check_traced(settings, traced)
    return archive


def _run_written(path, images, encoded, batch_size):
    """(op types, float signature outputs, bytes signature outputs) of the SavedModel written at `path`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    op_types = graph_check.check_inference_graph(loaded, what="SavedModel")
    signatures = loaded.signatures
    outputs = _run(signatures[FLOAT_SIGNATURE], INPUT_NAME, images, batch_size)
    outputs_bytes = _run(signatures[BYTES_SIGNATURE], BYTES_INPUT_NAME, encoded, batch_size)
    return op_types, outputs, outputs_bytes


def _run(signature, input_name, inputs, batch_size, chunk=32):
    """Calls a signature on `inputs` in chunks; a fixed batch gets its last chunk padded."""
    import tensorflow as tf

    def run(part):
        tensor = tf.constant(list(part), tf.string) if part.dtype == object else tf.constant(part)
        return signature(**{input_name: tensor})[OUTPUT_NAME].numpy()

    return common.run_in_chunks(run, inputs, batch_size, chunk)
