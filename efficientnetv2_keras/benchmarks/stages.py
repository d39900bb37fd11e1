"""Where a progressive stage's time goes: the train step, the input pipeline and the epoch around them.

For every stage of a recipe's schedule, three measurements, each in process CPU time (user + system of
all threads, which a shared machine disturbs less than wall time) beside wall time:
  step      the recipe's compiled model (optimizer, EMA, weight decay, loss) on a synthetic batch of
            the stage's size and batch: `train_on_batch`, traced once for every size as in a run;
  pipeline  the stage's own tf.data pipeline (decode, crop, resize, RandAugment, mixing, batching)
            read without a model;
  epoch     a finished run of the recipe (`--stages_run`): each epoch's training steps, validation,
            and the epoch-end work (checkpoints, backups, logs), from its results.json and log.csv.
The pixel ratio (size^2 / last size^2) beside the per-image costs shows how far a stage is from
costing its pixels. The ops of the traced train step are counted by the layer kind (or optimizer
part) that made them: a step on a small image is bound by how many ops it runs, not by its pixels.

    effnetv2-benchmark --sections=stages --stages_recipe=digits_demo --stages_run=runs/demo
    effnetv2-benchmark --sections=stages --stages_recipe=imagenet_s --stages_batch=128 --stages_steps=2
"""

import collections
import json
import os
import time

import numpy as np


def _now():
    return time.perf_counter(), time.process_time()


def _since(mark):
    wall, cpu = _now()
    return wall - mark[0], cpu - mark[1]


def load_recipe(recipe_name, overrides, batch=None):
    """The resolved recipe (`training.recipe.Recipe`) whose stages are measured."""
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.recipe import resolve_recipe

    overrides = list(overrides) + ([f"train.batch_size={batch}"] if batch else [])
    return resolve_recipe(load_config(recipe_name, overrides=overrides))


def stage_list(recipe):
    """The recipe's stages, or one pseudo-stage at train_size when progressive learning is off."""
    from efficientnetv2_keras.progressive.schedule import Stage

    if recipe.schedule is not None:
        return list(recipe.schedule.stages)
    return [Stage(index=0, start=0, end=recipe.epochs, image_size=recipe.train_size, batch_size=recipe.batch_size)]


def compiled_model(recipe):
    import keras

    keras.utils.set_random_seed(0)
    model = recipe.build_model(load_checkpoint=False)
    recipe.compile(model)
    model.optimizer.build(model.trainable_variables)
    return model


def _synthetic_batch(recipe, size, batch, rng):
    import tensorflow as tf

    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)), tf.float32)
    labels = tf.one_hot(rng.integers(0, recipe.num_classes, batch), recipe.num_classes)
    return images, labels


def step_costs(recipe, stages, steps, rounds):
    """Per stage: median (wall, CPU) seconds per train step on a synthetic batch, and the first step's."""
    from efficientnetv2_keras.models.regularization import set_regularization

    model = compiled_model(recipe)
    rng = np.random.default_rng(0)
    batches = [_synthetic_batch(recipe, s.image_size, s.batch_size or recipe.batch_size, rng) for s in stages]
    mark = _now()
    model.train_on_batch(*batches[0])  # traces the step, once for every size (images [None, None, None, 3])
    first = _since(mark)
    for batch in batches:
        model.train_on_batch(*batch)  # warm-up at each size
    samples = [[] for _ in stages]
    for _ in range(rounds):
        for stage, batch, sample in zip(stages, batches, samples):
            if stage.dropout_rate is not None or stage.survival_prob is not None:
                set_regularization(model, dropout_rate=stage.dropout_rate, survival_prob=stage.survival_prob)
            mark = _now()
            for _ in range(steps):
                model.train_on_batch(*batch)
            wall, cpu = _since(mark)
            sample.append((wall / steps, cpu / steps))
    medians = [tuple(float(np.median([s[i] for s in sample])) for i in range(2)) for sample in samples]
    return medians, first, model


def pipeline_costs(recipe, stages, batches, rounds):
    """Per stage: median (wall, CPU) seconds per batch of the stage's training pipeline, model-free.

    The first pass through each pipeline (decoding into a cache, starting threads) is left out: a few
    batches are read before timing.
    """
    datasets = [recipe.stage_dataset(stage).repeat() for stage in stages]
    iterators = [iter(dataset) for dataset in datasets]
    for iterator in iterators:
        for _ in range(3):
            next(iterator)
    samples = [[] for _ in stages]
    for _ in range(rounds):
        for iterator, sample in zip(iterators, samples):
            mark = _now()
            for _ in range(batches):
                next(iterator)
            wall, cpu = _since(mark)
            sample.append((wall / batches, cpu / batches))
    return [tuple(float(np.median([s[i] for s in sample])) for i in range(2)) for sample in samples]


