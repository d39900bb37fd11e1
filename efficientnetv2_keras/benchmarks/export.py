"""Export section of `effnetv2-benchmark`: B0 at 224 px, file sizes and CPU inference speed, side by side.

One run exports EfficientNetV2-B0 (1000 classes, 224 px) as a SavedModel, as TFLite fp32, float16,
dynamic int8 and int8, and as ONNX (when tf2onnx and onnxruntime are installed), then times on this
CPU, interleaved round by round (best round kept, so a burst of load from another process hits one
round, not one row):
  * Keras `model.predict` at batch 32, 128 images per call (the baseline of every ratio),
  * the SavedModel's float signature at batch 32,
  * each TFLite file and the ONNX file at batch 1 (one image per call, as on a device) and batch 32,
with the TFLite interpreter (XNNPACK) and ONNX Runtime (CPU provider) using all cores
(`os.cpu_count()` threads). Beside images/s (wall clock), the process CPU time (user + sys, all
threads) per image at batch 32 of the same best round: on a shared machine wall time depends on the
other load, CPU time much less. Weights are random
(batch-norm statistics taken from a batch of images so that activations have realistic ranges):
speed and size do not depend on the values, and parity, shown for completeness, is not meaningful
for an untrained 1000-class model (its probabilities are all ~1e-3), so the checks are relaxed here.
"""

import os
import shutil
import tempfile
import time

import numpy as np

SIZE = 224
BATCH = 32
MODES = ("none", "float16", "dynamic_int8", "int8")


def _model():
    import keras

    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.export import load_images

    keras.utils.set_random_seed(0)
    model = ev2.EfficientNetV2B0(input_shape=(SIZE, SIZE, 3), bn_momentum=0.0)
    images, _ = load_images("digits", SIZE, 32)
    model(images, training=True)  # momentum 0: the moving statistics become this batch's
    return model


def _best_rates(runners, rounds):
    """Per runner (name -> (callable, images per call, calls)): (images/s, process CPU ms per image)
    of its best of interleaved rounds."""
    best = dict.fromkeys(runners, (0.0, 0.0))
    for _ in range(rounds):
        for name, (call, per_call, calls) in runners.items():
            call()  # warm-up (tracing, allocation, thread pools)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(calls):
                call()
            rate = per_call * calls / (time.perf_counter() - start)
            cpu_ms = 1000 * (time.process_time() - cpu_start) / (per_call * calls)
            if rate > best[name][0]:
                best[name] = (rate, cpu_ms)
    return best


def _onnx_available():
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnx", "onnxruntime"))


def _onnx_version():
    if not _onnx_available():
        return "not installed"
    import onnxruntime

    return onnxruntime.__version__


def run(options) -> str:
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # SavedModel writing logs several INFO lines per export
    try:
        return _run(bool(getattr(options, "quick", False)))
    finally:
        logging.set_verbosity(verbosity)


