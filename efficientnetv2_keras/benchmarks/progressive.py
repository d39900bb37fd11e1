"""Progressive learning, time to accuracy: the paper's Table 12 in miniature on the bundled digits.

Three runs of a recipe (default `digits_demo`: EfficientNetV2-B0 from scratch), same epochs of data,
each with several seeds:
  fixed        the last stage's image size throughout, with the last stage's regularization (the
               paper's baseline: the final size and regularization for the whole run)
  progressive  the recipe: sizes and regularization growing stage by stage (Algorithm 1)
  batch        progressive with `progressive.batch_scaling`: each stage's batch ~ 1/size^2 (constant
               activation memory), the LR scaled by the recipe's rule (`progressive.lr_scaling`; for
               Adam the square-root rule: LR x sqrt(batch / base batch))
Reported: the held-out (test split, 360 digits) accuracy of the final EMA model, mean and spread over
seeds; wall and process CPU time (user + system) of the whole run and of the training steps alone;
images per CPU-second per stage; a time-to-accuracy plot (minival accuracy against training CPU
seconds, one curve per run). Runs are sequential, in this process.

    effnetv2-benchmark --sections=progressive [--progressive_seeds=3 --progressive_epochs=24]
    (in a checkout: python tools/benchmark.py --sections=progressive)
    two processes, one per core: --progressive_seed_list=0,2 --progressive_out=a and
    --progressive_seed_list=1 --progressive_out=b, then
    python -m efficientnetv2_keras.benchmarks.progressive 24 a b
"""

import json
import os
import tempfile
import time

import numpy as np

RUN_NAMES = ("fixed", "progressive", "batch")


def _last(value):
    return value[-1] if isinstance(value, (list, tuple)) else value


def run_overrides(config):
    """Per-run recipe overrides. `fixed` trains at the last stage's size with its regularization (the
    paper's baseline, Table 12: the final size and regularization throughout); `progressive` is the recipe;
    `batch` the recipe with `progressive.batch_scaling`."""
    stages = config.progressive
    size = int(_last(stages.image_size))
    fixed = ["progressive.enabled=false", f"data.train_size={size}"]
    for key, recipe_key in (("randaug_magnitude", "data.randaug_magnitude"), ("mixup_alpha", "data.mixup_alpha"),
                            ("cutmix_alpha", "data.cutmix_alpha"), ("dropout_rate", "model.dropout_rate")):
        value = getattr(stages, key)
        if value is not None:
            fixed.append(f"{recipe_key}={_last(value)}")
    return {"fixed": fixed, "progressive": [], "batch": ["progressive.batch_scaling=true"]}


def run_labels(config):
    from efficientnetv2_keras.training.recipe import lr_scaling_rule

    first, last = int(config.progressive.image_size[0]), int(_last(config.progressive.image_size))
    return {"fixed": f"fixed {last} px", "progressive": f"progressive {first}->{last} px",
            "batch": f"progressive + batch scaling (LR {lr_scaling_rule(config)})"}


def describe_runs(config):
    """What every run trains on, for the report's heading and the plot's title (from the recipe)."""
    data, model = config.data, config.model
    name = "EfficientNetV2-" + model.name.rsplit("-", 1)[-1].upper()
    start = "from scratch" if not model.weights else f"from {model.weights}"
    return (f"{name} {start} on {data.source} ({data.train_split}, minival {data.minival}, "
            f"test split {data.eval_split!r})")


def _run_one(recipe, overrides, base, name, seed, epochs, validation_freq, quick):
    """One training run of configuration `name`; `base` is `recipe` with `overrides`, loaded."""
    import keras

    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    run = run_overrides(base)[name] + [f"runtime.seed={seed}", f"train.epochs={epochs}",
                                       f"eval.validation_freq={validation_freq}"]
    if quick:
        run.append("train.steps_per_epoch=2")
    config = load_config(recipe, overrides=list(overrides) + run)
    keras.backend.clear_session()
    with tempfile.TemporaryDirectory() as model_dir:
        wall, cpu = time.perf_counter(), time.process_time()
        results = train_and_evaluate(config, model_dir, mode="traineval", verbose=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        log = _read_log(os.path.join(model_dir, "log.csv"))
    final = results["evaluations"][0]
    return {"run": name, "seed": seed, "accuracy": final["accuracy"], "wall": wall, "cpu": cpu,
            "costs": results["costs"], "stages": results["stages"], "epoch_times": results["epoch_times"],
            "val_accuracy": [row.get("val_accuracy") for row in log], "log": log,
            "steps_per_epoch": results.get("steps_per_epoch"), "labels": run_labels(base),
            "base_batch": int(base.train.batch_size), "data": describe_runs(base), "last_size": int(_last(base.progressive.image_size))}


def _read_log(path):
    import csv

    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (None if v in ("", "NA") else float(v)) for k, v in row.items()} for row in rows]


