"""Model speed: our EfficientNetV2 vs keras.applications', side by side in one process (CPU here).

Both models have the same layers and weights, so the ratio should sit near 1.0; a drop would mean a
change to our blocks (e.g. the StochasticDepth layers, present in every residual block) costs speed.
Timed: process CPU time (user + system, which a shared machine disturbs less than wall time) and wall
time of `predict_on_batch` / `train_on_batch`, median of alternating rounds, after two warm-up calls.

    effnetv2-benchmark --sections=models [--models_variants=b0,s --models_sizes=128,192 --models_batches=16,64]
"""

import time

import keras
import numpy as np
from absl import flags

import efficientnetv2_keras as ev2

flags.DEFINE_list("models_variants", ["b0", "s"], "Variants compared with keras.applications.")
flags.DEFINE_list("models_sizes", ["128"], "Image sizes (px).")
flags.DEFINE_list("models_batches", ["16"], "Batch sizes.")
flags.DEFINE_integer("models_repeats", 5, "Calls per timed round.")
flags.DEFINE_integer("models_rounds", 5, "Alternating rounds (the median is reported).")


def _rates(step, batch, repeats):
    """(images per CPU-second, images per wall-second) of `repeats` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return batch * repeats / max(cpu, 1e-9), batch * repeats / max(wall, 1e-9)


def _side_by_side(steps, batch, repeats, rounds):
    """Median (CPU, wall) images/s of each step, measured in alternating rounds so drift hits both alike."""
    for step in steps:  # warm-up: tracing
        step()
        step()
    results = [[] for _ in steps]
    for _ in range(rounds):
        for result, step in zip(results, steps):
            result.append(_rates(step, batch, repeats))
    return [tuple(float(np.median([r[i] for r in result])) for i in range(2)) for result in results]


def _compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    return model


def run(flags_):
    quick = flags_.quick
    variants = ["b0"] if quick else flags_.models_variants
    sizes = [int(s) for s in flags_.models_sizes]
    batches = [int(b) for b in flags_.models_batches]
    repeats, rounds = (2, 2) if quick else (flags_.models_repeats, flags_.models_rounds)
    lines = [
        "CPU, float32, no XLA; images per CPU-second (process user + system) and per wall-second; "
        "ratio = ours / keras.applications (CPU time)",
        "| model | size | batch | infer ours | infer keras | ratio | train ours | train keras | ratio | train wall ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rng = np.random.default_rng(0)
    for variant in variants:
        for size in sizes:
            for batch in batches:
                images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
                labels = rng.integers(0, 1000, batch)
                ours = ev2.build_model(variant, input_shape=(size, size, 3))
                constructor = ev2.KERAS_APPLICATIONS[ev2.get_model_spec(variant).name]
                reference = getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3))
                ev2.load_weights_from_keras_applications(ours, reference)
                ours, reference = _compiled(ours), _compiled(reference)
                ours_infer, ref_infer = _side_by_side(
                    [lambda: ours.predict_on_batch(images), lambda: reference.predict_on_batch(images)],
                    batch, repeats, rounds,
                )
                ours_train, ref_train = _side_by_side(
                    [lambda: ours.train_on_batch(images, labels), lambda: reference.train_on_batch(images, labels)],
                    batch, repeats, rounds,
                )
                lines.append(
                    f"| {variant} | {size} | {batch} | {ours_infer[0]:.1f} | {ref_infer[0]:.1f} "
                    f"| {ours_infer[0] / ref_infer[0]:.2f} | {ours_train[0]:.1f} | {ref_train[0]:.1f} "
                    f"| {ours_train[0] / ref_train[0]:.2f} | {ours_train[1] / ref_train[1]:.2f} |"
                )
                print(lines[-1], flush=True)
                keras.backend.clear_session()
    return "\n".join(lines)
