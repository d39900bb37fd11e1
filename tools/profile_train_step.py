"""Where a train step's fixed cost comes from: ours vs keras.applications, TensorFlow backend.

For each model: ops in the traced train step (by type: random draws, variable reads/writes), the
variables the step threads through (trainable, non-trainable, seed-generator states), and the process
CPU time (user + system) per step, measured in alternating rounds. No test depends on it.

    python tools/profile_train_step.py --model=b0 --size=128 --batch=16 --steps=5
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KERAS_APPLICATIONS = {"b0": "EfficientNetV2B0", "s": "EfficientNetV2S"}


def _models(name, size):
    import keras

    import efficientnetv2_keras as ev2

    shape = (size, size, 3)
    ours = ev2.build_model(name, input_shape=shape)
    reference = getattr(keras.applications, KERAS_APPLICATIONS[name])(weights=None, input_shape=shape)
    return {"ours": ours, "keras": reference}


def graph_profile(model, size, batch):
    import keras
    import tensorflow as tf

    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    spec = (tf.TensorSpec((batch, size, size, 3), tf.float32), tf.TensorSpec((batch,), tf.int64))
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    types = collections.Counter()

    def walk(g):
        for op in g.get_operations():
            types[op.type] += 1
        for function in getattr(g, "_functions", {}).values():
            walk(function.graph) if hasattr(function, "graph") else None

    walk(graph)
    random = sum(n for t, n in types.items() if "Random" in t)
    seeds = [v for v in model.non_trainable_variables if "seed" in v.path]
    return {"ops": sum(types.values()), "random_ops": random, "reads": types["ReadVariableOp"],
            "writes": types["AssignVariableOp"] + types["AssignAddVariableOp"] + types["AssignSubVariableOp"],
            "variables": len(model.variables), "non_trainable": len(model.non_trainable_variables),
            "seed_states": len(seeds)}


def cpu_per_step(models, size, batch, steps, rounds=3):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, batch)
    for model in models.values():
        model.train_on_batch(x, y)  # trace
        model.train_on_batch(x, y)
    samples = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.process_time()
            for _ in range(steps):
                model.train_on_batch(x, y)
            samples[name].append((time.process_time() - start) / steps)
    return {name: float(np.median(values)) for name, values in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="b0", choices=sorted(KERAS_APPLICATIONS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no_graph", action="store_true", help="Skip the op counts.")
    args = parser.parse_args(argv)
    models = _models(args.model, args.size)
    if not args.no_graph:
        for name, model in models.items():
            print(name, graph_profile(model, args.size, args.batch), flush=True)
    cpu = cpu_per_step(models, args.size, args.batch, args.steps)
    print(f"{args.model} {args.size} px batch {args.batch}: CPU s/step ours {cpu['ours']:.3f}, keras "
          f"{cpu['keras']:.3f}, ours/keras speed {cpu['keras'] / cpu['ours']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
