"""The search's results: results.csv (one row per finished model), the reward and ranking, the plot.

Rows are scored against the backbone's row (`BACKBONE`): the reward A * S**w * P**v of paper §3.3 with
S and P normalized to the backbone's step time and size.
"""

import csv
import os

from efficientnetv2_keras.models.family import FUSED_MBCONV, load_model_spec
from efficientnetv2_keras.nas.reward import COSTS, PAPER_V, PAPER_W, reward

BACKBONE = "backbone"
CSV_FIELDS = ("sample", "name", "table", "table_file", "accuracy", "step_time", "step_clock", "params", "flops",
              "reward", "train_wall_s", "train_cpu_s", "measure_cpu_s", "digest")


class SearchError(ValueError):
    """A search cannot start or resume as asked (e.g. other settings in the same output folder)."""


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


__all__ = [
    "BACKBONE", "CSV_FIELDS", "SearchError", "append_result", "format_operator_preference", "format_ranking",
    "operator_preference", "pareto_front", "plot_pareto", "rank_rows", "read_results", "score_rows",
]
