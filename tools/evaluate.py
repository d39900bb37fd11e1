"""Evaluates a checkpoint on the test split (source checkout): the same as `effnetv2-evaluate`, see efficientnetv2_keras/cli/evaluate.py."""

from efficientnetv2_keras.cli.evaluate import run

if __name__ == "__main__":
    run()
