"""Per-stage training throughput on one accelerator, JAX + Keras only (no TensorFlow on the path).

EfficientNetV2 train step at each progressive stage's image size (default: the paper schedule of the
model, V2-S: 128, 185, 242, 300 px), at a fixed batch and with `batch_scaling` (batch ~ 1/size^2 at
the same activation memory), for this package's model and keras.applications' in the same process.
The step is a jitted stateless train step (forward, backward, RMSProp update, BatchNorm statistics)
on device-resident synthetic data, in mixed bfloat16 by default. Prints images/s per stage, the
ratio ours / keras.applications, the speed-up of each stage over the last one, and the projected
time of the whole schedule (default: 350 epochs of ImageNet's 1,281,167 images, paper §5.1).

    KERAS_BACKEND=jax python tools/gpu_bench.py                 # V2-S, paper sizes, batch 128
    KERAS_BACKEND=jax python tools/gpu_bench.py --model=b0 --sizes=32,48 --steps=2 --precision=float32
                                                                # a CPU smoke run

Every (size, batch, model) compiles its own XLA program: on an H200, ~2-4 min each for V2-S. Pass
--impl=ours to halve the time, --modes=scaled for the batch-scaled stages only.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peak memory per configuration

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KERAS_APPLICATIONS = {"b0": "EfficientNetV2B0", "b1": "EfficientNetV2B1", "b2": "EfficientNetV2B2",
                      "b3": "EfficientNetV2B3", "s": "EfficientNetV2S", "m": "EfficientNetV2M",
                      "l": "EfficientNetV2L"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="s", choices=sorted(KERAS_APPLICATIONS))
    parser.add_argument("--sizes", default=None, help="Comma-separated stage sizes; default: the paper schedule's.")
    parser.add_argument("--batch", type=int, default=128, help="Batch at the largest size (the fixed batch).")
    parser.add_argument("--max_batch_size", type=int, default=None, help="Cap on a scaled batch (memory).")
    parser.add_argument("--modes", default="fixed,scaled", help="fixed, scaled or both.")
    parser.add_argument("--impl", default="ours,keras", help="ours, keras (keras.applications) or both.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per configuration.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps after compilation.")
    parser.add_argument("--precision", default="mixed_bfloat16", help="Keras dtype policy.")
    parser.add_argument("--epochs", type=int, default=350, help="Schedule length for the projection.")
    parser.add_argument("--num_stages", type=int, default=4)
    parser.add_argument("--images_per_epoch", type=int, default=1281167, help="ImageNet-1k train split.")
    return parser.parse_args(argv)


def _build(impl, model_name, size):
    import keras

    shape = (size, size, 3)
    if impl == "ours":
        from efficientnetv2_keras.models import build_model

        return build_model(model_name, weights=None, input_shape=shape)
    return getattr(keras.applications, KERAS_APPLICATIONS[model_name])(weights=None, input_shape=shape)


def measure(impl, model_name, size, batch, steps, warmup):
    """(images/s, peak device GiB or None, compile + warm-up seconds) of one train step configuration."""
    import jax
    import keras
    import numpy as np

    start = time.perf_counter()
    model = _build(impl, model_name, size)
    optimizer = keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9, epsilon=1e-3)  # the paper's (§5.1)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = jax.device_put(rng.integers(0, model.output_shape[-1], (batch,)))

    def loss_of(trainable, non_trainable, x, y):
        predictions, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, predictions), non_trainable

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_variables)

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])

    def run(count):
        nonlocal state
        loss = None
        for _ in range(count):
            loss, state = train_step(state, images, labels)
        loss.block_until_ready()

    run(1 + warmup)
    compile_seconds = time.perf_counter() - start
    timed = time.perf_counter()
    run(steps)
    seconds = (time.perf_counter() - timed) / steps
    peak = None
    try:
        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use", 0) / 2**30 or None
    except Exception:  # noqa: BLE001  (CPU devices have no memory stats)
        peak = None
    keras.backend.clear_session()
    return batch / seconds, peak, compile_seconds


def main(argv=None):
    args = parse_args(argv)
    import jax
    import keras

    keras.mixed_precision.set_global_policy(args.precision)
    sizes, epochs = _stages(args)
    modes, impls = args.modes.split(","), args.impl.split(",")
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}); keras {keras.__version__}, jax {jax.__version__}, "
          f"{args.precision}; model {args.model}; {args.steps} timed steps", flush=True)
    rows = _measure_rows(args, sizes, modes, impls)
    _print_table(rows, impls, max(sizes))
    _print_projection(args, rows, sizes, epochs, modes, impls, device)
    if "tensorflow" in sys.modules:
        print("note: tensorflow was imported (is KERAS_BACKEND=jax set?)")


def _stages(args):
    """(stage image sizes, epochs per stage): --sizes over equal shares, else the paper schedule's."""
    from efficientnetv2_keras.progressive.schedule import progressive_schedule

    schedule = progressive_schedule(args.model, "paper", total_epochs=args.epochs, num_stages=args.num_stages)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
        return sizes, [args.epochs / len(sizes)] * len(sizes)
    return [s.image_size for s in schedule.stages], [s.end - s.start for s in schedule.stages]


