"""Evaluates a checkpoint on a recipe's test split (data.eval_split) and says which weights it holds.

    python tools/evaluate.py --model_dir=runs/demo                  # its best.keras (else last.keras)
    python tools/evaluate.py --checkpoint=runs/demo/last.keras      # the recipe: config.yaml next to it
    python tools/evaluate.py --hparams=digits_demo --checkpoint=elsewhere/model.keras
"""

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training directory (its config.yaml and best/last.keras).")
flags.DEFINE_string("hparams", None, "Recipe for the data (default: the run's config.yaml).")
flags.DEFINE_multi_string("override", [], "Recipe overrides 'a.b=c'.")
flags.DEFINE_string("checkpoint", None, "A .keras file (default: model_dir/best.keras, else last.keras).")


def main(argv):
    del argv
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.runs import CONFIG_FILE, run_file
    from efficientnetv2_keras.training.evaluation import evaluate_model, find_checkpoint, load_for_evaluation
    from efficientnetv2_keras.training.report import format_results

    if not FLAGS.model_dir and not FLAGS.checkpoint:
        raise app.UsageError("Pass --model_dir, or --checkpoint (and --hparams when it is not in a run directory).")
    checkpoint = FLAGS.checkpoint or find_checkpoint(FLAGS.model_dir)
    recipe = FLAGS.hparams or run_file(FLAGS.model_dir or checkpoint, CONFIG_FILE)
    if recipe is None:
        raise app.UsageError(
            f"No {CONFIG_FILE} next to {checkpoint}: pass --hparams=RECIPE (e.g. the one it was trained with)."
        )
    try:
        config = load_config(recipe, FLAGS.override)
        model = load_for_evaluation(config, checkpoint)
    except (OSError, ValueError) as error:  # missing/corrupt checkpoint, bad recipe: for people
        print(f"evaluate: {error}", file=sys.stderr)
        return 2
    # The path: the results then say which weights the file holds (describe_checkpoint).
    evaluation = evaluate_model(model, config, checkpoint_name=checkpoint)
    print(format_results({"model": config.model.name, "precision": "float32", "replicas": 1, "evaluation": evaluation}))
    return 0


if __name__ == "__main__":
    app.run(main)  # exits with main()'s return code