def epoch_costs(run_dir):
    """Per stage of a finished run (1-based stage -> dict): epochs, steps and CPU seconds of its training
    steps, validation and epoch-end work, and the images it trained, from results.json and log.csv."""
    from efficientnetv2_keras.training.run_log import read_log

    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    rows = {int(row["epoch"]): row for row in read_log(os.path.join(run_dir, "log.csv"))}
    steps_per_epoch = int(results["steps_per_epoch"])
    per_stage = collections.OrderedDict()
    for times in results["epoch_times"]:
        row = rows.get(int(times["epoch"]), {})
        entry = per_stage.setdefault(int(row.get("stage", 1)), collections.Counter())
        entry["epochs"] += 1
        entry["steps"] += steps_per_epoch
        entry["images"] += steps_per_epoch * int(row.get("batch_size") or results.get("batch_size") or 0)
        for part in ("step_cpu", "validation_cpu", "epoch_end_cpu"):
            entry[part] += float(times.get(part, 0.0))
    return per_stage, results


def count_step_ops(model, recipe):
    """Ops of the traced train step by what made them: (total, Counter of kind -> ops).

    An op belongs to the layer whose name appears in its name scope (forward and gradient ops alike),
    else to the optimizer (its update, the weight EMA) when it sits under the optimizer's scope.
    """
    import tensorflow as tf

    kinds = {layer.name: type(layer).__name__ for layer in model._flatten_layers(include_self=False, recursive=True)}
    spec = (tf.TensorSpec((None, None, None, 3), tf.float32), tf.TensorSpec((None, recipe.num_classes), tf.float32))
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    counts = collections.Counter()

    def walk(graph_):
        for op in graph_.get_operations():
            counts[_op_kind(op.name, kinds, optimizer.name)] += 1
        for function in getattr(graph_, "_functions", {}).values():
            if hasattr(function, "graph"):
                walk(function.graph)

    walk(graph)
    return sum(counts.values()), counts


def _op_kind(name, kinds, optimizer_name):
    for part in name.split("/"):
        base = part.rsplit("_", 1)[0] if part.rsplit("_", 1)[-1].isdigit() else part
        if part in kinds or base in kinds:
            return kinds.get(part, kinds.get(base))
    return "optimizer (update, EMA)" if optimizer_name.lower() in name.lower() else "other (loss, metrics, glue)"


def _rate(images, seconds):
    return images / seconds if seconds else float("nan")


def _stage_table(stages, last_size, base_batch, steps, pipelines, epochs):
    lines = [
        "| stage | size | batch | pixels vs last | step ms (CPU) | step img/CPU-s | per-image CPU vs last "
        "| pipeline ms/batch (CPU) | pipeline img/CPU-s | epoch img/CPU-s | epoch: steps / validation / end, CPU % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    last_per_image = steps[-1][1] / (stages[-1].batch_size or base_batch)
    for index, stage in enumerate(stages):
        batch = stage.batch_size or base_batch
        wall, cpu = steps[index]
        pipeline = pipelines[index] if pipelines else None
        cells = [f"{stage.index + 1}", f"{stage.image_size}", f"{batch}", f"{(stage.image_size / last_size) ** 2:.2f}",
                 f"{cpu * 1000:.0f} ({wall * 1000:.0f} wall)", f"{_rate(batch, cpu):.0f}",
                 f"{cpu / batch / last_per_image:.2f}"]
        cells += ([f"{pipeline[1] * 1000:.0f}", f"{_rate(batch, pipeline[1]):.0f}"] if pipeline else ["-", "-"])
        entry = epochs.get(stage.index + 1) if epochs else None
        if entry:
            total = entry["step_cpu"] + entry["validation_cpu"] + entry["epoch_end_cpu"]
            shares = " / ".join(f"{100 * entry[p] / total:.0f}" for p in ("step_cpu", "validation_cpu", "epoch_end_cpu"))
            cells += [f"{_rate(entry['images'], total):.0f}", f"{shares} ({entry['epochs']} epochs, {total:.0f} CPU s)"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run(options):
    quick = options.quick
    recipe = load_recipe(options.stages_recipe, options.stages_overrides, options.stages_batch)
    stages = stage_list(recipe)
    steps, rounds = (1, 1) if quick else (options.stages_steps, options.stages_rounds)
    step, first, model = step_costs(recipe, stages, steps, rounds)
    pipelines = pipeline_costs(recipe, stages, steps, rounds) if options.stages_pipeline else None
    epochs, results = epoch_costs(options.stages_run) if options.stages_run else (None, None)
    total, kinds = count_step_ops(model, recipe)
    lines = [f"{recipe.model_name}, recipe {options.stages_recipe}"
             + (f" ({', '.join(options.stages_overrides)})" if options.stages_overrides else "")
             + f", base batch {recipe.batch_size}; {steps} steps x {rounds} rounds per stage (medians); first step "
             f"(tracing) {first[1]:.0f} CPU s" + (f"; epochs from {options.stages_run}" if options.stages_run else "")]
    lines += _stage_table(stages, stages[-1].image_size, recipe.batch_size, step, pipelines, epochs)
    if results is not None:
        costs = results.get("costs", {})
        fit = costs.get("fit", {}).get("cpu")
        if fit:
            parts = ", ".join(f"{name} {costs[name]['cpu']:.0f} s ({100 * costs[name]['cpu'] / fit:.0f} %)"
                              for name in ("first_step", "train", "validation", "epoch_end") if name in costs)
            lines.append(f"The run's fit: {fit:.0f} CPU s: {parts}.")
    lines.append(f"Ops in the traced train step: {total}, by what made them: "
                 + ", ".join(f"{kind} {count}" for kind, count in kinds.most_common()))
    return "\n".join(lines)
