"""Where a train step's fixed cost comes from: ours (fused and not) vs keras.applications, TensorFlow backend.

For each model: ops in the traced train step (by type, and by the part of the model or step that made
them: BatchNorm layers, stochastic depth, gradients, optimizer), the variables the step threads through,
and the process CPU time (user + system) per step, measured in alternating rounds. "before" is our
model and optimizer with `fused=False` (Keras' BatchNorm computation and per-variable optimizer
updates), "after" ours as shipped, "keras" keras.applications' model with Keras' optimizer (see
`efficientnetv2_keras.benchmarks.models`). No test depends on it.

    python tools/profile_train_step.py --model=b0 --size=128 --batch=16 --steps=5 [--optimizer=rmsprop]
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Name fragments of the ops each part of the step makes (op names carry the layer or optimizer name).
PARTS = (("gradient", "gradients"), ("_bn", "batch norm"), ("drop", "stochastic depth"), ("sgd", "optimizer"),
         ("rmsprop", "optimizer"), ("adam", "optimizer"))


def graph_profile(model):
    import tensorflow as tf

    from efficientnetv2_keras.benchmarks.models import train_step_op_counts

    types = train_step_op_counts(model)
    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int64))
    parts = collections.Counter()
    for operation in tf.function(model.train_step).get_concrete_function(spec).graph.get_operations():
        name = operation.name.lower()
        parts[next((part for fragment, part in PARTS if fragment in name), "other")] += 1
    seeds = [v for v in model.non_trainable_variables if "seed" in v.path]
    return {"ops": sum(types.values()), "by part (top-level graph)": dict(parts),
            "random_ops": sum(n for t, n in types.items() if "Random" in t), "reads": types["ReadVariableOp"],
            "fused_updates": sum(n for t, n in types.items() if t.startswith("ResourceApply")),
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
    parser.add_argument("--model", default="b0", choices=("b0", "b1", "b2", "b3", "s", "m", "l"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "rmsprop"),
                        help="sgd, or the recipe's RMSprop with weight EMA")
    parser.add_argument("--no_graph", action="store_true", help="Skip the op counts.")
    args = parser.parse_args(argv)
    from efficientnetv2_keras.benchmarks.models import comparison_models

    models = comparison_models(args.model, args.size, args.optimizer)
    if not args.no_graph:
        for name, model in models.items():
            print(name, graph_profile(model), flush=True)
    cpu = cpu_per_step(models, args.size, args.batch, args.steps)
    print(f"{args.model} {args.size} px batch {args.batch}, {args.optimizer}: CPU s/step before {cpu['before']:.3f}, "
          f"after {cpu['after']:.3f}, keras {cpu['keras']:.3f}; after/keras speed {cpu['keras'] / cpu['after']:.2f}x",
          flush=True)


if __name__ == "__main__":
    main()