def _stage_rates(result):
    """Training images per CPU-second per stage (the first step's tracing left out)."""
    rates, previous = {}, 0.0
    first_step = result["costs"]["first_step"]["cpu"]
    steps_cpu = {}
    for row, times in zip(result["log"], result["epoch_times"]):
        size = int(row.get("image_size") or result["last_size"])
        batch = int(row.get("batch_size") or result["base_batch"])
        cpu = times["train_cpu"] - previous
        previous = times["train_cpu"]
        images, seconds = steps_cpu.get(size, (0, 0.0))
        steps_cpu[size] = (images + batch * result["steps_per_epoch"], seconds + cpu)
    for index, (size, (images, seconds)) in enumerate(sorted(steps_cpu.items())):
        seconds -= first_step if index == 0 else 0.0
        rates[size] = images / max(seconds, 1e-9)
    return rates


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fixed": "tab:gray", "progressive": "tab:blue", "batch": "tab:red"}
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    labelled = set()
    for result in results:
        points = [(t["train_cpu"], v) for t, v in zip(result["epoch_times"], result["val_accuracy"]) if v is not None]
        if not points:
            continue
        label = None if result["run"] in labelled else result["labels"][result["run"]]
        labelled.add(result["run"])
        axis.plot(*zip(*points), "o-", color=colors[result["run"]], alpha=0.7, markersize=3, label=label)
    axis.set_xlabel("training CPU seconds (user + system; validation and checkpoints excluded)")
    axis.set_ylabel("minival accuracy (EMA weights)")
    axis.set_title(f"{results[0]['data']}:\ntime to accuracy (one curve per seed)", fontsize=9)
    axis.set_ylim(top=1.0)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def stage_throughput(sizes=(32, 40, 48), batch=32, steps=5, rounds=2):
    """Training images per CPU-second of the digits B0 at each stage size, fixed and scaled batch.

    One train step traced once for [None, None, None, 3] images (as in a progressive run), random
    images, process CPU time of `steps` steps per configuration, median of alternating rounds.
    """
    import keras
    import tensorflow as tf

    import efficientnetv2_keras as ev2
    from efficientnetv2_keras.progressive.schedule import scaled_batch_size

    keras.utils.set_random_seed(0)
    model = ev2.build_model("b0", input_shape=(None, None, 3), classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    spec = (tf.TensorSpec((None, None, None, 3), tf.float32), tf.TensorSpec((None, 10), tf.float32))
    train_step = tf.function(model.train_step, input_signature=[spec])
    configs = sorted({(size, b) for size in sizes for b in (batch, scaled_batch_size(batch, size, max(sizes)))})
    rng = np.random.default_rng(0)
    data = {c: (tf.constant(rng.uniform(0, 255, (c[1], c[0], c[0], 3)), tf.float32),
                tf.one_hot(rng.integers(0, 10, c[1]), 10)) for c in configs}
    cpu = time.process_time()
    train_step(data[configs[0]])
    trace_cpu = time.process_time() - cpu
    samples = {c: [] for c in configs}
    for c in configs:
        train_step(data[c])  # warm-up
    for _ in range(rounds):
        for c in configs:
            start = time.process_time()
            for _ in range(steps):
                train_step(data[c])
            samples[c].append(c[1] * steps / (time.process_time() - start))
    rates = {c: float(np.median(v)) for c, v in samples.items()}
    lines = [f"B0 train step, images per CPU-second (trace: {trace_cpu:.0f} CPU s, once for every size and batch):",
             "| size | batch | img/CPU-s | vs last stage at batch " + str(batch) + " |", "|---:|---:|---:|---:|"]
    last = rates[(max(sizes), batch)]
    for c in configs:
        lines.append(f"| {c[0]} | {c[1]} | {rates[c]:.1f} | {rates[c] / last:.2f}x |")
    lines.append(f"traces of the step: {train_step.experimental_get_tracing_count()}")
    return "\n".join(lines)


def run(options):
    quick = options.quick
    from efficientnetv2_keras.hparams import load_config

    from efficientnetv2_keras.training.recipe import schedule_from_config

    base = load_config(options.progressive_recipe, overrides=options.progressive_overrides)
    schedule = schedule_from_config(base, options.progressive_epochs)
    sizes = sorted({stage.image_size for stage in schedule.stages})
    report = stage_throughput(sizes=tuple(sizes), batch=int(base.train.batch_size), steps=1 if quick else 5,
                              rounds=1 if quick else 2)
    print(report, flush=True)
    if not options.progressive_seeds:
        return report
    if options.progressive_seed_list:
        seeds = [int(seed) for seed in options.progressive_seed_list]
    else:
        seeds = list(range(1 if quick else options.progressive_seeds))
    epochs = 4 if quick else options.progressive_epochs
    os.makedirs(options.progressive_out, exist_ok=True)
    results = []
    for seed in seeds:  # seeds outermost: drift of a shared machine hits every configuration alike
        for name in options.progressive_runs:
            if name not in RUN_NAMES:
                raise ValueError(f"--progressive_runs: unknown run {name!r}; choose from {RUN_NAMES}.")
            result = _run_one(options.progressive_recipe, options.progressive_overrides, base, name, seed, epochs,
                              options.progressive_validation_freq, quick)
            results.append(result)
            _save(results, options.progressive_out)  # a partial benchmark is still readable
            print(f"  {name} seed {seed}: accuracy {result['accuracy']:.4f}, wall {result['wall']:.0f} s, "
                  f"CPU {result['cpu']:.0f} s", flush=True)
    return report + "\n\n" + summarize(results, options.progressive_runs, epochs, seeds, options.progressive_out)


def _save(results, out):
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


def summarize(results, names, epochs, seeds, out):
    """The report (table, per-stage rates) and the plot, from the per-run results (also results.json)."""
    plot = _plot(results, os.path.join(out, "time_to_accuracy.png"))

    labels = results[0]["labels"]
    lines = [
        f"{results[0]['data']}, {epochs} epochs of data, "
        f"batch {results[0]['base_batch']} at {results[0]['last_size']} px, seeds {seeds}; "
        "CPU = process user + system seconds",
        "| run | test acc mean | spread (std; min-max) | wall s | CPU s | CPU vs fixed | train-step CPU s "
        "| validation CPU s | checkpoints+logs CPU s | first step CPU s | traces |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_run = {name: [r for r in results if r["run"] == name] for name in names if any(r["run"] == name for r in results)}
    fixed_cpu = np.mean([r["cpu"] for r in by_run.get("fixed", [])]) if by_run.get("fixed") else None
    for name, runs in by_run.items():
        accuracy = np.array([r["accuracy"] for r in runs])
        cpu = np.mean([r["cpu"] for r in runs])
        costs = lambda part: np.mean([r["costs"][part]["cpu"] for r in runs])  # noqa: E731
        traces = sorted({(r["costs"].get("traces") or {}).get("step") for r in runs}, key=str)
        lines.append(
            f"| {labels[name]} | {accuracy.mean():.4f} | {accuracy.std(ddof=1) if len(runs) > 1 else 0:.4f}; "
            f"{accuracy.min():.4f}-{accuracy.max():.4f} | {np.mean([r['wall'] for r in runs]):.0f} | {cpu:.0f} | "
            f"{(fixed_cpu / cpu) if fixed_cpu else float('nan'):.2f}x cheaper | {costs('train'):.0f} | "
            f"{costs('validation'):.0f} | {costs('epoch_end'):.0f} | {costs('first_step'):.0f} | {traces} |"
        )
    lines += ["", "Training images per CPU-second per stage (tracing left out), mean over seeds:"]
    for name, runs in by_run.items():
        rates = [_stage_rates(r) for r in runs]
        sizes = sorted(rates[0])
        text = ", ".join(f"{size} px {np.mean([r[size] for r in rates]):.1f}" for size in sizes)
        lines.append(f"  {labels[name]}: {text}")
    lines.append(f"\ntime-to-accuracy plot: {plot}")
    return "\n".join(lines)


if __name__ == "__main__":
    # Re-summarize (partial) runs, several --progressive_out folders merged into the first:
    #   python -m efficientnetv2_keras.benchmarks.progressive EPOCHS OUT_DIR [OUT_DIR ...]
    import sys

    epochs, folders = int(sys.argv[1]), sys.argv[2:]
    saved = []
    for folder in folders:
        with open(os.path.join(folder, "results.json"), encoding="utf-8") as handle:
            saved += json.load(handle)
    names = [name for name in RUN_NAMES if any(r["run"] == name for r in saved)]
    print(summarize(saved, names, epochs, sorted({r["seed"] for r in saved}), folders[0]))
