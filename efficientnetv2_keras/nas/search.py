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

import dataclasses
import json
import os
import time

from efficientnetv2_keras.models.family import load_model_spec, save_model_spec, spec_to_dict
from efficientnetv2_keras.nas.results import (
    BACKBONE,
    SearchError,
    append_result,
    format_operator_preference,
    format_ranking,
    operator_preference,
    plot_pareto,
    rank_rows,
    read_results,
    score_rows,
)
from efficientnetv2_keras.nas.reward import COSTS, PAPER_V, PAPER_W
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
    run = _SearchRun(output_dir, dict(w=w, v=v, cost=cost), time_budget, verbose, log)
    os.makedirs(os.path.join(output_dir, "samples"), exist_ok=True)
    _check_settings(output_dir, _settings(space, recipe, proxy_overrides, seed, minival, timing_steps, warmup_steps,
                                          clock, count_flops))
    done = {row["sample"]: row for row in read_results(run.csv_path)}
    backbone_path, jobs = _jobs(space, output_dir, num_samples, seed, done)

    def evaluate_job(table_path, sample_id):
        return (evaluate or evaluate_candidate)(
            table_path, recipe, os.path.join(output_dir, "samples", sample_id), overrides=proxy_overrides,
            minival=minival, timing_steps=timing_steps, warmup_steps=warmup_steps, clock=clock,
            count_flops=count_flops)

    finished = _train_jobs(run, jobs, done, evaluate_job)
    rows = [dict(r) for r in read_results(run.csv_path)]
    files = {"results": run.csv_path, "backbone": backbone_path}
    if not any(r["sample"] == BACKBONE for r in rows):  # stopped before the backbone finished: nothing to rank
        wall, cpu = run.seconds()
        return SearchResult(rows=[], best=None, finished=False, files=files, cpu_seconds=cpu, wall_seconds=wall)
    ranked, ranking = _write_report(run, rows, recipe, files)
    wall, cpu = run.seconds()
    best = ranked[0]
    run.say("\n" + ranking)
    run.say(f"\nBest: {best['sample']} ({best['table']}), reward {best['reward']:.4f}"
            + (" (the backbone itself)" if best["sample"] == BACKBONE else ""))
    run.say(f"Wrote {', '.join(files.values())}")
    run.say(f"This call: wall {_fmt_seconds(wall)}, process CPU {_fmt_seconds(cpu)}"
            + ("" if finished else " (stopped by the time budget)"))
    return SearchResult(rows=ranked, best=best, finished=finished, files=files, cpu_seconds=cpu, wall_seconds=wall)


@dataclasses.dataclass
class _SearchRun:
    """One call of `run_search`: where it writes, how it scores, its time budget, how it reports."""

    output_dir: str
    scoring: dict  # w, v, cost of `score_rows`
    time_budget: object  # seconds of wall time, or None
    verbose: int
    log: object
    started_wall: float = dataclasses.field(default_factory=time.perf_counter)
    started_cpu: float = dataclasses.field(default_factory=time.process_time)

    @property
    def csv_path(self):
        return os.path.join(self.output_dir, "results.csv")

    def seconds(self):
        """(wall, process CPU) seconds since the call started."""
        return time.perf_counter() - self.started_wall, time.process_time() - self.started_cpu

    def say(self, text):
        if self.verbose:
            self.log(text)


