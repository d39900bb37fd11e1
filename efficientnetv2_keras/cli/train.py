"""Trains (and/or evaluates) a recipe.

    effnetv2-train --hparams=imagenet_s --model_dir=runs/s
    effnetv2-train --hparams=my_recipe.yaml --model_dir=runs/mine --override=train.epochs=30
    python -m efficientnetv2_keras.cli.train ...        # the same; tools/train.py in a source checkout

--hparams is a recipe name shipped with the package (`effnetv2-train --list` shows them) or a YAML
path. Rerunning the same command resumes an interrupted run from its newest readable backup
(model_dir/backup) and says where ("resuming runs/s at epoch 120 of 350 (stage 2 of 4, image size 192)").
Rerunning a finished run reports it and exits 0; --overwrite trains it again from scratch. A run
continues only with the train.epochs and stages it was trained with (another layout stops with the
ways out: --overwrite, or a new --model_dir with model.init_checkpoint=<run>/best.keras). A NaN/inf loss stops the run with one line naming the epoch, step and
learning rate (exit status 3), keeping the last good checkpoints.
"""

import sys


from absl import flags

from efficientnetv2_keras import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("hparams", "digits_demo", "Recipe: a name shipped with the package (e.g. imagenet_s) or a YAML path.")
flags.DEFINE_multi_string("override", [], "Recipe overrides 'a.b=c' (repeatable, or comma-separated).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and plots go.")
flags.DEFINE_string("strategy", None, "Overrides runtime.strategy: auto, tpu, gpus, multi_worker, cpu.")
flags.DEFINE_enum("mode", "traineval", ["train", "eval", "traineval"], "What to run.")
flags.DEFINE_bool("list", False, "List the recipes shipped with the package and exit.")
flags.DEFINE_bool("overwrite", False, "Train a finished run in model_dir again from scratch (its checkpoints, "
                  "backup, log and results are replaced).")
DIVERGED_EXIT = 3


def main(argv):
    from absl import app

    from efficientnetv2_keras.hparams import RECIPES_DIR, list_recipes, load_config

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.list:
        print(f"Recipes in {RECIPES_DIR}:\n  " + "\n  ".join(list_recipes()))
        return 0
    if not FLAGS.model_dir:
        raise app.UsageError("Pass --model_dir=DIR (where checkpoints, logs and plots go).")
    from efficientnetv2_keras.training.divergence import TrainingDiverged
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    overrides = list(FLAGS.override) + ([f"runtime.strategy={FLAGS.strategy}"] if FLAGS.strategy else [])
    try:
        train_and_evaluate(load_config(FLAGS.hparams, overrides), FLAGS.model_dir, FLAGS.mode,
                           overwrite=FLAGS.overwrite)
    except TrainingDiverged as error:
        if FLAGS.verbose:
            raise
        print(f"{cli.program()}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return DIVERGED_EXIT
    return 0


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
