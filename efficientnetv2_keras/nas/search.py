"""Training-aware random search (paper §3.3): sample tables, train each briefly, score A * S**w * P**v.

    from efficientnetv2_keras.nas import SearchSpace, run_search, scaled_backbone
    space = SearchSpace(scaled_backbone("b0", width=0.5))
    result = run_search(space, "runs/nas", recipe="digits_demo", num_samples=6, time_budget=600)

Each sample is a model table (`samples/NN-<digest>.yaml`) trained by the package's own trainer
(`training.trainer.train_and_evaluate`) with a short proxy recipe: the user's recipe plus
`proxy_overrides` (small images, few epochs, no progressive learning unless asked). A, the proxy
accuracy, is measured on a part held out of the training split (`minival`), never on the test split.
S (step time) and P (parameters, or FLOPs) are normalized to the backbone's, which is trained and
measured first, with the same recipe, so it scores exactly its accuracy.

`output_dir` receives:
  search.json           the search's settings (a rerun with other settings is refused)
  backbone.yaml         the backbone's table
  samples/NN-*.yaml     each sampled table; samples/NN-*/ its training run (config, logs, checkpoints)
  results.csv           one row per finished model, appended as each finishes (a rerun skips them)
  ranking.md            the models ranked by reward
  pareto.png            accuracy against step time, marker area ~ parameters, the backbone marked
  best_model.yaml       the best table: `model.name` of a recipe, or `build_model(path)`
  best_recipe.yaml      the given recipe (full training, not the proxy) with model.name = best_model.yaml
"""

import csv
import dataclasses
import json
import os
import time

from efficientnetv2_keras.models.family import load_model_spec, save_model_spec, spec_to_dict
from efficientnetv2_keras.nas.reward import COSTS, PAPER_V, PAPER_W, reward
from efficientnetv2_keras.nas.space import SearchSpace, describe_table, sample_specs, table_digest

# The proxy task on top of the user's recipe (§3.3: "train each model about 10 epochs with reduced
# image size"): small static images, no augmentation, no progressive learning, validation only at the
# end. The digits defaults fit a handful of samples into minutes on 2 CPU cores.
DEFAULT_PROXY_OVERRIDES = (
    "progressive.enabled=false",
    "data.train_size=32",
    "data.eval_size=32",
    "data.randaug_magnitude=0",
    "data.mixup_alpha=0",
    "data.cutmix_alpha=0",
    "train.epochs=4",
    "train.lr_warmup_epochs=0.5",
)
DEFAULT_MINIVAL = 0.1
BACKBONE = "backbone"
CSV_FIELDS = ("sample", "name", "table", "table_file", "accuracy", "step_time", "step_clock", "params", "flops",
              "reward", "train_wall_s", "train_cpu_s", "measure_cpu_s", "digest")


class SearchError(ValueError):
    """A search cannot start or resume as asked (e.g. other settings in the same output folder)."""


def _fmt_seconds(seconds):
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def proxy_config(recipe, table_path, overrides=DEFAULT_PROXY_OVERRIDES, minival=DEFAULT_MINIVAL):
    """The proxy recipe for one table: `recipe` + `overrides`, model.name = the table file, and the
    test split replaced by a part held out of the training split (`minival`: a count or fraction)."""
    from efficientnetv2_keras.data import get_source
    from efficientnetv2_keras.hparams import load_config

    base = load_config(recipe, list(overrides) + [f"model.name={os.path.abspath(table_path)}"])
    # The held-out split's name in this source ("minival" for in-memory sources, a slice for tfds).
    source = get_source(base.data.source, data_dir=base.data.data_dir, **base.data.source_options)
    _, held = source.hold_out(base.data.train_split, minival, seed=0)
    epochs = base.train.epochs
    extra = [f"data.minival={minival}", f"data.eval_split={held}", f"eval.validation_freq={epochs}"]
    return load_config(recipe, list(overrides) + [f"model.name={os.path.abspath(table_path)}"] + extra), int(
        source.num_classes)


