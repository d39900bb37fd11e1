"""Trains and/or evaluates a recipe (source checkout): the same as `effnetv2-train`, see efficientnetv2_keras/cli/train.py."""

from efficientnetv2_keras.cli.train import run

if __name__ == "__main__":
    run()