def _check_settings(output_dir, settings):
    """Writes search.json, or refuses a rerun in the same folder with other settings."""
    settings_path = os.path.join(output_dir, "search.json")
    if not os.path.exists(settings_path):
        with open(settings_path, "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=2)
        return
    with open(settings_path, encoding="utf-8") as handle:
        previous = json.load(handle)
    changed = sorted(k for k in settings if previous.get(k) != settings[k])
    if changed:
        raise SearchError(
            f"{output_dir} holds a search with other settings ({', '.join(changed)} differ; see "
            f"{settings_path}). Resume it with the same arguments, or use a new output folder."
        )


def _jobs(space, output_dir, num_samples, seed, done):
    """(the backbone's table file, [(sample id, table file, spec)]): the backbone first, then the samples."""
    backbone_path = save_model_spec(space.backbone, os.path.join(output_dir, "backbone.yaml"))
    jobs = [(BACKBONE, backbone_path, space.backbone)]
    for index, spec in enumerate(sample_specs(space, num_samples, seed)):
        sample_id = f"{index + 1:02d}-{table_digest(spec)}"
        jobs.append((sample_id, os.path.join(output_dir, "samples", sample_id + ".yaml"), spec))
    for sample_id, _, spec in jobs:  # a resumed CSV must describe the same tables
        if sample_id in done and done[sample_id].get("digest") not in (None, "", table_digest(spec)):
            raise SearchError(f"results.csv row {sample_id!r} is another table than this search draws; "
                              "use a new output folder.")
    return backbone_path, jobs


def _train_jobs(run, jobs, done, evaluate_job):
    """Trains and measures every job not in results.csv yet, appending a row per model; False when the
    time budget stopped it or a sample failed (a rerun retries)."""
    todo = [job for job in jobs if job[0] not in done]
    if done:
        run.say(f"Resuming {run.output_dir}: {len(done)} model(s) already in results.csv, {len(todo)} to go.")
    durations, failures = [], []
    for position, (sample_id, table_path, spec) in enumerate(todo):
        elapsed = run.seconds()[0]
        estimate = sum(durations) / len(durations) if durations else None
        budget = run.time_budget
        if budget is not None and (elapsed >= budget or (estimate and elapsed + estimate > budget)):
            run.say(f"Time budget of {_fmt_seconds(budget)} reached after {_fmt_seconds(elapsed)}: "
                    f"{len(todo) - position} model(s) left; rerun the same command to continue.")
            return False
        left = f", about {_fmt_seconds(estimate * (len(todo) - position))} left" if estimate else ""
        budget_left = f", budget left {_fmt_seconds(budget - elapsed)}" if budget is not None else ""
        number = jobs.index((sample_id, table_path, spec))
        what = "backbone" if sample_id == BACKBONE else f"sample {number} of {len(jobs) - 1}"
        run.say(f"[{what}] {spec.name}: {describe_table(spec)} (elapsed {_fmt_seconds(elapsed)}{left}{budget_left})")
        start = time.perf_counter()
        row = _train_job(run, sample_id, table_path, spec, evaluate_job)
        if row is None:
            failures.append(sample_id)
            continue
        done[sample_id] = row
        if BACKBONE in done:
            score_rows([done[BACKBONE], row], **run.scoring)
        append_result(run.csv_path, row)
        durations.append(time.perf_counter() - start)
        run.say(f"    accuracy {row['accuracy']:.4f}, step {row['step_time'] * 1000:.1f} ms ({row['step_clock']}), "
                f"{row['params']:,} params, reward {row.get('reward', float('nan')):.4f} "
                f"[{_fmt_seconds(durations[-1])}]")
    return not failures


def _train_job(run, sample_id, table_path, spec, evaluate_job):
    """One model's row, or None when a sample failed (logged in failures.log); the backbone must not fail."""
    if sample_id != BACKBONE:
        save_model_spec(spec, table_path)
    try:
        row = evaluate_job(table_path, sample_id)
    except Exception as error:  # noqa: BLE001 - one bad sample must not end a long search
        if sample_id == BACKBONE:
            raise  # the recipe itself does not run: nothing can be scored
        with open(os.path.join(run.output_dir, "failures.log"), "a", encoding="utf-8") as handle:
            handle.write(f"{sample_id} ({spec.name}): {type(error).__name__}: {error}\n")
        run.say(f"    failed: {type(error).__name__}: {error} (logged in failures.log; retried on a rerun)")
        return None
    return {**row, "sample": sample_id}


def _write_report(run, rows, recipe, files):
    """Scores and ranks every row; writes ranking.md, pareto.png, best_model.yaml and best_recipe.yaml
    (added to `files`). Returns (the ranked rows, the ranking table)."""
    cost = run.scoring["cost"]
    rows = score_rows(rows, **run.scoring)
    ranked = rank_rows(rows)
    ranking = format_ranking(ranked, cost)
    files["ranking"] = os.path.join(run.output_dir, "ranking.md")
    clock_name = ranked[0].get("step_clock") or "process"
    with open(files["ranking"], "w", encoding="utf-8") as handle:
        handle.write(f"# Search ranking (reward = A * S^{run.scoring['w']} * {cost[0].upper()}^{run.scoring['v']}, "
                     f"normalized to the backbone; step time = median {clock_name} time per step)\n\n{ranking}\n")
        preference = operator_preference(rows)
        if preference:
            handle.write("\n## Per stage: samples with Fused-MBConv against MBConv (means; step time relative to "
                         "the backbone)\n\n" + format_operator_preference(preference) + "\n")
    files["pareto"] = plot_pareto(rows, os.path.join(run.output_dir, "pareto.png"), clock=clock_name)
    best_spec = load_model_spec(ranked[0]["table_file"])
    files["best_model"] = save_model_spec(best_spec, os.path.join(run.output_dir, "best_model.yaml"))
    files["best_recipe"] = write_recipe(recipe, files["best_model"], os.path.join(run.output_dir, "best_recipe.yaml"))
    return ranked, ranking

def write_recipe(recipe, table_path, path):
    """`recipe` with model.name = the table (absolute path), resolved and written as one YAML file."""
    from efficientnetv2_keras.hparams import load_config, to_yaml

    config = load_config(recipe, [f"model.name={os.path.abspath(table_path)}"])
    to_yaml(config, path)
    return path


__all__ = [
    "DEFAULT_PROXY_OVERRIDES", "SearchResult", "evaluate_candidate", "proxy_config", "run_search", "write_recipe",
]