def _run(quick):
    from efficientnetv2_keras import export

    rounds = 2 if quick else 3
    model = _model()
    images, _ = export.load_images("digits", SIZE, BATCH, prefer_eval=True)
    folder = tempfile.mkdtemp(prefix="bench_export_")
    try:
        results, convert_s = _export_every_format(model, images, folder, quick)
        measured = _best_rates(_runners(model, images, results, quick), rounds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rates = {name: rate for name, (rate, _) in measured.items()}
    cpu_ms = {name: cpu for name, (_, cpu) in measured.items()}
    return _report(results, convert_s, rates, cpu_ms, rounds, quick)


def _export_every_format(model, images, folder, quick):
    """(ExportResult, export seconds) per format: SavedModel, ONNX when installed, each TFLite mode."""
    from efficientnetv2_keras import export

    relaxed = {mode: export.NO_LIMITS for mode in ("saved_model", "onnx") + MODES}
    exports = {"saved_model": lambda: export.export_saved_model(
        model, os.path.join(folder, "b0"), thresholds=relaxed, sample_images=images)}
    if _onnx_available():
        exports["onnx"] = lambda: export.export_onnx(
            model, os.path.join(folder, "b0.onnx"), thresholds=relaxed, sample_images=images)
    for mode in MODES:
        exports[mode] = lambda mode=mode: export.export_tflite(
            model, os.path.join(folder, f"b0_{mode}.tflite"), mode, representative_data="digits",
            num_calibration=32 if quick else 100, sample_images=images, thresholds=relaxed,
        )  # fmt: skip
    results, convert_s = {}, {}
    for name, write in exports.items():
        start = time.perf_counter()
        results[name] = write()
        convert_s[name] = time.perf_counter() - start
    return results, convert_s


def _runners(model, images, results, quick):
    """name -> (call, images per call, calls per round): Keras, the SavedModel, each file at batch 1 and 32."""
    import tensorflow as tf

    from efficientnetv2_keras import export

    calls_b1, calls_b32 = (8, 1) if quick else (32, 2)
    serving = tf.saved_model.load(results["saved_model"].path).signatures[export.FLOAT_SIGNATURE]
    batch = tf.constant(images)
    # predict() has a fixed cost per call (data adapter, iterator): give it 4 batches per call.
    predict_images = np.concatenate([images] * 4)
    runners = {
        "keras": (lambda: model.predict(predict_images, batch_size=BATCH, verbose=0), 4 * BATCH, calls_b32),
        "saved_model": (lambda: serving(images=batch), BATCH, calls_b32),
    }
    for mode in MODES:
        interpreter = export.make_interpreter(model_path=results[mode].path, num_threads=os.cpu_count())
        runner = interpreter.get_signature_runner(export.FLOAT_SIGNATURE)
        one, many = images[:1], images

        runners[f"{mode} b1"] = (lambda r=runner, x=one: r(images=x), 1, calls_b1)
        runners[f"{mode} b32"] = (lambda r=runner, x=many: r(images=x), BATCH, calls_b32)
    if "onnx" in results:
        session = export.make_session(results["onnx"].path, num_threads=os.cpu_count())
        feeds = {"one": {"images": images[:1]}, "many": {"images": images}}
        runners["onnx b1"] = (lambda: session.run(None, feeds["one"]), 1, calls_b1)
        runners["onnx b32"] = (lambda: session.run(None, feeds["many"]), BATCH, calls_b32)
    return runners


def _report(results, convert_s, rates, cpu_ms, rounds, quick):
    from efficientnetv2_keras import export

    keras_rate = rates["keras"]
    names = {"none": "TFLite fp32", "float16": "TFLite float16", "dynamic_int8": "TFLite dynamic int8",
             "int8": "TFLite int8", "onnx": "ONNX (ONNX Runtime)"}  # fmt: skip
    lines = [
        f"EfficientNetV2-B0, 1000 classes, {SIZE}x{SIZE} px, {os.cpu_count()} CPU cores, best of {rounds} "
        f"interleaved rounds{', --quick' if quick else ''}; TFLite interpreter: {export.interpreter_backend()}, "
        f"{os.cpu_count()} threads; ONNX Runtime {_onnx_version()}.",
        "| format | file MiB | export s | max abs diff vs Keras | images/s batch 1 | images/s batch 32 | "
        "CPU ms/image (b32) | x Keras (b32) |",
        "|---|---|---|---|---|---|---|---|",
        f"| Keras predict | - | - | - | - | {keras_rate:.1f} | {cpu_ms['keras']:.1f} | 1.00 |",
        f"| SavedModel serving_default | {results['saved_model'].size_bytes / 2**20:.1f} | "
        f"{convert_s['saved_model']:.0f} | {results['saved_model'].parity[0].max_abs_diff:.1e} | - | "
        f"{rates['saved_model']:.1f} | {cpu_ms['saved_model']:.1f} | {rates['saved_model'] / keras_rate:.2f} |",
    ]
    for mode in MODES + (("onnx",) if "onnx" in results else ()):
        result = results[mode]
        lines.append(
            f"| {names[mode]} | {result.size_bytes / 2**20:.1f} | {convert_s[mode]:.0f} | "
            f"{result.parity[0].max_abs_diff:.1e} | {rates[f'{mode} b1']:.1f} | {rates[f'{mode} b32']:.1f} | "
            f"{cpu_ms[f'{mode} b32']:.1f} | {rates[f'{mode} b32'] / keras_rate:.2f} |"
        )
    lines.append(
        "Export s includes tracing, conversion (int8: calibration), the graph check and the parity run. "
        "Random weights: the diffs show numerics only, not accuracy."
        + ("" if "onnx" in results else " ONNX: not measured (pip install 'efficientnetv2-keras[onnx]').")
    )
    return "\n".join(lines)
