"""Running a TFLite model: the interpreter (LiteRT, or TensorFlow's deprecated fallback) and its op list.

Used by the TFLite export (parity check) and by the graph check (operator list), which therefore
do not import each other.
"""

import warnings

import numpy as np

from efficientnetv2_keras.export.common import INPUT_NAME, OUTPUT_NAME, run_in_chunks

SIGNATURE_KEY = "serving_default"


def interpreter_backend():
    """'ai_edge_litert' when LiteRT is installed, else 'tf.lite' (deprecated in TF 2.21)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401

        return "ai_edge_litert"
    except ImportError:
        return "tf.lite"


def make_interpreter(model_path=None, model_content=None, num_threads=None, delegates=True):
    """A TFLite interpreter from LiteRT, or from tf.lite (its deprecation warning silenced).

    delegates=False disables the default XNNPACK delegate, so that the op list shows the model's
    own operators (a delegate replaces them by DELEGATE nodes).
    """
    kwargs = {"model_path": model_path, "model_content": model_content, "num_threads": num_threads}
    if interpreter_backend() == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    else:
        import tensorflow as tf

        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    if not delegates:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        warnings.filterwarnings("ignore", message=".*deprecated.*LiteRT.*")
        return Interpreter(**kwargs)


def run_tflite(interpreter, images, batch_size=None, chunk=32):
    """Runs the exported signature on `images` [N, S, S, 3]; returns outputs [N, ...].

    batch_size: the model's fixed batch (the last chunk is padded), or None for a dynamic-batch
    model, run in chunks of `chunk` images (measured: the same outputs as one image at a time, in
    every quantization mode; dynamic-range int8 quantizes activations per image row).
    """
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)

    def run(part):
        return runner(**{INPUT_NAME: part})[OUTPUT_NAME]

    return run_in_chunks(run, np.asarray(images, np.float32), batch_size, chunk)


def tflite_op_names(model_content):
    """Operator names of a TFLite flatbuffer, before any delegate replaces them."""
    interpreter = make_interpreter(model_content=model_content, delegates=False)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})
