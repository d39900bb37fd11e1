"""Trains (and/or evaluates) a recipe: `python tools/train.py --hparams=hparams/imagenet_s.yaml --model_dir=runs/s`.

Rerunning the same command resumes an interrupted run (BackupAndRestore state in model_dir/backup).
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("hparams", "digits_demo", "Recipe: a YAML path or a name in hparams/ (e.g. imagenet_s).")
flags.DEFINE_multi_string("override", [], "Recipe overrides 'a.b=c' (repeatable, or comma-separated).")
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and plots go.", required=True)
flags.DEFINE_string("strategy", None, "Overrides runtime.strategy: auto, tpu, gpus, multi_worker, cpu.")
flags.DEFINE_enum("mode", "traineval", ["train", "eval", "traineval"], "What to run.")


def main(argv):
    del argv
    from efficientnetv2_keras.hparams import load_config
    from efficientnetv2_keras.training.trainer import train_and_evaluate

    overrides = list(FLAGS.override) + ([f"runtime.strategy={FLAGS.strategy}"] if FLAGS.strategy else [])
    train_and_evaluate(load_config(FLAGS.hparams, overrides), FLAGS.model_dir, FLAGS.mode)


if __name__ == "__main__":
    app.run(main)