def evaluate_candidate(table_path, recipe, model_dir, *, overrides=DEFAULT_PROXY_OVERRIDES, minival=DEFAULT_MINIVAL,
                       timing_steps=5, warmup_steps=2, clock="auto", count_flops=False, verbose=0):
    """Trains one table with the proxy recipe and measures its step time: a dict of the CSV fields."""
    import keras

    from efficientnetv2_keras.nas.measure import measure_train_step
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    config, num_classes = proxy_config(recipe, table_path, overrides, minival)
    wall, cpu = time.perf_counter(), time.process_time()
    results = train_and_evaluate(config, model_dir, mode="traineval", verbose=verbose)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    final = next(e for e in results["evaluations"] if e.get("role") == "final")
    keras.backend.clear_session()
    measure_cpu = time.process_time()
    timing = measure_train_step(config, num_classes, steps=timing_steps, warmup=warmup_steps, clock=clock,
                                count_flops=count_flops, seed=config.runtime.seed or 0)
    spec = load_model_spec(table_path)
    return {
        "name": spec.name,
        "table": describe_table(spec),
        "table_file": os.path.abspath(table_path),
        "accuracy": float(final["accuracy"]),
        "step_time": timing["step_time"],
        "step_clock": timing["clock"],
        "params": timing["params"],
        "flops": timing["flops"] if timing["flops"] is not None else "",
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "measure_cpu_s": round(time.process_time() - measure_cpu, 1),
        "digest": table_digest(spec),
    }


def read_results(path):
    """Rows of results.csv (numbers parsed); [] when it does not exist. A torn last line is dropped."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if None in row or any(row.get(k) in (None, "") for k in ("sample", "accuracy", "step_time", "params")):
                continue  # a line cut short by a kill
            for key in ("accuracy", "step_time", "reward", "train_wall_s", "train_cpu_s", "measure_cpu_s"):
                row[key] = float(row[key]) if row.get(key) not in (None, "") else None
            for key in ("params", "flops"):
                row[key] = int(float(row[key])) if row.get(key) not in (None, "") else None
            rows.append(row)
    return rows


def append_result(path, row):
    """Appends one row (header first if new) and flushes it to disk: a kill loses at most the model in flight."""
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    if not new:  # a kill mid-write can leave a line without its newline: start a fresh one
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                with open(path, "a", encoding="utf-8") as fix:
                    fix.write("\n")
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def score_rows(rows, *, w=PAPER_W, v=PAPER_V, cost="params"):
    """Adds "reward", "rel_step_time", "rel_size" to each row, normalized to the backbone row."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}.")
    base = next((r for r in rows if r["sample"] == BACKBONE), None)
    if base is None:
        raise SearchError("results.csv has no backbone row: the reward is normalized to the backbone.")
    if cost == "flops" and not base.get("flops"):
        raise SearchError("cost='flops' needs FLOPs in results.csv: run the search with count_flops=True.")
    for row in rows:
        row["rel_step_time"] = row["step_time"] / base["step_time"]
        row["rel_size"] = row[cost] / base[cost]
        row["reward"] = reward(row["accuracy"], row["step_time"], row[cost], base_step_time=base["step_time"],
                               base_size=base[cost], w=w, v=v)
    return rows


def rank_rows(rows):
    return sorted(rows, key=lambda r: (-r["reward"], r["sample"]))