def _measure_rows(args, sizes, modes, impls):
    """A row per (batch mode, size): {impl: (img/s, peak GiB)}; each (impl, size, batch) measured once."""
    from efficientnetv2_keras.progressive.schedule import scaled_batch_size

    largest = max(sizes)
    batches = {"fixed": {s: args.batch for s in sizes},
               "scaled": {s: scaled_batch_size(args.batch, s, largest, args.max_batch_size) for s in sizes}}
    measured = {}  # (impl, size, batch) -> (img/s, peak GiB)
    rows = []
    for mode in modes:
        for size in sizes:
            batch = batches[mode][size]
            row = {"mode": mode, "size": size, "batch": batch}
            for impl in impls:
                if (impl, size, batch) not in measured:
                    images_per_second, peak, compile_seconds = measure(impl, args.model, size, batch, args.steps,
                                                                       args.warmup)
                    measured[(impl, size, batch)] = (images_per_second, peak)
                    print(f"  {impl:5s} {size:4d} px batch {batch:4d}: {images_per_second:9.1f} img/s"
                          + (f", peak {peak:.2f} GiB" if peak else "") + f" (compile + warm-up {compile_seconds:.0f} s)",
                          flush=True)
                row[impl] = measured[(impl, size, batch)]
            rows.append(row)
    return rows


def _print_table(rows, impls, largest):
    print("\n| stages | size | batch | " + " | ".join(f"{i} img/s" for i in impls)
          + (" | ours / keras" if len(impls) == 2 else "") + " | vs last stage | process peak GiB so far |")
    print("|---|---:|---:|" + "---:|" * len(impls) + ("---:|" if len(impls) == 2 else "") + "---:|---:|")
    for row in rows:
        last = next(r for r in rows if r["mode"] == row["mode"] and r["size"] == largest)
        first_impl = impls[0]
        speed_up = row[first_impl][0] / last[first_impl][0]
        ratio = f" | {row['ours'][0] / row['keras'][0]:.2f}" if len(impls) == 2 else ""
        peak = row[first_impl][1]
        print(f"| {row['mode']} | {row['size']} | {row['batch']} | " + " | ".join(f"{row[i][0]:.0f}" for i in impls)
              + ratio + f" | {speed_up:.2f}x | " + (f"{peak:.2f}" if peak else "-") + " |")


def _print_projection(args, rows, sizes, epochs, modes, impls, device):
    print(f"\nProjected training time of the schedule ({args.epochs} epochs x {args.images_per_epoch} images, "
          f"stages {sizes} over {[round(e, 1) for e in epochs]} epochs), train steps only:")
    for mode in modes:
        for impl in impls:
            seconds = sum(e * args.images_per_epoch / next(r[impl][0] for r in rows if r["mode"] == mode and r["size"] == s)
                          for s, e in zip(sizes, epochs))
            print(f"  {mode:6s} batch, {impl:5s}: {seconds / 3600:8.1f} h on one {device.device_kind}")


if __name__ == "__main__":
    main()
