"""Evaluates a checkpoint on a recipe's test split (data.eval_split) and says which weights it holds.

    python tools/evaluate.py --model_dir=runs/demo                  # its best.keras (else last.keras)
    python tools/evaluate.py --hparams=digits_demo --checkpoint=runs/demo/last.keras
"""

import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training directory (its config.yaml and best/last.keras).")
flags.DEFINE_string("hparams", None, "Recipe for the data (default: model_dir/config.yaml).")
flags.DEFINE_multi_string("override", [], "Recipe overrides 'a.b=c'.")
flags.DEFINE_string("checkpoint", None, "A .keras file (default: model_dir/best.keras, else last.keras).")


def main(argv):
    del argv
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import (
        evaluate_model,
        find_checkpoint,
        format_results,
        load_for_evaluation,
    )

    if not FLAGS.model_dir and not (FLAGS.hparams and FLAGS.checkpoint):
        raise app.UsageError("Pass --model_dir, or --hparams and --checkpoint.")
    recipe = FLAGS.hparams or os.path.join(FLAGS.model_dir, "config.yaml")
    config = load_config(recipe, FLAGS.override)
    checkpoint = FLAGS.checkpoint or find_checkpoint(FLAGS.model_dir)
    model = load_for_evaluation(config, checkpoint)
    # The path: the results then say which weights the file holds (describe_checkpoint).
    evaluation = evaluate_model(model, config, checkpoint_name=checkpoint)
    print(format_results({"model": config.model.name, "precision": "float32", "replicas": 1, "evaluation": evaluation}))


if __name__ == "__main__":
    app.run(main)
