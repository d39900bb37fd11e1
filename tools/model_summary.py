"""The family's parameters and FLOPs (source checkout): the same as `effnetv2-summary`, see efficientnetv2_keras/cli/summary.py."""

from efficientnetv2_keras.cli.summary import run

if __name__ == "__main__":
    run()
