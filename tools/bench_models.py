"""Model speed: our EfficientNetV2 vs keras.applications', side by side in one process (CPU here).

Both models have the same layers and weights, so the ratio should sit near 1.0; a drop would mean a
change to our blocks (e.g. the StochasticDepth layers, present in every residual block) costs speed.
"""

import time

import keras
import numpy as np

import efficientnetv2_keras as ev2


def _images_per_second(step, batch, repeats):
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - start)


def _side_by_side(steps, batch, repeats, rounds):
    """Median images/s of each step, measured in alternating rounds so drift hits both alike."""
    for step in steps:  # warm-up: tracing
        step()
        step()
    results = [[] for _ in steps]
    for _ in range(rounds):
        for result, step in zip(results, steps):
            result.append(_images_per_second(step, batch, repeats))
    return [float(np.median(r)) for r in results]


def _compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    return model


def run(flags):
    variants = ["b0"] if flags.quick else ["b0", "s"]
    size, batch = 128, 16
    repeats, rounds = (2, 2) if flags.quick else (5, 5)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, batch)
    lines = [
        f"CPU, {size} px, batch {batch}, float32, no XLA; images/s (higher is better), ratio = ours / keras.applications",
        "| model | infer ours | infer keras | ratio | train ours | train keras | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        ours = ev2.build_model(variant, input_shape=(size, size, 3))
        constructor = ev2.KERAS_APPLICATIONS[ev2.get_model_spec(variant).name]
        reference = getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3))
        ev2.load_weights_from_keras_applications(ours, reference)
        ours, reference = _compiled(ours), _compiled(reference)
        ours_infer, ref_infer = _side_by_side(
            [lambda: ours.predict_on_batch(images), lambda: reference.predict_on_batch(images)], batch, repeats, rounds
        )
        ours_train, ref_train = _side_by_side(
            [lambda: ours.train_on_batch(images, labels), lambda: reference.train_on_batch(images, labels)],
            batch, repeats, rounds,
        )
        lines.append(
            f"| {variant} | {ours_infer:.1f} | {ref_infer:.1f} | {ours_infer / ref_infer:.2f} "
            f"| {ours_train:.1f} | {ref_train:.1f} | {ours_train / ref_train:.2f} |"
        )
        keras.backend.clear_session()
    return "\n".join(lines)
