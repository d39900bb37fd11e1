"""Trains (and/or evaluates) a recipe: `python tools/train.py --hparams=hparams/imagenet_s.yaml --model_dir=runs/s`.

Rerunning the same command resumes an interrupted run from its newest readable backup (model_dir/backup)
and says where ("resuming runs/s at epoch 120 of 350 (stage 2 of 4, image size 192)"). Rerunning a
finished run reports it and exits 0; --overwrite trains it again from scratch, a larger train.epochs
continues it. A NaN/inf loss stops the run with a message (exit status 3), keeping the last good
checkpoints; a recipe or data error exits with status 2 and a message, without a traceback.
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("hparams", "digits_demo", "Recipe: a YAML path or a name in hparams/ (e.g. imagenet_s).")
flags.DEFINE_multi_string("override", [], "Recipe overrides 'a.b=c' (repeatable, or comma-separated).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and plots go.", required=True)
flags.DEFINE_string("strategy", None, "Overrides runtime.strategy: auto, tpu, gpus, multi_worker, cpu.")
flags.DEFINE_enum("mode", "traineval", ["train", "eval", "traineval"], "What to run.")
flags.DEFINE_bool("traceback", False, "Show the Python traceback of an error instead of its message alone.")
flags.DEFINE_bool("overwrite", False, "Train a finished run in model_dir again from scratch (its checkpoints, "
                  "backup, log and results are replaced).")


def main(argv):
    del argv
    from efficientnetv2_keras.hparams import ConfigError, load_config
    from efficientnetv2_keras.training.resume import TrainingDiverged
    from efficientnetv2_keras.training.strategy import ClusterError
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    overrides = list(FLAGS.override) + ([f"runtime.strategy={FLAGS.strategy}"] if FLAGS.strategy else [])
    try:
        train_and_evaluate(load_config(FLAGS.hparams, overrides), FLAGS.model_dir, FLAGS.mode,
                           overwrite=FLAGS.overwrite)
    except TrainingDiverged as error:
        if FLAGS.traceback:
            raise
        print(f"train: {error}", file=sys.stderr)
        return 3
    except (ConfigError, ClusterError, ValueError, OSError) as error:  # bad recipe, data, files: messages written for people
        if FLAGS.traceback:
            raise
        kind = "" if isinstance(error, (ConfigError, ClusterError)) else f"{type(error).__name__}: "
        print(f"train: {kind}{error}\n(--traceback shows where it was raised)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)  # exits with main()'s return code
