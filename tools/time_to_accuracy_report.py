"""The table and the plot of tools/gpu_time_to_accuracy.py, from the <run>.json files of its --out folder.

    python tools/time_to_accuracy_report.py runs/gpu_tta   # table.md and time_to_accuracy.png again

The target is the fixed run's final minival accuracy; each run's time to it is the training wall time at
the end of its first epoch at or above it.
"""

import json
import os
import sys

RUN_NAMES = {"fixed": "fixed", "progressive": "progressive + batch scaling"}


def time_to(records, target):
    """Training seconds at the first epoch whose minival accuracy reaches `target`, or None."""
    return next((r["train_s"] for r in records if r["minival_accuracy"] >= target - 1e-9), None)


def table(results):
    """The markdown table of `results` ({run: record}), timed to the fixed run's final minival accuracy."""
    fixed = results.get("fixed", {}).get("records")
    target = fixed[-1]["minival_accuracy"] if fixed else None
    fixed_time = time_to(fixed, target) if fixed else None
    lines = [f"| run | image sizes | epochs | wall s to {'-' if target is None else f'{target:.4f}'} (fixed's final "
             "minival accuracy) | total wall s | test accuracy |", "|---|---|---:|---:|---:|---:|"]
    for run, result in results.items():
        reached = time_to(result["records"], target) if fixed else None
        reached_text = "not reached" if reached is None else f"{reached:.1f}"
        if reached and run != "fixed":
            reached_text += f" ({fixed_time / reached:.2f}x faster)"
        sizes = " -> ".join(str(size) for size in result["image_sizes"])
        lines.append(f"| {RUN_NAMES[run]} | {sizes} | {result['passes']:.1f} | {reached_text} | "
                     f"{result['train_s']:.1f} | {result['test_accuracy']:.4f} |")
    lines.append("")
    for run, r in results.items():
        lines.append(f"- {run}: {r['model']} on {r['device']} ({r['backend']}, {r['precision']}), "
                     f"{r['fit_epochs']} fit epochs, batches {r['batches']}, {r['train_examples']} training images; "
                     f"warm-up (compilation) {r['warmup_s']:.1f} s and minival evaluations at {r['eval_size']} px "
                     f"{r['eval_s']:.1f} s, neither in the wall s")
    return "\n".join(lines) + "\n"


def plot(results, path):
    """Minival accuracy against training wall seconds, one line per run (skipped without matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        return print("matplotlib is not installed: no plot (the table is written).")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for run, result in results.items():
        records = result["records"]
        axis.plot([r["train_s"] for r in records], [r["minival_accuracy"] for r in records], marker="o",
                  label=RUN_NAMES[run])
    if results.get("fixed", {}).get("records"):
        axis.axhline(results["fixed"]["records"][-1]["minival_accuracy"], color="gray", linestyle="--", linewidth=1,
                     label="fixed's final minival accuracy")
    first = next(iter(results.values()))
    axis.set(xlabel="training wall time (s)", ylabel="minival accuracy",
             title=f"Fashion-MNIST, {first['model']} on {first['device']}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(out):
    """table.md and time_to_accuracy.png of every <run>.json in `out`."""
    results = {}
    for run in RUN_NAMES:
        if os.path.exists(os.path.join(out, f"{run}.json")):
            with open(os.path.join(out, f"{run}.json")) as handle:
                results[run] = json.load(handle)
    if not results:
        raise SystemExit(f"No fixed.json or progressive.json in {out}: run tools/gpu_time_to_accuracy.py "
                         f"--out={out} first.")
    text = table(results)
    with open(os.path.join(out, "table.md"), "w") as handle:
        handle.write(text)
    print("\n" + text)
    plot(results, os.path.join(out, "time_to_accuracy.png"))


if __name__ == "__main__":
    report(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu_time_to_accuracy")
