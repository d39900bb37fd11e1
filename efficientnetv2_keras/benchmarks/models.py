"""Model speed: our EfficientNetV2 vs keras.applications', side by side in one process (CPU here).

Both models have the same layers and weights. Inference runs Keras' own layers in both, so its ratio
should sit near 1.0. A train step differs: ours runs TensorFlow's fused BatchNorm
(`models.batch_norm.FusedBatchNormalization`) and fused optimizer updates (`training.fused_updates`);
"ours before" is our model with both turned off (`fused=False`: Keras' BatchNorm computation and Keras'
per-variable updates), so the three train columns show what the fused step buys and where it stands
against keras.applications. `--models_optimizer`: "sgd" (lr 0.01; keras.applications with
keras.optimizers.SGD) or "rmsprop" (the recipe's RMSprop(rho 0.9, momentum 0.9, epsilon 1e-3) with
weight EMA; keras.applications with keras.optimizers.RMSprop(use_ema=True)).
Timed: process CPU time (user + system, which a shared machine disturbs less than wall time) and wall
time of `predict_on_batch` / `train_on_batch`, median of alternating rounds, after two warm-up calls.
With `--models_ops`, the ops of each traced train step (TensorFlow only).

    effnetv2-benchmark --sections=models [--models_variants=b0,s --models_sizes=128,192 --models_batches=16,64]
"""

import collections
import time

import keras
import numpy as np

import efficientnetv2_keras as ev2

LEARNING_RATE = 0.01


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


def _optimizer(kind, ours, fused=True):
    """The train step's optimizer: ours (fused or not) or Keras' own (for keras.applications)."""
    from efficientnetv2_keras.training import optimizers

    if kind == "sgd":
        return optimizers.SGD(LEARNING_RATE, fused=fused) if ours else keras.optimizers.SGD(LEARNING_RATE)
    settings = {"learning_rate": LEARNING_RATE, "rho": 0.9, "momentum": 0.9, "epsilon": 1e-3, "use_ema": True,
                "ema_momentum": 0.9999}
    if ours:
        return optimizers.RMSprop(l2_weight_decay=1e-5, fused=fused, **settings)
    return keras.optimizers.RMSprop(**settings)


def set_fused(model, fused):
    """Turns TensorFlow's fused BatchNorm on or off in every `FusedBatchNormalization` layer of `model`."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, ev2.FusedBatchNormalization):
            layer.fused = fused


def _compiled(model, optimizer):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def comparison_models(variant, size, optimizer):
    """{"before": ours unfused, "after": ours fused, "keras": keras.applications'}, same weights, compiled."""
    shape = (size, size, 3)
    reference = getattr(keras.applications, ev2.KERAS_APPLICATIONS[ev2.get_model_spec(variant).name])(
        weights=None, input_shape=shape)
    models = {}
    for name, fused in (("before", False), ("after", True)):
        model = ev2.build_model(variant, input_shape=shape)
        ev2.load_weights_from_keras_applications(model, reference)
        set_fused(model, fused)
        models[name] = _compiled(model, _optimizer(optimizer, ours=True, fused=fused))
    models["keras"] = _compiled(reference, _optimizer(optimizer, ours=False))
    return models


def train_step_op_counts(model):
    """Ops of `model.train_step` traced by TensorFlow (functions it calls included), by op type.

    The model must be compiled with a loss on sparse class ids; the batch size is left unknown.
    """
    import tensorflow as tf

    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int64))
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    types = collections.Counter()

    def walk(graph):
        for operation in graph.get_operations():
            types[operation.type] += 1
        for function in getattr(graph, "_functions", {}).values():
            if hasattr(function, "graph"):
                walk(function.graph)

    walk(graph)
    return types


def _ops_line(variant, models):
    counts = {name: sum(train_step_op_counts(model).values()) for name, model in models.items()}
    return (f"| {variant} | {counts['before']} | {counts['after']} | {counts['keras']} "
            f"| {counts['after'] / counts['before']:.2f} |")


def _inference_line(variant, size, batch, models, images, repeats, rounds):
    ours, reference = models["after"], models["keras"]
    ours_rate, keras_rate = _side_by_side(
        [lambda: ours.predict_on_batch(images), lambda: reference.predict_on_batch(images)], batch, repeats, rounds)
    return (f"| {variant} | {size} | {batch} | {ours_rate[0]:.1f} | {keras_rate[0]:.1f} "
            f"| {ours_rate[0] / keras_rate[0]:.2f} |")


def _train_line(variant, size, batch, models, images, labels, repeats, rounds):
    steps = [lambda model=model: model.train_on_batch(images, labels) for model in models.values()]
    before, after, reference = _side_by_side(steps, batch, repeats, rounds)
    return (f"| {variant} | {size} | {batch} | {before[0]:.1f} | {after[0]:.1f} | {reference[0]:.1f} "
            f"| {after[0] / before[0]:.2f} | {after[0] / reference[0]:.2f} | {before[1]:.1f} | {after[1]:.1f} "
            f"| {reference[1]:.1f} | {after[1] / reference[1]:.2f} |")


TRAIN_HEADER = [
    "Train step, images per second: CPU = process CPU time (user + system), wall = elapsed; "
    "before = ours with fused=False (Keras' BatchNorm and optimizer updates), after = ours, keras = keras.applications",
    "| model | size | batch | CPU before | CPU after | CPU keras | after/before | after/keras "
    "| wall before | wall after | wall keras | after/keras (wall) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
INFERENCE_HEADER = [
    "Inference, images per CPU-second (Keras' own layers in both: the ratio should be ~1)",
    "| model | size | batch | ours | keras | ratio |",
    "|---|---:|---:|---:|---:|---:|",
]
OPS_HEADER = ["Ops in the traced train step (unknown batch size)",
              "| model | before | after | keras | after/before |", "|---|---:|---:|---:|---:|"]


def run(options):
    quick = options.quick
    variants = ["b0"] if quick else options.models_variants
    sizes = [int(s) for s in options.models_sizes]
    batches = [int(b) for b in options.models_batches]
    repeats, rounds = (2, 2) if quick else (options.models_repeats, options.models_rounds)
    tables = {"ops": list(OPS_HEADER), "train": list(TRAIN_HEADER), "inference": list(INFERENCE_HEADER)}
    rng = np.random.default_rng(0)
    for variant in variants:
        if options.models_ops:  # the traced step has unknown batch and size: one count per variant
            tables["ops"].append(_ops_line(variant, comparison_models(variant, sizes[0], options.models_optimizer)))
            keras.backend.clear_session()
        for size in sizes:
            for batch in batches:
                images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
                labels = rng.integers(0, 1000, batch)
                models = comparison_models(variant, size, options.models_optimizer)
                if options.models_inference:
                    tables["inference"].append(_inference_line(variant, size, batch, models, images, repeats, rounds))
                tables["train"].append(_train_line(variant, size, batch, models, images, labels, repeats, rounds))
                print(tables["train"][-1], flush=True)
                keras.backend.clear_session()
    header = (f"CPU, float32, no XLA; optimizer {options.models_optimizer}; median of {rounds} alternating rounds of "
              f"{repeats} calls")
    shown = [tables["train"]] + ([tables["inference"]] if options.models_inference else [])
    shown += [tables["ops"]] if options.models_ops else []
    return "\n\n".join([header] + ["\n".join(table) for table in shown])