def format_ranking(rows, cost="params"):
    lines = [f"| rank | sample | reward | accuracy | step time (rel.) | {cost} (rel.) | table |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for rank, row in enumerate(rank_rows(rows), 1):
        lines.append(
            f"| {rank} | {row['sample']} | {row['reward']:.4f} | {row['accuracy']:.4f} | "
            f"{row['step_time'] * 1000:.1f} ms ({row['rel_step_time']:.2f}) | {row[cost]:,} ({row['rel_size']:.2f}) | "
            f"{row['table']} |"
        )
    return "\n".join(lines)


def operator_preference(rows):
    """Per stage: mean reward, accuracy and relative step time of the samples with Fused-MBConv there
    against those with MBConv (the paper found Fused-MBConv preferred in early stages, §3.3)."""
    from efficientnetv2_keras.models.family import FUSED_MBCONV

    samples = [(r, load_model_spec(r["table_file"])) for r in rows if r["sample"] != BACKBONE]
    if not samples:
        return []
    table = []
    for index in range(len(samples[0][1].stages)):
        entry = {"stage": index + 1}
        for label, fused in (("fused", True), ("mbconv", False)):
            group = [r for r, spec in samples if (spec.stages[index].block == FUSED_MBCONV) == fused]
            entry[label] = {
                "count": len(group),
                **{key: (sum(r[key] for r in group) / len(group) if group else None)
                   for key in ("reward", "accuracy", "rel_step_time")},
            }
        table.append(entry)
    return table


def format_operator_preference(table):
    def cell(group, key, digits):
        return "-" if group[key] is None else f"{group[key]:.{digits}f}"

    lines = ["| stage | Fused-MBConv: n, reward, accuracy, step time | MBConv: n, reward, accuracy, step time |",
             "|---:|---|---|"]
    for entry in table:
        parts = [f"{g['count']}, {cell(g, 'reward', 4)}, {cell(g, 'accuracy', 4)}, {cell(g, 'rel_step_time', 2)}"
                 for g in (entry["fused"], entry["mbconv"])]
        lines.append(f"| {entry['stage']} | {parts[0]} | {parts[1]} |")
    return "\n".join(lines)


def pareto_front(rows):
    """Rows no other row beats on both accuracy (higher) and step time (lower), by step time."""
    front = [r for r in rows if not any(
        o is not r and o["accuracy"] >= r["accuracy"] and o["step_time"] <= r["step_time"]
        and (o["accuracy"] > r["accuracy"] or o["step_time"] < r["step_time"]) for o in rows)]
    return sorted(front, key=lambda r: r["step_time"])


def plot_pareto(rows, path, title="", clock="process"):
    """Accuracy against normalized step time; marker area ~ parameters; backbone and best marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    largest = max(r["params"] for r in rows)
    best = rank_rows(rows)[0]
    figure, axis = plt.subplots(figsize=(7, 5))
    samples = [r for r in rows if r["sample"] != BACKBONE]
    if samples:
        axis.scatter([r["rel_step_time"] for r in samples], [r["accuracy"] for r in samples],
                     s=[30 + 400 * r["params"] / largest for r in samples], alpha=0.55, label="samples")
        for r in samples:
            axis.annotate(r["sample"], (r["rel_step_time"], r["accuracy"]), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
    base = next(r for r in rows if r["sample"] == BACKBONE)
    axis.scatter([1.0], [base["accuracy"]], s=30 + 400 * base["params"] / largest, marker="*", color="red",
                 label="backbone", zorder=3)
    front = pareto_front(rows)
    axis.plot([r["rel_step_time"] for r in front], [r["accuracy"] for r in front], "--", color="gray",
              linewidth=1, label="Pareto front")
    axis.scatter([best["rel_step_time"]], [best["accuracy"]], s=160, facecolors="none", edgecolors="black",
                 linewidths=1.5, label=f"best reward ({best['sample']})", zorder=4)
    axis.set_xlabel(f"training step time / backbone's ({clock} time)")
    axis.set_ylabel("proxy accuracy (held-out part of the training split)")
    axis.set_title(title or "Training-aware search (marker area ~ parameters)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


@dataclasses.dataclass
class SearchResult:
    rows: list  # scored rows, ranked by reward (backbone included)
    best: dict
    finished: bool  # every sample done (False: stopped by the time budget)
    files: dict
    cpu_seconds: float
    wall_seconds: float


def _settings(space, recipe, overrides, seed, minival, timing_steps, warmup_steps, clock, count_flops):
    return {
        "backbone": spec_to_dict(space.backbone),
        "space": {k: list(getattr(space, k)) for k in ("operators", "kernels", "expand_ratios", "se_ratios")}
        | {"repeats_delta": space.repeats_delta, "min_repeats": space.min_repeats, "max_repeats": space.max_repeats},
        "recipe": os.path.abspath(recipe) if os.path.exists(str(recipe)) else recipe,
        "proxy_overrides": list(overrides),
        "seed": seed,
        "minival": minival,
        "timing": {"steps": timing_steps, "warmup": warmup_steps, "clock": clock, "count_flops": count_flops},
    }


def run_search(space, output_dir, *, recipe="digits_demo", num_samples=6, seed=0, time_budget=None,
               proxy_overrides=DEFAULT_PROXY_OVERRIDES, minival=DEFAULT_MINIVAL, w=PAPER_W, v=PAPER_V, cost="params",
               timing_steps=5, warmup_steps=2, clock="auto", count_flops=None, verbose=1, log=print,
               evaluate=None):
    """Random search over `num_samples` tables of `space` (the backbone is evaluated first).

    Rerunning with the same arguments in the same `output_dir` skips every model already in
    results.csv (the model that was in flight resumes from its training backup). `time_budget`
    (seconds of wall time for this call): no new model starts when the estimate says it would not
    finish in time; rerun to continue. `num_samples` may grow on a rerun (the same seed draws the same
    first samples). `evaluate` replaces `evaluate_candidate` (tests).
    """
    if not isinstance(space, SearchSpace):
        space = SearchSpace(space)
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}.")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    count_flops = (cost == "flops") if count_flops is None else count_flops
    evaluate = evaluate or evaluate_candidate
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    os.makedirs(os.path.join(output_dir, "samples"), exist_ok=True)
    settings = _settings(space, recipe, proxy_overrides, seed, minival, timing_steps, warmup_steps, clock, count_flops)
    settings_path = os.path.join(output_dir, "search.json")
    if os.path.exists(settings_path):
        with open(settings_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        changed = sorted(k for k in settings if previous.get(k) != settings[k])
        if changed:
            raise SearchError(
                f"{output_dir} holds a search with other settings ({', '.join(changed)} differ; see "
                f"{settings_path}). Resume it with the same arguments, or use a new output folder."
            )
    else:
        with open(settings_path, "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=2)

    csv_path = os.path.join(output_dir, "results.csv")
    done = {row["sample"]: row for row in read_results(csv_path)}
    backbone_path = save_model_spec(space.backbone, os.path.join(output_dir, "backbone.yaml"))
    jobs = [(BACKBONE, backbone_path, space.backbone)]
    for index, spec in enumerate(sample_specs(space, num_samples, seed)):
        sample_id = f"{index + 1:02d}-{table_digest(spec)}"
        jobs.append((sample_id, os.path.join(output_dir, "samples", sample_id + ".yaml"), spec))
    for sample_id, _, spec in jobs:  # a resumed CSV must describe the same tables
        if sample_id in done and done[sample_id].get("digest") not in (None, "", table_digest(spec)):
            raise SearchError(f"results.csv row {sample_id!r} is another table than this search draws; "
                              "use a new output folder.")

    todo = [job for job in jobs if job[0] not in done]
    if verbose and done:
        log(f"Resuming {output_dir}: {len(done)} model(s) already in results.csv, {len(todo)} to go.")
    durations, failures, finished = [], [], True
    for position, (sample_id, table_path, spec) in enumerate(todo):
        elapsed = time.perf_counter() - started_wall
        estimate = sum(durations) / len(durations) if durations else None
        if time_budget is not None and (elapsed >= time_budget or (estimate and elapsed + estimate > time_budget)):
            finished = False
            if verbose:
                log(f"Time budget of {_fmt_seconds(time_budget)} reached after {_fmt_seconds(elapsed)}: "
                    f"{len(todo) - position} model(s) left; rerun the same command to continue.")
            break
        if verbose:
            k = jobs.index((sample_id, table_path, spec))
            left = f", about {_fmt_seconds(estimate * (len(todo) - position))} left" if estimate else ""
            budget = f", budget left {_fmt_seconds(time_budget - elapsed)}" if time_budget is not None else ""
            what = "backbone" if sample_id == BACKBONE else f"sample {k} of {len(jobs) - 1}"
            log(f"[{what}] {spec.name}: {describe_table(spec)} (elapsed {_fmt_seconds(elapsed)}{left}{budget})")
        if sample_id != BACKBONE:
            save_model_spec(spec, table_path)
        start = time.perf_counter()
        try:
            row = evaluate(table_path, recipe, os.path.join(output_dir, "samples", sample_id),
                           overrides=proxy_overrides, minival=minival, timing_steps=timing_steps,
                           warmup_steps=warmup_steps, clock=clock, count_flops=count_flops)
        except Exception as error:  # noqa: BLE001 - one bad sample must not end a long search
            if sample_id == BACKBONE:
                raise  # the recipe itself does not run: nothing can be scored
            failures.append(sample_id)
            with open(os.path.join(output_dir, "failures.log"), "a", encoding="utf-8") as handle:
                handle.write(f"{sample_id} ({spec.name}): {type(error).__name__}: {error}\n")
            if verbose:
                log(f"    failed: {type(error).__name__}: {error} (logged in failures.log; retried on a rerun)")
            continue
        row = {**row, "sample": sample_id}
        done[sample_id] = row
        if BACKBONE in done:
            score_rows([done[BACKBONE], row], w=w, v=v, cost=cost)
        append_result(csv_path, row)
        durations.append(time.perf_counter() - start)
        if verbose:
            log(f"    accuracy {row['accuracy']:.4f}, step {row['step_time'] * 1000:.1f} ms ({row['step_clock']}), "
                f"{row['params']:,} params, reward {row.get('reward', float('nan')):.4f} "
                f"[{_fmt_seconds(durations[-1])}]")

    finished = finished and not failures
    rows = [dict(r) for r in read_results(csv_path)]
    files = {"results": csv_path, "backbone": backbone_path}
    if not any(r["sample"] == BACKBONE for r in rows):  # stopped before the backbone finished: nothing to rank
        wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
        return SearchResult(rows=[], best=None, finished=False, files=files, cpu_seconds=cpu, wall_seconds=wall)
    rows = score_rows(rows, w=w, v=v, cost=cost)
    ranked = rank_rows(rows)
    best = ranked[0]
    ranking = format_ranking(ranked, cost)
    files["ranking"] = os.path.join(output_dir, "ranking.md")
    clock_name = ranked[0].get("step_clock") or "process"
    with open(files["ranking"], "w", encoding="utf-8") as handle:
        handle.write(f"# Search ranking (reward = A * S^{w} * {cost[0].upper()}^{v}, normalized to the backbone; "
                     f"step time = median {clock_name} time per step)\n\n{ranking}\n")
        preference = operator_preference(rows)
        if preference:
            handle.write("\n## Per stage: samples with Fused-MBConv against MBConv (means; step time relative to "
                         "the backbone)\n\n" + format_operator_preference(preference) + "\n")
    files["pareto"] = plot_pareto(rows, os.path.join(output_dir, "pareto.png"), clock=clock_name)
    best_spec = load_model_spec(best["table_file"])
    files["best_model"] = save_model_spec(best_spec, os.path.join(output_dir, "best_model.yaml"))
    files["best_recipe"] = write_recipe(recipe, files["best_model"], os.path.join(output_dir, "best_recipe.yaml"))
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    if verbose:
        log("\n" + ranking)
        log(f"\nBest: {best['sample']} ({best['table']}), reward {best['reward']:.4f}"
            + (" (the backbone itself)" if best["sample"] == BACKBONE else ""))
        log(f"Wrote {', '.join(files.values())}")
        log(f"This call: wall {_fmt_seconds(wall)}, process CPU {_fmt_seconds(cpu)}"
            + ("" if finished else " (stopped by the time budget)"))
    return SearchResult(rows=ranked, best=best, finished=finished, files=files, cpu_seconds=cpu, wall_seconds=wall)


def write_recipe(recipe, table_path, path):
    """`recipe` with model.name = the table (absolute path), resolved and written as one YAML file."""
    from efficientnetv2_keras.hparams import load_config, to_yaml

    config = load_config(recipe, [f"model.name={os.path.abspath(table_path)}"])
    to_yaml(config, path)
    return path


def parameter_count(table_path, num_classes, **build_kwargs):
    """Parameters of `build_model(table, classes=num_classes)`: what the reward's P is."""
    import keras

    from efficientnetv2_keras.models import build_model

    model = build_model(table_path, classes=num_classes, **build_kwargs)
    count = int(model.count_params())
    del model
    keras.backend.clear_session()
    return count


__all__ = [
    "BACKBONE", "DEFAULT_PROXY_OVERRIDES", "SearchError", "SearchResult", "append_result", "evaluate_candidate",
    "format_operator_preference", "format_ranking", "operator_preference", "parameter_count", "pareto_front",
    "plot_pareto", "proxy_config", "rank_rows", "read_results", "run_search", "score_rows", "write_recipe",
]
