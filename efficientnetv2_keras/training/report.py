"""What a run says and reports: its messages (`say`), the training-curves plot, the results tables,
results.json."""

import json

from efficientnetv2_keras.files import atomic_write_text
from efficientnetv2_keras.messages import say  # noqa: F401  (the trainer's messages, importable from here)
from efficientnetv2_keras.training.run_folder import RunDir


def plot_training_curves(epoch_logs, path, title=""):
    """Loss and accuracy per epoch (validation where it ran), a dotted line where each stage starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for name, style in ((metric, "-"), ("val_" + metric, "o--")):
            points = [(row["epoch"] + 1, row[name]) for row in epoch_logs if name in row]
            if points:
                axis.plot(*zip(*points), style, label=name if name.startswith("val_") else "train_" + name)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        for previous, row in zip(epoch_logs, epoch_logs[1:]):
            if row.get("stage") != previous.get("stage"):
                axis.axvline(row["epoch"] + 0.5, color="gray", linestyle=":", linewidth=1)
                label = f"stage {int(row['stage'])}" + (f"\n{int(row['image_size'])} px" if "image_size" in row else "")
                axis.text(row["epoch"] + 0.6, axis.get_ylim()[1], label, fontsize=7, va="top", color="gray")
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def minival_text(info, short=False, test_split=True):
    """How the minival was made, for messages (short: for a checkpoint's record; test_split: whether the
    run has a test split)."""
    name = f"'{info['split']}'"
    if "carved_from" not in info:
        return name if short else f"minival: split {name} ({info['examples']} examples)"
    if short:
        return f"minival ({info['examples']} examples carved from '{info['carved_from']}')"
    return (f"minival: {info['examples']} examples carved from '{info['carved_from']}' (data.minival={info['size']}); "
            f"training on the other {info['train_examples']}. Validation (val_*) and best.keras use the minival; "
            + ("the test split is evaluated once, after training." if test_split else "there is no test split."))


def no_test_split_text(reason):
    """What a run without a test split says (reason: `recipe.test_split`'s)."""
    return (f"No test split ({reason}): the run trains and validates on the minival only (val_*, best.keras), and "
            "measures no test accuracy; name a test split with data.eval_split for one.")


def _format_metric(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_results(results):
    """The results as text tables."""
    lines = [f"model {results['model']} | backend {results.get('backend', 'tensorflow')} | precision {results['precision']} | "
             f"replicas {results['replicas']}"]
    if results.get("stages"):
        lines += ["", "| stage | image size | epochs | train time (s) | images/s |", "|---:|---:|---:|---:|---:|"]
        for row in results["stages"]:
            lines.append(f"| {row['stage']} | {row['image_size'] or '-'} | {row['epochs']} | {row['seconds']} | {row['images_per_second']} |")
        lines.append(
            f"\nfit: {results['train_seconds']} s over {results['epochs']} epochs (validation and checkpoints "
            f"included); whole run: {results.get('total_seconds', '-')} s"
        )
    if results.get("costs"):
        from efficientnetv2_keras.training.costs import format_costs  # (imports keras)

        lines += ["", format_costs(results["costs"])]
    evaluations = results.get("evaluations") or ([results["evaluation"]] if results.get("evaluation") else [])
    if results.get("minival"):
        lines.append(minival_text(results["minival"], test_split=results.get("mode") != "traineval" or bool(evaluations)))
    # e.g. that there is no test split
    lines += results.get("notes", [])
    if evaluations:
        first = evaluations[0]
        skip = {"role", "checkpoint", "eval_split", "eval_size"}
        names = [k for k in first if k not in skip and isinstance(first[k], float)]
        header = {"loss": "loss (cross-entropy)", "l2_loss": "L2 term (not in loss)"}
        lines += ["", f"test split '{first['eval_split']}' at {first['eval_size']} px:",
                  "| model | checkpoint | " + " | ".join(header.get(n, n) for n in names) + " |",
                  "|---|---|" + "---:|" * len(names)]
        for evaluation in evaluations:
            values = " | ".join(_format_metric(evaluation.get(n, "-")) for n in names)
            lines.append(f"| {evaluation.get('role') or '-'} | {evaluation['checkpoint']} | {values} |")
    return "\n".join(lines)


def write_results(results, model_dir, verbose=1):
    """results.json in model_dir, and the tables printed."""
    atomic_write_text(RunDir(model_dir).results, json.dumps(results, indent=2) + "\n")
    if verbose:
        print("\n" + format_results(results))
